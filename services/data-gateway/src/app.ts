import { createServiceApp, schemaFor } from '@hubside/service-kit';
import type { BuildOptions, ServiceDefinition } from '@hubside/service-kit';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { migrations } from './migrations/index.js';

/** This service's section of the community file. Later issues grow it; every field has a default. */
export const configSchema = z.object({}).strict();
export type DataGatewayConfig = z.output<typeof configSchema>;

export interface DataGatewayOptions {
  prefix: string;
  config: DataGatewayConfig;
}

/** The data-gateway routes, as a Fastify plugin without side effects. */
const dataGateway: FastifyPluginAsync<DataGatewayOptions> = async () => {
  // Routes arrive with the data-gateway issue; whoami, health and metrics come from service-kit.
};
export default dataGateway;

export async function buildApp(opts: BuildOptions<DataGatewayConfig>): Promise<FastifyInstance> {
  const app = await createServiceApp({ ...opts, database: { schema: schemaFor('data-gateway'), migrations } });
  await app.register(dataGateway, { prefix: opts.settings.prefix, config: opts.config });
  return app;
}

export const service: ServiceDefinition<typeof configSchema> = {
  name: 'data-gateway',
  configSchema,
  migrations,
  build: buildApp,
};
