import { createServiceApp, schemaFor } from '@hubside/service-kit';
import type { BuildOptions, ServiceDefinition } from '@hubside/service-kit';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { migrations } from './migrations/index.js';

/** This service's section of the community file. Later issues grow it; every field has a default. */
export const configSchema = z.object({}).strict();
export type AuthBridgeConfig = z.output<typeof configSchema>;

export interface AuthBridgeOptions {
  prefix: string;
  config: AuthBridgeConfig;
}

/** The auth-bridge routes, as a Fastify plugin without side effects. */
const authBridge: FastifyPluginAsync<AuthBridgeOptions> = async () => {
  // Routes arrive with the auth-bridge issue; whoami, health and metrics come from service-kit.
};
export default authBridge;

export async function buildApp(opts: BuildOptions<AuthBridgeConfig>): Promise<FastifyInstance> {
  const app = await createServiceApp({ ...opts, database: { schema: schemaFor('auth-bridge'), migrations } });
  await app.register(authBridge, { prefix: opts.settings.prefix, config: opts.config });
  return app;
}

export const service: ServiceDefinition<typeof configSchema> = {
  name: 'auth-bridge',
  configSchema,
  migrations,
  build: buildApp,
};
