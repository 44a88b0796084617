/**
 * Usage dashboards for students, instructors and admins: pages, their JSON API and share links.
 * Registered (encapsulated) by the usage-collector app after its usage routes.
 */
import { hkdfSync, randomBytes } from 'node:crypto';
import fastifyJwt from '@fastify/jwt';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import type { UsageCollectorConfig } from '../config.js';
import { sessionsRepository } from '../sessions-repository.js';
import type { UsageDB } from '../usage.table.js';
import { dashboardApi } from './api.js';
import { dashboardPages } from './pages.js';
import { sharesService } from './shares.js';
import type { SharesDB } from './shares.js';
import { createViewCache } from './cache.js';
import { createViews } from './views.js';
import type { Views } from './views.js';
import type { SettingsStore } from '../settings.js';

export interface DashboardsOptions {
  routePrefix: string;
  config: UsageCollectorConfig;
  settings: SettingsStore;
}

/** A share-link signing key derived from a service secret; a separate key, so a link can never pass as a cookie. */
export function shareKeyFrom(secret: string): string {
  return Buffer.from(hkdfSync('sha256', secret, 'hubside-dashboard-share-v1', 'usage-collector', 32)).toString('base64url');
}

/** Share-link keys: from HUBSIDE_COOKIE_SECRET's keys (newest first), else from the hub token so replicas agree. */
function shareKeys(fastify: FastifyInstance): string[] {
  const settings = fastify.kit.settings;
  if (settings.cookieSecrets && settings.cookieSecrets.length > 0) return settings.cookieSecrets.map(shareKeyFrom);
  if (settings.hub) return [shareKeyFrom(settings.hub.token)];
  // No hub, no configured secret: links work until this process stops.
  fastify.log.warn('no HUBSIDE_COOKIE_SECRET and no hub token: dashboard share links will not survive a restart');
  return [randomBytes(32).toString('base64url')];
}

export async function dashboards(fastify: FastifyInstance, opts: DashboardsOptions): Promise<void> {
  const { routePrefix: prefix, config } = opts;
  const db = fastify.db as Kysely<UsageDB & SharesDB>;
  const repo = sessionsRepository(db as unknown as Kysely<UsageDB>);
  const keys = shareKeys(fastify);
  // A namespace keeps this JWT instance (and its decorators) apart from anything else the app signs.
  await fastify.register(fastifyJwt, { secret: keys[0]!, namespace: 'dashboardShare', sign: { algorithm: 'HS256' }, verify: { algorithms: ['HS256'] } });
  const jwt = (fastify.jwt as unknown as Record<string, import('@fastify/jwt').JWT>).dashboardShare!;
  const listGroups = async () => {
    const r = await sql<{ g: string }>`select distinct jsonb_array_elements_text(groups) as g from sessions`.execute(db);
    return r.rows.map((x) => x.g);
  };
  // `routePrefix`, not `prefix`: Fastify would apply a `prefix` option to every route a second time.
  // Views (and their cache) belong to one settings version: a saved rate card or budget makes new ones.
  let built: { id: number; views: Views; config: UsageCollectorConfig } | undefined;
  const live = async () => {
    const current = await opts.settings.current();
    if (built?.id !== current.version.id) built = { id: current.version.id, views: createViews(db as unknown as Kysely<UsageDB>, repo, current.config, createViewCache(db)), config: current.config };
    return built;
  };
  await fastify.register(dashboardApi, {
    routePrefix: prefix,
    config,
    repo,
    live,
    settings: opts.settings,
    shares: sharesService(db as unknown as Kysely<SharesDB>, jwt, keys),
    listGroups,
  });
  await fastify.register(dashboardPages, { routePrefix: prefix, config });
}
