import type { HubUser } from '@hubside/hub-client';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Kysely } from 'kysely';
import { Counter, Gauge, Histogram } from 'prom-client';
import { hubName } from '@hubside/service-kit';
import { z } from 'zod';
import { entryOf, resourcesSchema } from './config.js';
import type { UsageCollectorConfig } from './config.js';
import { evaluateBudgets, recordWarnings } from './budgets.js';
import { queryMeasured, storeMeasured } from './measured.js';
import { rollupSessions } from './retention.js';
import { sessionsRepository } from './sessions-repository.js';
import type { SettingsStore } from './settings.js';
import type { ObservedServer, ReconcileResult } from './sessions-repository.js';
import type { UsageDB } from './usage.table.js';

export interface UsagePoller {
  /** Runs one complete poll now (after any poll in flight) and resolves with what it did. */
  pollOnce(): Promise<ReconcileResult>;
  intervalMs: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    usagePoller: UsagePoller;
  }
}

export interface PollerOptions {
  config: UsageCollectorConfig;
  /** Rate cards and budgets in force (editable on the dashboard); the rest comes from `config`. */
  settings: SettingsStore;
  intervalMs: number;
  /** Start the timer on ready; tests turn it off and call pollOnce(). */
  autoStart: boolean;
  /** Query measured usage from this Prometheus after each poll. */
  prometheusUrl?: string | undefined;
}

/**
 * What the hub's pre-spawn hook recorded in `user_options.hubside` (docs/community-model.md):
 * profile-api's resolve answer. Anything else there (a request that carried its own `hubside`
 * before the hook overwrote it, an older hook, a hand-made server) is not trusted: the session
 * falls back to the section's profile map, and the poll goes on.
 */
const hubsideSchema = z.object({
  profile: hubName.optional(),
  price_per_hour: z.string().regex(/^\d{1,12}(\.\d{1,10})?$/),
  currency: z.string().regex(/^[A-Z]{3}$/),
  // Not strict: a newer profile-api may add a resource; the ones we price must be valid.
  resources: z.object(resourcesSchema.shape),
  profile_version: z.number().int().nonnegative().optional(),
});
export type RecordedSpawn = z.output<typeof hubsideSchema>;

/** The recorded spawn of a server, or why there is none to use. */
export function recordedSpawn(options: Record<string, unknown>, currency: string): { ok: true; spawn: RecordedSpawn } | { ok: false; reason: string | null } {
  if (!Object.hasOwn(options, 'hubside')) return { ok: false, reason: null };
  const parsed = hubsideSchema.safeParse(options.hubside);
  if (!parsed.success) return { ok: false, reason: `user_options.hubside is not valid: ${parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}` };
  if (parsed.data.currency !== currency) return { ok: false, reason: `user_options.hubside.currency ${parsed.data.currency} is not the community's ${currency}` };
  return { ok: true, spawn: parsed.data };
}

/** The most of a server's `user_options` kept on its session; a bigger one keeps only what pricing reads. */
export const MAX_USER_OPTIONS_CHARS = 16_384;
// eslint-disable-next-line no-control-regex
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * A copy of what a person put in `user_options` that PostgreSQL can store: a NUL or a lone
 * surrogate in any string or key (JSON allows both, jsonb and text refuse them) becomes U+FFFD, and
 * nesting stops at a depth of 8. Without this, one user's options would fail every poll.
 */
export function storable(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return value.replace(UNSTORABLE, '\uFFFD');
  if (value === null || typeof value === 'number' || typeof value === 'boolean') return value;
  if (depth >= 8) return null;
  if (Array.isArray(value)) return value.map((v) => storable(v, depth + 1));
  if (typeof value === 'object') {
    // fromEntries defines own properties, so a key named `__proto__` stays data.
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k.replace(UNSTORABLE, '\uFFFD'), storable(v, depth + 1)]));
  }
  return null;
}

/** Turn the hub's model of a user into the servers that count as running. */
export function observe(user: HubUser, config: UsageCollectorConfig, onBad?: (user: string, server: string, reason: string) => void): ObservedServer[] {
  if (!user.servers) {
    throw new Error('the hub returned users without `servers`: the service token needs read:servers (and list:users, read:users)');
  }
  const out: ObservedServer[] = [];
  for (const [name, server] of Object.entries(user.servers)) {
    // A spawn still pending may yet fail (or be refused by the pre-spawn check): it counts once ready.
    if (!server.started || (server.pending === 'spawn' && !server.ready)) continue;
    const started = new Date(server.started.endsWith('Z') || /[+-]\d\d:\d\d$/.test(server.started) ? server.started : `${server.started}Z`);
    if (Number.isNaN(started.getTime())) continue;
    const raw = server.user_options && typeof server.user_options === 'object' && !Array.isArray(server.user_options) ? server.user_options : {};
    const slug = raw[config.profileOption];
    const chosen = typeof slug === 'string' && hubName.safeParse(slug).success && slug.length <= 200 ? slug : null;
    let options = storable(raw) as Record<string, unknown>;
    if (JSON.stringify(options).length > MAX_USER_OPTIONS_CHARS) {
      options = { [config.profileOption]: chosen, ...(Object.hasOwn(raw, 'hubside') ? { hubside: storable(raw.hubside) } : {}), _truncated: true };
      if (JSON.stringify(options).length > MAX_USER_OPTIONS_CHARS) options = { [config.profileOption]: chosen, _truncated: true };
    }
    const recorded = recordedSpawn(raw, config.currency);
    if (!recorded.ok && recorded.reason) onBad?.(user.name, name, recorded.reason);
    const profile = recorded.ok ? (recorded.spawn.profile ?? chosen) : chosen;
    // Exact decimal, as the hub recorded it (a string: no binary float on the way).
    const resources = recorded.ok
      ? { ...recorded.spawn.resources, pricePerHour: recorded.spawn.price_per_hour }
      : ((profile !== null ? entryOf(config.profiles, profile) : undefined) ?? config.defaultResources);
    out.push({
      user: user.name,
      server: name,
      started,
      profile,
      userOptions: options,
      resources,
      groups: [...(user.groups ?? [])].map((g) => (storable(g) as string)).sort(),
      lastActivity: server.last_activity ? new Date(server.last_activity) : null,
    });
  }
  return out;
}

async function registerPoller(fastify: FastifyInstance, opts: PollerOptions): Promise<void> {
  const db = fastify.db as Kysely<UsageDB>;
  const repo = sessionsRepository(db);
  const registry = fastify.kit.metrics.registry;
  // Aggregates only: never a label per user.
  const polls = new Counter({ name: 'hubside_usage_polls_total', help: 'Hub polls by outcome', labelNames: ['result'], registers: [registry] });
  const duration = new Histogram({ name: 'hubside_usage_poll_duration_seconds', help: 'Wall time of one hub poll', registers: [registry], buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30] });
  const running = new Gauge({ name: 'hubside_usage_running_servers', help: 'Servers running at the last poll', registers: [registry] });
  const byGroup = new Gauge({ name: 'hubside_usage_running_servers_by_group', help: 'Servers running at the last poll, per hub group', labelNames: ['group'], registers: [registry] });
  const sessionsOpened = new Counter({ name: 'hubside_usage_sessions_opened_total', help: 'Sessions first seen', registers: [registry] });
  const badSpawns = new Counter({ name: 'hubside_usage_unusable_spawn_records_total', help: 'Servers seen whose user_options.hubside could not be used', registers: [registry] });
  const sessionsClosed = new Counter({ name: 'hubside_usage_sessions_closed_total', help: 'Sessions seen to stop', registers: [registry] });

  const warned = new Set<string>();
  let chain: Promise<unknown> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  let closing = false;

  async function doPoll(): Promise<ReconcileResult> {
    const hub = fastify.kit.hub;
    if (!hub) throw new Error('no hub configured');
    const end = duration.startTimer();
    try {
      const leased = await repo.underPollLease(fastify.database.kind, async () => {
        const started = new Date();
        const observed: ObservedServer[] = [];
        const users = new Map<string, string[]>();
        // The whole listing must succeed before anything is written: a partial one would close sessions that still run.
        for await (const user of hub.listUsers({ state: 'active' })) {
          const servers = observe(user, opts.config, (u, server, reason) => {
            // Once per server and process, not at every poll.
            const key = JSON.stringify([u, server]);
            if (warned.has(key)) return;
            if (warned.size > 10_000) warned.clear();
            warned.add(key);
            badSpawns.inc();
            fastify.log.warn({ user: u, server, reason }, 'a server without a usable recorded spawn price: priced by the rate card instead');
          });
          observed.push(...servers);
          if (servers.length > 0) users.set(user.name, [...(user.groups ?? [])]);
        }
        const now = new Date();
        const result = await repo.reconcile(observed, now, started);
        // Under the lease too: sample windows follow on from the last stored one, whichever replica stored it.
        if (result.locked) await measureAfterPoll(now);
        return { observed, users, now, result };
      });
      if (!leased.locked) {
        // Another replica is polling right now; it will record what we would have seen.
        polls.inc({ result: 'skipped-locked' });
        return { locked: false, servers: 0, opened: 0, closed: 0 };
      }
      const { observed, users, now, result } = leased.value;
      polls.inc({ result: result.locked ? 'ok' : 'skipped-locked' });
      if (result.locked) {
        sessionsOpened.inc(result.opened);
        sessionsClosed.inc(result.closed);
        running.set(observed.length);
        byGroup.reset();
        for (const o of observed) for (const g of o.groups) byGroup.inc({ group: g });
        await budgetsAfterPoll(users, now);
        await retentionAfterPoll(now);
      }
      return result;
    } catch (err) {
      polls.inc({ result: 'error' });
      throw err;
    } finally {
      end();
    }
  }

  async function budgetsAfterPoll(users: Map<string, string[]>, now: Date): Promise<void> {
    const { config } = await opts.settings.current();
    const cfg = config.budgets;
    if (!cfg.default && Object.keys(cfg.users).length === 0 && Object.keys(cfg.groups).length === 0) return;
    for (const [user, groups] of users) {
      const evaluated = await evaluateBudgets(db, config, user, groups, now);
      await recordWarnings(db, config, evaluated, now, fastify.log);
      if (cfg.stopOverLimit && evaluated.some((e) => e.ratio >= 1)) {
        fastify.log.warn({ user }, 'stopping servers over a hard budget limit');
        const model = await fastify.kit.hub!.getUser(user);
        for (const name of Object.keys(model?.servers ?? {})) await fastify.kit.hub!.stopServer(user, { serverName: name });
      }
    }
  }

  async function measureAfterPoll(now: Date): Promise<void> {
    if (!opts.prometheusUrl) return;
    try {
      const last = await db.selectFrom('measured_samples').select((eb) => eb.fn.max('at').as('at')).executeTakeFirst();
      const lastAt = last?.at ? new Date(last.at).getTime() : 0;
      // Windows never overlap (no double count) and never exceed an hour (a long outage is not guessed at).
      const windowSeconds = lastAt && lastAt < now.getTime() ? Math.min(3600, (now.getTime() - lastAt) / 1000) : opts.intervalMs / 1000;
      const samples = await queryMeasured(opts.prometheusUrl, windowSeconds, now);
      await storeMeasured(db, now, windowSeconds, samples);
    } catch (err) {
      // Measured usage is an extra: sessions and billing go on without it.
      fastify.log.warn({ err: String(err) }, 'measured usage from Prometheus failed');
    }
  }

  let lastRollup = 0;
  async function retentionAfterPoll(now: Date): Promise<void> {
    const days = opts.config.retention.rawDays;
    // Hourly is plenty: rollups only move whole closed sessions older than `rawDays`.
    if (days === 0 || now.getTime() - lastRollup < 3_600_000) return;
    lastRollup = now.getTime();
    const r = await rollupSessions(db, new Date(now.getTime() - days * 86_400_000), (await opts.settings.current()).config.rateCards);
    if (r.sessions > 0) fastify.log.info(r, 'rolled up old sessions into daily usage');
  }

  function pollOnce(): Promise<ReconcileResult> {
    const next = chain.then(doPoll, doPoll);
    chain = next.catch(() => undefined);
    return next;
  }

  function schedule(): void {
    if (closing) return;
    timer = setTimeout(() => {
      pollOnce()
        .catch((err: unknown) => fastify.log.error({ err }, 'hub poll failed; the next poll will retry'))
        .finally(schedule);
    }, opts.intervalMs);
    timer.unref?.();
  }

  fastify.decorate('usagePoller', { pollOnce, intervalMs: opts.intervalMs });
  fastify.addHook('onReady', async () => {
    if (!opts.autoStart || !opts.config.poll || !fastify.kit.hub) return;
    // First poll right away, so a restart closes the gap at once; never block readiness on it.
    pollOnce()
      .catch((err: unknown) => fastify.log.error({ err }, 'hub poll failed; the next poll will retry'))
      .finally(schedule);
  });
  fastify.addHook('onClose', async () => {
    closing = true;
    clearTimeout(timer);
    await chain;
  });
}

export const usagePoller = fp(registerPoller, { name: 'hubside-usage-poller', fastify: '5.x', dependencies: ['hubside-database'] });
