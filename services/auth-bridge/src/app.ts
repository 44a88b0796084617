import { DEFAULT_COMMUNITY, createServiceApp, fieldKey, schemaFor } from '@hubside/service-kit';
import type { BuildOptions, Community, CommunityReference, ServiceDefinition } from '@hubside/service-kit';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import fp from 'fastify-plugin';
import { bridge } from './bridge.js';
import { configSchema } from './config.js';
import type { AuthBridgeConfig } from './config.js';
import { migrations } from './migrations/index.js';
import { adminRoutesPlugin } from './routes/admin.js';
import { loginRoutesPlugin } from './routes/login.js';
import { oidcRoutesPlugin } from './routes/oidc.js';

export { configSchema };
export type { AuthBridgeConfig };

export interface AuthBridgeOptions {
  /** The service prefix (`/services/auth-bridge/`); not `prefix`, which Fastify would apply twice. */
  basePath: string;
  config: AuthBridgeConfig;
  /** Where browsers reach the service (without the prefix). Default: config.publicUrl. */
  publicUrl: string;
  env?: NodeJS.ProcessEnv;
  /** The community: its admins manage access codes besides the hub's admins. */
  community?: Community;
}

/** The auth-bridge routes, as a Fastify plugin without side effects. Needs `app.db`. */
const authBridgeRoutes: FastifyPluginAsync<AuthBridgeOptions> = async (app, opts) => {
  await app.register(bridge, { config: opts.config, prefix: opts.basePath, publicUrl: opts.publicUrl, ...(opts.env ? { env: opts.env } : {}) });
  await app.register(oidcRoutesPlugin);
  await app.register(loginRoutesPlugin);
  await app.register(adminRoutesPlugin, { community: opts.community ?? DEFAULT_COMMUNITY });
};
// Not encapsulated, so tests and the admin API reach `app.bridge`.
const authBridge = fp(authBridgeRoutes, { name: 'auth-bridge', dependencies: ['hubside-database'] });
export default authBridge;

export async function buildApp(opts: BuildOptions<AuthBridgeConfig> & { env?: NodeJS.ProcessEnv }): Promise<FastifyInstance> {
  const app = await createServiceApp({ ...opts, database: { schema: schemaFor('auth-bridge'), migrations } });
  const { settings } = opts;
  const host = settings.host.includes(':') ? `[${settings.host}]` : settings.host;
  const publicUrl = opts.config.publicUrl ?? `http://${host}:${settings.port}`;
  await app.register(authBridge, {
    basePath: settings.prefix,
    config: opts.config,
    publicUrl,
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.community ? { community: opts.community } : {}),
  });
  return app;
}

/**
 * Every hub group the section names, for check-config: each hub's allowedGroups, adminGroups and
 * the groups its groupMap maps to (`auth-bridge.hubs.<hub>.adminGroups[0]`,
 * `auth-bridge.hubs.<hub>.groupMap["uni-a:staff"]`).
 */
export function references(config: AuthBridgeConfig): CommunityReference[] {
  const out: CommunityReference[] = [];
  for (const [hubName, hub] of Object.entries(config.hubs)) {
    const at = `auth-bridge.hubs${fieldKey(hubName)}`;
    hub.allowedGroups.forEach((name, i) => out.push({ kind: 'group', name, field: `${at}.allowedGroups[${i}]` }));
    hub.adminGroups.forEach((name, i) => out.push({ kind: 'group', name, field: `${at}.adminGroups[${i}]` }));
    for (const [from, name] of Object.entries(hub.groupMap)) out.push({ kind: 'group', name, field: `${at}.groupMap${fieldKey(from)}` });
  }
  return out;
}

export const service: ServiceDefinition<typeof configSchema> = {
  name: 'auth-bridge',
  configSchema,
  migrations,
  build: buildApp,
  references,
};
