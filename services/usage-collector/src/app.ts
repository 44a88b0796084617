import { createServiceApp, schemaFor } from '@hubside/service-kit';
import type { BuildOptions, ServiceDefinition } from '@hubside/service-kit';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { migrations } from './migrations/index.js';

/** This service's section of the community file. Later issues grow it; every field has a default. */
export const configSchema = z.object({}).strict();
export type UsageCollectorConfig = z.output<typeof configSchema>;

export interface UsageCollectorOptions {
  prefix: string;
  config: UsageCollectorConfig;
}

/** The usage-collector routes, as a Fastify plugin without side effects. */
const usageCollector: FastifyPluginAsync<UsageCollectorOptions> = async () => {
  // Routes arrive with the usage-collector issue; whoami, health and metrics come from service-kit.
};
export default usageCollector;

export async function buildApp(opts: BuildOptions<UsageCollectorConfig>): Promise<FastifyInstance> {
  const app = await createServiceApp({ ...opts, database: { schema: schemaFor('usage-collector'), migrations } });
  await app.register(usageCollector, { prefix: opts.settings.prefix, config: opts.config });
  return app;
}

export const service: ServiceDefinition<typeof configSchema> = {
  name: 'usage-collector',
  configSchema,
  migrations,
  build: buildApp,
};
