/**
 * Loads what statements, budgets and the usage report price: raw sessions (with their measured
 * extras) and the daily rollups. The two never overlap, because a rollup moves whole sessions out
 * of the raw table in the same transaction that adds them to `daily_usage`.
 *
 * Rollups are summed in SQL into segments that share a card, a month and a side of every cut the
 * caller asks for (e.g. the start of the period, report buckets), so a whole hub's month is a
 * few rows per user instead of one per user and day.
 */
import { Decimal } from 'decimal.js';
import { sql } from 'kysely';
import type { Expression, Kysely, SqlBool } from 'kysely';
import type { RateCard, Resources } from './config.js';
import { withMeasuredExtras } from './measured-shares.js';
import type { MeasuredSample } from './measured-shares.js';
import { DAY_MS, dayStart, nextMonth } from './pricing.js';
import type { PricedSession, RolledUsage } from './pricing.js';
import type { UsageDB } from './usage.table.js';

/** users and/or groups; with both, `match` says whether a row needs either (own + managed) or both. */
export interface UsageFilter {
  users?: readonly string[] | undefined;
  groups?: readonly string[] | undefined;
  match?: 'any' | 'all';
}

export interface LoadedUsage {
  sessionsByUser: Map<string, PricedSession[]>;
  rolledByUser: Map<string, RolledUsage[]>;
}

// Sample intervals are at most an hour long (see the poller): load this much around the range.
const SAMPLE_SLACK_MS = 3_600_000;

function asJson<T>(v: unknown): T {
  return (typeof v === 'string' ? JSON.parse(v) : v) as T;
}

function isoDay(t: number): string {
  return new Date(t).toISOString().slice(0, 10);
}
function ceilDay(t: number): number {
  const d = dayStart(t);
  return d === t ? d : d + DAY_MS;
}

/** A predicate over a table with `user_name` and `groups` columns; null when nothing can match. */
function filterSql(f: UsageFilter): Expression<SqlBool> | null | true {
  const parts: Expression<SqlBool>[] = [];
  if (f.users) {
    if (f.users.length === 0 && f.match !== 'any') return null;
    if (f.users.length) parts.push(sql<SqlBool>`user_name in (${sql.join(f.users.map((u) => sql`${u}`))})`);
  }
  if (f.groups) {
    if (f.groups.length === 0 && f.match !== 'any') return null;
    if (f.groups.length) parts.push(sql<SqlBool>`(${sql.join(f.groups.map((g) => sql`groups @> ${JSON.stringify([g])}::jsonb`), sql` or `)})`);
  }
  if (parts.length === 0) return f.users || f.groups ? null : true;
  return sql<SqlBool>`(${sql.join(parts, f.match === 'any' ? sql` or ` : sql` and `)})`;
}

/** Raw sessions overlapping [from, to), grouped by user, with measured extras attached. */
export async function loadSessions(db: Kysely<UsageDB>, filter: UsageFilter, from: number, to: number, now: Date): Promise<Map<string, PricedSession[]>> {
  const where = filterSql(filter);
  const out = new Map<string, PricedSession[]>();
  if (where === null) return out;
  const rows = await db
    .selectFrom('sessions')
    .select(['user_name', 'profile', 'resources', 'groups', 'started', 'stopped', 'last_seen'])
    .where('started', '<', new Date(to))
    .where((eb) => eb.or([eb('stopped', 'is', null), eb('stopped', '>', new Date(from))]))
    .$if(where !== true, (q) => q.where(where as Expression<SqlBool>))
    .orderBy('started')
    .orderBy('id')
    .execute();
  for (const r of rows) {
    const stopped = r.stopped ? new Date(r.stopped) : null;
    const lastSeen = new Date(r.last_seen);
    const s: PricedSession = {
      user: r.user_name,
      groups: asJson<string[]>(r.groups),
      profile: r.profile,
      resources: asJson<Resources>(r.resources),
      start: new Date(r.started),
      // An open session is billed up to the last poll that saw it, never beyond what was observed.
      end: stopped ?? (lastSeen < now ? lastSeen : now),
    };
    const list = out.get(r.user_name);
    if (list) list.push(s);
    else out.set(r.user_name, [s]);
  }
  if (out.size === 0) return out;
  const samples = await db
    .selectFrom('measured_samples')
    .select(['user_name', 'at', 'window_seconds', 'cpu_seconds', 'memory_working_set_bytes'])
    .where('at', '>', new Date(from))
    .where('at', '<', new Date(to + SAMPLE_SLACK_MS))
    .$if(out.size <= 1000, (q) => q.where('user_name', 'in', [...out.keys()]))
    .execute();
  const byUser = new Map<string, MeasuredSample[]>();
  for (const s of samples) {
    if (!out.has(s.user_name)) continue;
    const list = byUser.get(s.user_name) ?? [];
    list.push({ at: new Date(s.at).getTime(), windowSeconds: Number(s.window_seconds), cpuSeconds: Number(s.cpu_seconds), memoryWorkingSetBytes: Number(s.memory_working_set_bytes) });
    byUser.set(s.user_name, list);
  }
  for (const [user, list] of byUser) out.set(user, withMeasuredExtras(out.get(user)!, list));
  return out;
}

/**
 * Rolled-up days in [from, to) (a day counts in the range that holds its start), summed per user,
 * profile and resources within segments cut at every card change, month start and `cuts`.
 */
export async function loadRolled(
  db: Kysely<UsageDB>,
  filter: UsageFilter,
  from: number,
  to: number,
  cards: readonly RateCard[],
  cuts: readonly number[] = [],
): Promise<Map<string, RolledUsage[]>> {
  const where = filterSql(filter);
  const out = new Map<string, RolledUsage[]>();
  if (where === null) return out;
  const first = ceilDay(from);
  const last = ceilDay(to);
  if (last <= first) return out;
  const bounds = new Set<number>();
  for (let m = nextMonth(first - 1); m < last; m = nextMonth(m)) bounds.add(m);
  for (const c of cards) bounds.add(Date.parse(`${c.effectiveFrom}T00:00:00Z`));
  for (const c of cuts) bounds.add(ceilDay(c));
  const sortedBounds = [...bounds].filter((b) => b > first && b < last).sort((a, b) => a - b);
  const segStart = [first, ...sortedBounds];
  const rows = await sql<{ user_name: string; profile: string; resources: unknown; seg: number; sessions: string; seconds: string; billed: string; cpu_extra: string; gib_extra: string }>`
    select user_name, profile, resources, width_bucket(day, ${sortedBounds.map(isoDay)}::text[]) as seg,
           sum(sessions)::text as sessions, sum(seconds)::text as seconds, sum(billed_seconds)::text as billed,
           sum(cpu_extra)::text as cpu_extra, sum(gib_extra)::text as gib_extra
    from daily_usage
    where day >= ${isoDay(first)} and day < ${isoDay(last)} ${where === true ? sql`` : sql`and ${where}`}
    group by user_name, profile, resources, seg`.execute(db);
  if (rows.rows.length === 0) return out;
  // A user's groups are those of their latest rolled-up day (like the latest session for raw data).
  const latest = await sql<{ user_name: string; groups: unknown }>`
    select distinct on (user_name) user_name, groups from daily_usage
    where day >= ${isoDay(first)} and day < ${isoDay(last)} ${where === true ? sql`` : sql`and ${where}`}
    order by user_name, day desc`.execute(db);
  const groupsOf = new Map(latest.rows.map((r) => [r.user_name, asJson<string[]>(r.groups)]));
  for (const r of rows.rows) {
    const line: RolledUsage = {
      day: segStart[Number(r.seg)]!,
      profile: r.profile === '' ? null : r.profile,
      resources: asJson<Resources>(r.resources),
      seconds: Number(r.seconds),
      billedSeconds: Number(r.billed),
      cpuExtra: new Decimal(r.cpu_extra),
      gibExtra: new Decimal(r.gib_extra),
      sessions: Number(r.sessions),
      groups: groupsOf.get(r.user_name) ?? [],
    };
    const list = out.get(r.user_name);
    if (list) list.push(line);
    else out.set(r.user_name, [line]);
  }
  return out;
}

/** Everything priced for [from, to): raw sessions and rollups, per user. */
export async function loadUsage(
  db: Kysely<UsageDB>,
  filter: UsageFilter,
  range: { from: number; to: number; now: Date; cards: readonly RateCard[]; cuts?: readonly number[] },
): Promise<LoadedUsage> {
  const [sessionsByUser, rolledByUser] = await Promise.all([
    loadSessions(db, filter, range.from, range.to, range.now),
    loadRolled(db, filter, range.from, range.to, range.cards, range.cuts),
  ]);
  return { sessionsByUser, rolledByUser };
}

