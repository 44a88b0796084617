import { createServiceApp, schemaFor } from '@hubside/service-kit';
import type { BuildOptions, ServiceDefinition } from '@hubside/service-kit';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import fp from 'fastify-plugin';
import type { Kysely } from 'kysely';
import { configSchema, pollIntervalMs, prometheusUrl, resolveConfig } from './config.js';
import { dashboards } from './dashboard/index.js';
import type { UsageCollectorConfig, UsageCollectorSection } from './config.js';
import type { Community } from '@hubside/service-kit';
import { references } from './references.js';
import { migrations } from './migrations/index.js';
import { usagePoller } from './poller.js';
import { usageRoutes } from './routes.js';
import { createSettingsStore } from './settings.js';
import type { SettingsDB, SettingsStore } from './settings.js';

declare module 'fastify' {
  interface FastifyInstance {
    usageSettings: SettingsStore;
  }
}

export { configSchema } from './config.js';
export type { UsageCollectorConfig, UsageCollectorSection } from './config.js';
export { references } from './references.js';

export interface UsageCollectorOptions {
  /** Route prefix, e.g. /services/usage-collector/ (not `prefix`: Fastify would apply that a second time). */
  routePrefix: string;
  /** The section, or the section already resolved with the community (see `resolveConfig`). */
  config: UsageCollectorSection | UsageCollectorConfig;
  /** The community model (currency, admins, courses); default: none (the section's currency). */
  community?: Community;
  /** Poll interval; default from HUBSIDE_POLL_INTERVAL or `pollSeconds`. */
  pollIntervalMs?: number;
  /** Start polling on ready (default true); tests call `app.usagePoller.pollOnce()` instead. */
  autoPoll?: boolean;
  /** Default: PROMETHEUS_URL. */
  prometheusUrl?: string;
}

/** The usage-collector: poller, pricing, budgets and the usage API, as one Fastify plugin. */
const usageCollectorPlugin: FastifyPluginAsync<UsageCollectorOptions> = async (app, raw) => {
  const opts = { ...raw, config: resolveConfig(raw.config, raw.community) };
  // Rate cards and budgets: the community file's at first, then as admins edit them (settings.ts).
  const settings = createSettingsStore(app.db as Kysely<SettingsDB>, opts.config, {
    onInvalid: (skipped, inForce) =>
      app.log.error({ skipped, inForce }, 'stored rate cards and budgets are not valid; the newest valid version (or the community file) is in force until an admin saves a valid one'),
  });
  app.decorate('usageSettings', settings);
  app.addHook('onReady', () => settings.init());
  await app.register(usagePoller, {
    config: opts.config,
    settings,
    intervalMs: opts.pollIntervalMs ?? pollIntervalMs(opts.config),
    autoStart: opts.autoPoll ?? true,
    prometheusUrl: opts.prometheusUrl ?? prometheusUrl(),
  });
  await app.register(usageRoutes, { routePrefix: opts.routePrefix, config: opts.config, settings });
  await app.register(dashboards, { routePrefix: opts.routePrefix, config: opts.config, settings });
};
// Not encapsulated, so `app.usagePoller` is reachable from the app that registers it (tests, the CLI).
const usageCollector = fp(usageCollectorPlugin, { name: 'hubside-usage-collector', fastify: '5.x', dependencies: ['hubside-database'] });
export default usageCollector;

export async function buildApp(
  opts: BuildOptions<UsageCollectorSection> & { pollIntervalMs?: number; autoPoll?: boolean },
): Promise<FastifyInstance> {
  // Read the interval and the currency before any I/O, so a bad one fails fast as a config error.
  const config = resolveConfig(opts.config, opts.community);
  const intervalMs = opts.pollIntervalMs ?? pollIntervalMs(config);
  // The student dashboard is the service's home page, in place of service-kit's landing page.
  const app = await createServiceApp({ ...opts, landingPage: false, database: { schema: schemaFor('usage-collector'), migrations } });
  await app.register(usageCollector, {
    routePrefix: opts.settings.prefix,
    config,
    pollIntervalMs: intervalMs,
    ...(opts.autoPoll !== undefined ? { autoPoll: opts.autoPoll } : {}),
  });
  return app;
}

export const service: ServiceDefinition<typeof configSchema> = {
  name: 'usage-collector',
  configSchema,
  migrations,
  build: buildApp,
  references,
};
