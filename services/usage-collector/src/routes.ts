import { HubUnavailableError } from '@hubside/hub-client';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Kysely } from 'kysely';
import { createError, hubName } from '@hubside/service-kit';
import { Decimal } from 'decimal.js';
import { z } from 'zod';
import { maySeeGroup, maySeeUser, visibilityOf } from './access.js';
import type { Visibility } from './access.js';
import { evaluateBudgets, listEvents, quotaFrom, recordWarnings } from './budgets.js';
import { entryOf } from './config.js';
import type { RateCard, UsageCollectorConfig } from './config.js';
import type { SettingsStore } from './settings.js';
import { csvLine } from './csv.js';
import { buildStatement, hoursOf, monthStart, nextMonth, roundMoney, sortCards, Tally } from './pricing.js';
import { sessionsRepository } from './sessions-repository.js';
import type { SessionRow } from './sessions-repository.js';
import { loadUsage } from './usage-source.js';
import type { UsageFilter } from './usage-source.js';
import type { UsageDB } from './usage.table.js';

const ForbiddenUsage = createError('HUBSIDE_USAGE_ERR_FORBIDDEN', '%s', 403);
const UnknownName = createError('HUBSIDE_USAGE_ERR_NOT_FOUND', '%s', 404);
const BadRange = createError('HUBSIDE_USAGE_ERR_RANGE', '%s', 400);

const MIN_T = Date.UTC(2000, 0, 1);
const MAX_T = Date.UTC(2100, 0, 1);
const MAX_RANGE_DAYS = 400;
// JupyterHub names are free text, but not unbounded; anything longer is certainly no hub user.
// A hub name: no NUL (PostgreSQL can't compare with it) or lone surrogate, at most 255 characters.
const name = hubName;

const instant = z
  .string()
  .max(40)
  .regex(/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?$/, 'must be a date (YYYY-MM-DD) or an ISO 8601 time')
  .transform((v, ctx) => {
    const t = Date.parse(v.length === 10 ? `${v}T00:00:00Z` : /Z|[+-]\d{2}:\d{2}$/.test(v) ? v : `${v}Z`);
    if (Number.isNaN(t) || t < MIN_T || t > MAX_T) {
      ctx.addIssue({ code: 'custom', message: 'must be a real date between 2000 and 2100' });
      return z.NEVER;
    }
    return t;
  });

const usageQuery = z
  .object({
    from: instant.optional(),
    to: instant.optional(),
    user: name.optional(),
    group: name.optional(),
    granularity: z.enum(['day', 'week', 'month']).default('day'),
  })
  .strict();

const period = z
  .string()
  .regex(/^\d{4}-(0[1-9]|1[0-2])$/, 'must be a month, YYYY-MM')
  .transform((v) => Date.UTC(Number(v.slice(0, 4)), Number(v.slice(5, 7)) - 1, 1));
const statementsQuery = z
  .object({ period: period.optional(), from: instant.optional(), to: instant.optional(), user: name.optional(), group: name.optional() })
  .strict();

const usageRow = z.object({ period: z.string(), user: z.string(), hours: z.string(), cost: z.string(), sessions: z.number() });
const usageResponse = z.object({
  from: z.string(),
  to: z.string(),
  granularity: z.string(),
  currency: z.string(),
  rows: z.array(usageRow),
  total: z.object({ hours: z.string(), cost: z.string() }),
});
const statementResponse = z.object({
  from: z.string(),
  to: z.string(),
  currency: z.string(),
  attribution: z.enum(['primary', 'split', 'full']),
  users: z.array(z.object({ user: z.string(), groups: z.array(z.string()), hours: z.string(), gross: z.string(), allowance: z.string(), net: z.string() })),
  groups: z.array(z.object({ group: z.string(), users: z.number(), net: z.string(), overlapping: z.boolean() })),
  unattributed: z.string(),
  total: z.object({ hours: z.string(), gross: z.string(), net: z.string() }),
});
const quotaResponse = z.object({
  allow_server_launch: z.boolean(),
  used: z.string(),
  limit: z.string().nullable(),
  unit: z.enum(['currency', 'hours']).nullable(),
  window: z.string().nullable(),
  message: z.string(),
});
const sessionResponse = z.object({
  user: z.string(),
  server: z.string(),
  profile: z.string().nullable(),
  user_options: z.record(z.string(), z.unknown()),
  /** Numbers, and `pricePerHour` (a decimal string) when the hub recorded the spawn price. */
  resources: z.record(z.string(), z.union([z.number(), z.string()])),
  started: z.string(),
  last_activity: z.string().nullable(),
  last_seen: z.string(),
  stopped: z.string().nullable(),
  /** Upper bound of the stop; `stopped` is the lower one. */
  stop_observed: z.string().nullable(),
  stop_uncertainty_seconds: z.number().nullable(),
  stop_source: z.string().nullable(),
});

export interface RoutesOptions {
  routePrefix: string;
  config: UsageCollectorConfig;
  /** Rate cards and budgets in force (editable on the dashboard); the rest comes from `config`. */
  settings: SettingsStore;
}

/** Rate cards sorted once per configuration (a new one comes with each settings version). */
const sortedCards = new WeakMap<UsageCollectorConfig, RateCard[]>();
export function cardsOf(config: UsageCollectorConfig): RateCard[] {
  let cards = sortedCards.get(config);
  if (!cards) sortedCards.set(config, (cards = sortCards(config.rateCards)));
  return cards;
}

function bucketStart(t: number, g: 'day' | 'week' | 'month'): number {
  if (g === 'month') return monthStart(t);
  const d = new Date(t);
  const day = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
  if (g === 'day') return day;
  const dow = (d.getUTCDay() + 6) % 7; // ISO weeks start on Monday
  return day - dow * 86_400_000;
}
function bucketEnd(start: number, g: 'day' | 'week' | 'month'): number {
  return g === 'month' ? nextMonth(start) : start + (g === 'day' ? 1 : 7) * 86_400_000;
}

function checkRange(from: number, to: number): void {
  if (to <= from) throw new BadRange('query.to: must be after query.from');
  if (to - from > MAX_RANGE_DAYS * 86_400_000) throw new BadRange(`query: a range may span at most ${MAX_RANGE_DAYS} days`);
}

async function routes(fastify: FastifyInstance, opts: RoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { routePrefix: prefix, config } = opts;
  const db = fastify.db as Kysely<UsageDB>;
  const repo = sessionsRepository(db);
  /** The configuration in force for pricing and budgets, read per request. */
  async function live(): Promise<{ config: UsageCollectorConfig; cards: RateCard[] }> {
    const { config } = await opts.settings.current();
    return { config, cards: cardsOf(config) };
  }

  /**
   * A user's groups: the hub's, else (not or no longer a hub user) those their usage was recorded
   * with. `hubFailure` wraps a failure to ask the hub (not a database error) for the caller to name.
   */
  async function hubUserGroups(user: string, hubFailure?: (err: Error) => Error): Promise<string[] | null> {
    const hub = fastify.kit.hub;
    if (hub) {
      let model;
      try {
        model = await hub.getUser(user);
      } catch (err) {
        throw hubFailure ? hubFailure(err as Error) : err;
      }
      if (model) return [...(model.groups ?? [])];
    }
    // Not (or no longer) a hub user, but with recorded usage: the groups that usage was recorded with.
    return repo.lastGroups(user);
  }

  async function groupExists(group: string): Promise<boolean> {
    const { config } = await live();
    if (entryOf(config.budgets.groups, group) || config.attribution.groupOrder.includes(group)) return true;
    if (await repo.knownGroup(group)) return true;
    const hub = fastify.kit.hub;
    if (hub) {
      try {
        return (await hub.getGroup(group)) !== null;
      } catch {
        return false;
      }
    }
    return false;
  }

  /** What the caller may see for the selection, as a filter, or an error naming why not. */
  async function select(request: FastifyRequest, v: Visibility, q: { user?: string | undefined; group?: string | undefined }): Promise<{ filter: UsageFilter; onlyGroups?: Set<string> }> {
    if (q.user !== undefined) {
      const groups = await hubUserGroups(q.user);
      // Don't tell a student whether another name exists.
      if (groups === null) {
        if (!v.all && q.user !== v.self && v.groups.size === 0) throw new ForbiddenUsage('you may only read your own usage');
        throw new UnknownName(`query.user: no user ${JSON.stringify(q.user)}`);
      }
      if (!maySeeUser(v, q.user, groups)) throw new ForbiddenUsage(!v.all && v.groups.size ? 'query.user: not a member of a group you manage' : 'you may only read your own usage');
      return { filter: { users: [q.user], ...(q.group !== undefined ? { groups: [q.group], match: 'all' as const } : {}) } };
    }
    if (q.group !== undefined) {
      if (!maySeeGroup(v, q.group)) throw new ForbiddenUsage(`query.group: you do not manage group ${JSON.stringify(q.group)}`);
      if (!(await groupExists(q.group))) throw new UnknownName(`query.group: no group ${JSON.stringify(q.group)}`);
      return { filter: { groups: [q.group] }, onlyGroups: new Set([q.group]) };
    }
    if (v.all) return { filter: {} };
    request.log.debug({ managed: v.groups.size }, 'limited usage view');
    return { filter: { users: v.self ? [v.self] : [], groups: [...v.groups], match: 'any' }, ...(v.groups.size ? { onlyGroups: new Set(v.groups) } : {}) };
  }

  /** Raw session rows for a filter (the sessions listing). */
  async function sessionRows(filter: UsageFilter, from: number, to: number): Promise<SessionRow[]> {
    const range = { from: new Date(from), to: new Date(to) };
    if (filter.match === 'any') {
      const own = await repo.overlapping({ ...range, users: filter.users ?? [] });
      const managed = await repo.overlapping({ ...range, groups: filter.groups ?? [] });
      const byId = new Map<string, SessionRow>();
      for (const r of [...own, ...managed]) byId.set(r.id, r);
      return [...byId.values()].sort((a, b) => a.started.getTime() - b.started.getTime() || Number(a.id) - Number(b.id));
    }
    const rows = await repo.overlapping({ ...range, ...(filter.users ? { users: filter.users } : filter.groups ? { groups: filter.groups } : {}) });
    return filter.users && filter.groups ? rows.filter((r) => filter.groups!.every((g) => r.groups.includes(g))) : rows;
  }

  async function usage(request: FastifyRequest, q: z.output<typeof usageQuery>) {
    const { config, cards } = await live();
    const now = Date.now();
    const to = q.to ?? now;
    const from = q.from ?? monthStart(Math.min(to - 1, now));
    checkRange(from, to);
    const v = visibilityOf(request.hubUser!, config);
    const { filter } = await select(request, v, q);
    const cuts: number[] = [];
    for (let p = bucketStart(from, q.granularity); p < to; p = bucketEnd(p, q.granularity)) cuts.push(p);
    const loaded = await loadUsage(db, filter, { from, to, now: new Date(now), cards, cuts: [from, ...cuts] });
    const acc = new Map<string, { period: string; user: string; tally: Tally; sessions: number }>();
    const entry = (p: number, user: string) => {
      const period = new Date(p).toISOString().slice(0, 10);
      const k = JSON.stringify([period, user]);
      let cur = acc.get(k);
      if (!cur) acc.set(k, (cur = { period, user, tally: new Tally(), sessions: 0 }));
      return cur;
    };
    for (const [user, sessions] of loaded.sessionsByUser) {
      for (const s of sessions) {
        const a = Math.max(from, s.start.getTime());
        const b = Math.min(to, s.end.getTime());
        for (let p = bucketStart(a, q.granularity); p < b; p = bucketEnd(p, q.granularity)) {
          const cur = entry(p, user);
          cur.tally.addSession(s, Math.max(p, from), Math.min(bucketEnd(p, q.granularity), to), cards);
          cur.sessions += 1;
        }
      }
    }
    for (const [user, lines] of loaded.rolledByUser) {
      for (const r of lines) {
        const cur = entry(bucketStart(r.day, q.granularity), user);
        cur.tally.addRolled(r, cards);
        cur.sessions += r.sessions;
      }
    }
    const list = [...acc.values()].sort((x, y) => (x.period === y.period ? (x.user < y.user ? -1 : 1) : x.period < y.period ? -1 : 1));
    let totalSeconds = 0;
    let totalCost = new Decimal(0);
    for (const r of list) {
      totalSeconds += r.tally.seconds;
      totalCost = totalCost.plus(roundMoney(r.tally.cost()));
    }
    return {
      from: new Date(from).toISOString(),
      to: new Date(to).toISOString(),
      granularity: q.granularity,
      currency: config.currency,
      rows: list.map((r) => ({ period: r.period, user: r.user, hours: hoursOf(r.tally.seconds), cost: roundMoney(r.tally.cost()).toFixed(2), sessions: r.sessions })),
      total: { hours: hoursOf(totalSeconds), cost: totalCost.toFixed(2) },
    };
  }

  app.get(`${prefix}api/usage`, { schema: { querystring: usageQuery, response: { 200: usageResponse } } }, async (request) => usage(request, request.query));

  app.get(`${prefix}api/usage.csv`, { schema: { querystring: usageQuery } }, async (request, reply) => {
    const body = await usage(request, request.query);
    let out = csvLine(['period', 'user', 'hours', `cost_${body.currency}`, 'sessions']);
    for (const r of body.rows) out += csvLine([r.period, r.user, r.hours, r.cost, r.sessions]);
    return reply
      .type('text/csv; charset=utf-8')
      .header('content-disposition', `attachment; filename="usage-${body.from.slice(0, 10)}-${body.to.slice(0, 10)}.csv"`)
      .send(out);
  });

  app.get(`${prefix}api/statements`, { schema: { querystring: statementsQuery, response: { 200: statementResponse } } }, async (request) => {
    const q = request.query;
    if (q.period !== undefined && (q.from !== undefined || q.to !== undefined)) throw new BadRange('query: give either period or from/to, not both');
    const { config, cards } = await live();
    const now = Date.now();
    const from = q.period ?? q.from ?? monthStart(now);
    const to = q.period !== undefined ? nextMonth(q.period) : (q.to ?? nextMonth(from));
    checkRange(from, to);
    const v = visibilityOf(request.hubUser!, config);
    const { filter, onlyGroups } = await select(request, v, q);
    // The allowance is spent from the start of the month, so earlier usage of that month is needed too.
    const { sessionsByUser, rolledByUser } = await loadUsage(db, filter, { from: monthStart(from), to, now: new Date(now), cards, cuts: [from] });
    return buildStatement({
      sessionsByUser,
      rolledByUser,
      from,
      to,
      cards,
      currency: config.currency,
      rule: config.attribution.rule,
      order: config.attribution.groupOrder,
      ...(onlyGroups ? { onlyGroups } : {}),
    });
  });

  app.get(
    `${prefix}api/sessions`,
    { schema: { querystring: usageQuery.omit({ granularity: true }), response: { 200: z.object({ sessions: z.array(sessionResponse) }) } } },
    async (request) => {
      const q = request.query;
      const now = Date.now();
      const to = q.to ?? now + 1;
      const from = q.from ?? monthStart(now);
      checkRange(from, to);
      const { filter } = await select(request, visibilityOf(request.hubUser!, config), q);
      const rows = await sessionRows(filter, from, to);
      return {
        sessions: rows.map((r) => ({
          user: r.user_name,
          server: r.server_name,
          profile: r.profile,
          user_options: r.user_options,
          resources: r.resources as unknown as Record<string, number | string>,
          started: r.started.toISOString(),
          last_activity: r.last_activity?.toISOString() ?? null,
          last_seen: r.last_seen.toISOString(),
          stopped: r.stopped?.toISOString() ?? null,
          stop_observed: r.stop_observed?.toISOString() ?? null,
          stop_uncertainty_seconds: r.stopped && r.stop_observed ? (r.stop_observed.getTime() - r.stopped.getTime()) / 1000 : null,
          stop_source: r.stop_source,
        })),
      };
    },
  );

  app.get(`${prefix}api/users/:name/quota`, { schema: { params: z.object({ name }).strict(), response: { 200: quotaResponse } } }, async (request) => {
    const user = request.params.name;
    const v = visibilityOf(request.hubUser!, config);
    if (!v.all && user !== v.self) throw new ForbiddenUsage('you may only read your own quota');
    // The hook decides fail-open or fail-closed; we only say the hub could not be asked.
    const groups = await hubUserGroups(user, (err) => new HubUnavailableError(`could not read ${JSON.stringify(user)} from the hub: ${err.message}`));
    if (groups === null) throw new UnknownName(`params.name: no user ${JSON.stringify(user)}`);
    const now = new Date();
    const current = (await live()).config;
    const evaluated = await evaluateBudgets(db, current, user, groups, now);
    // A spawn attempt is a moment the user should hear about their budget, not only the next poll.
    await recordWarnings(db, current, evaluated, now, request.log);
    return quotaFrom(evaluated, current.currency);
  });

  const eventsResponse = z.object({
    events: z.array(
      z.object({ subject_kind: z.string(), subject: z.string(), threshold: z.number(), window: z.string(), used: z.string(), limit: z.string(), unit: z.string(), at: z.string() }),
    ),
  });
  app.get(`${prefix}api/events`, { schema: { response: { 200: eventsResponse } } }, async (request) => {
    const v = visibilityOf(request.hubUser!, config);
    return { events: await listEvents(db, v.all ? {} : { only: { users: v.self ? [v.self] : [], groups: [...v.groups] } }) };
  });
}

export const usageRoutes = fp(routes, { name: 'hubside-usage-routes', fastify: '5.x', dependencies: ['hubside-database', 'hubside-hub-auth'] });
