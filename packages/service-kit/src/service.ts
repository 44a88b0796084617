import closeWithGrace from 'close-with-grace';
import type { FastifyInstance } from 'fastify';
import type { z } from 'zod';
import type { CreateServiceAppOptions } from './app.js';
import type { Community, CommunityProvides, CommunityReference } from './community.js';
import { ConfigError, loadCommunity, loadSection, resolveSettings } from './config.js';
import type { ServiceName, ServiceSettings, SettingsDefaults } from './config.js';
import type { MigrationSet } from './database/index.js';

export interface BuildOptions<C> {
  settings: ServiceSettings;
  config: C;
  /** The shared `community:` section (currency, groups, admins, courses). */
  community?: Community;
  logger?: CreateServiceAppOptions['logger'];
  defaultMetrics?: boolean;
}

/** What each service package exports, so the CLI can start, check and migrate it uniformly. */
export interface ServiceDefinition<S extends z.ZodType = z.ZodType> {
  name: ServiceName;
  /** Its section of the community file; every field has a default. */
  configSchema: S;
  migrations?: MigrationSet;
  build(opts: BuildOptions<z.output<S>>): Promise<FastifyInstance>;
  /** Every name its section refers to elsewhere (groups, profiles, datasets, the currency), for check-config. */
  references?(config: z.output<S>): CommunityReference[];
  /** What its section defines that other sections may name. */
  provides?(config: z.output<S>): CommunityProvides;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  defaults?: SettingsDefaults;
  /** Installs SIGINT/SIGTERM handling; off when several services share one process. */
  handleSignals?: boolean;
  /** Runs when the service closes (e.g. flush traces). */
  onClose?: () => Promise<void>;
}

export interface RunningService {
  app: FastifyInstance;
  url: string;
  close(): Promise<void>;
}

/** Resolve settings and the service's config section; ConfigError names each bad field. */
export function loadService<S extends z.ZodType>(def: ServiceDefinition<S>, env: NodeJS.ProcessEnv, defaults?: SettingsDefaults) {
  const settings = resolveSettings(def.name, env, defaults);
  const config = loadSection(settings.configFile, def.name, def.configSchema);
  const community = loadCommunity(settings.configFile);
  return { settings, config, community };
}

/**
 * Build, listen, and shut down gracefully on signals. Only entry points call this; they start
 * tracing (`startTracing`) before importing the service, so the HTTP stack is instrumented.
 */
export async function runService<S extends z.ZodType>(def: ServiceDefinition<S>, opts: RunOptions = {}): Promise<RunningService> {
  const env = opts.env ?? process.env;
  const { settings, config, community } = loadService(def, env, opts.defaults);
  const app = await def.build({ settings, config, community });
  // Hooks must be in place before listen(); Fastify refuses them afterwards.
  if (opts.onClose) app.addHook('onClose', opts.onClose);
  if (opts.handleSignals ?? true) {
    const grace = closeWithGrace({ delay: 10_000 }, async ({ err, signal }) => {
      if (err) app.log.error({ err }, 'shutting down after an error');
      else app.log.info({ signal }, 'shutting down');
      await app.close();
    });
    app.addHook('onClose', async () => {
      grace.uninstall();
    });
  }
  await app.listen({ host: settings.host, port: settings.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : settings.port;
  const host = settings.host.includes(':') ? `[${settings.host}]` : settings.host;
  const url = `http://${host}:${port}${settings.prefix}`;
  return { app, url, close: () => app.close() };
}

/** Print a config error the way operators need it, and exit non-zero. */
export function exitOnConfigError(err: unknown): never {
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  throw err;
}
