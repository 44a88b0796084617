import { createServiceApp, schemaFor } from '@hubside/service-kit';
import type { BuildOptions, ServiceDefinition } from '@hubside/service-kit';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { migrations } from './migrations/index.js';

/** This service's section of the community file. Later issues grow it; every field has a default. */
export const configSchema = z.object({}).strict();
export type ProfileApiConfig = z.output<typeof configSchema>;

export interface ProfileApiOptions {
  prefix: string;
  config: ProfileApiConfig;
}

/** The profile-api routes, as a Fastify plugin without side effects. */
const profileApi: FastifyPluginAsync<ProfileApiOptions> = async () => {
  // Routes arrive with the profile-api issue; whoami, health and metrics come from service-kit.
};
export default profileApi;

export async function buildApp(opts: BuildOptions<ProfileApiConfig>): Promise<FastifyInstance> {
  const app = await createServiceApp({ ...opts, database: { schema: schemaFor('profile-api'), migrations } });
  await app.register(profileApi, { prefix: opts.settings.prefix, config: opts.config });
  return app;
}

export const service: ServiceDefinition<typeof configSchema> = {
  name: 'profile-api',
  configSchema,
  migrations,
  build: buildApp,
};
