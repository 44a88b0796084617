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
import type { Expression, Kysely, RawBuilder, SqlBool } from 'kysely';
import type { RateCard, Resources } from './config.js';
import { withMeasuredExtras } from './measured-shares.js';
import { piecesSource } from './pieces.js';
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
  /**
   * When asked for (`idleFrom`): per user, the seconds in [idleFrom, to) their servers ran after
   * their last activity. Raw sessions only: a rollup keeps no activity times, so rolled-up days count 0.
   */
  idleByUser?: Map<string, number>;
}

// Sample intervals are at most an hour long (see the poller): load this much around the range.
export const SAMPLE_SLACK_MS = 3_600_000;

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

/**
 * A predicate over a table with `user_name` and `groups` columns (or, with `groupsBy` 'shape', a
 * `shape` column keyed into `usage_shapes`); null when nothing can match.
 */
export function filterSql(f: UsageFilter, groupsBy: 'groups' | 'shape' = 'groups'): Expression<SqlBool> | null | true {
  const parts: Expression<SqlBool>[] = [];
  if (f.users) {
    if (f.users.length === 0 && f.match !== 'any') return null;
    // One array parameter, not one per user: a course of 10,000 students is one bind value.
    if (f.users.length) parts.push(sql<SqlBool>`user_name = any(${[...f.users]}::text[])`);
  }
  if (f.groups) {
    if (f.groups.length === 0 && f.match !== 'any') return null;
    if (f.groups.length) {
      const any = sql<SqlBool>`(${sql.join(f.groups.map((g) => sql`groups @> ${JSON.stringify([g])}::jsonb`), sql` or `)})`;
      parts.push(groupsBy === 'groups' ? any : sql<SqlBool>`shape in (select id from usage_shapes where ${any})`);
    }
  }
  if (parts.length === 0) return f.users || f.groups ? null : true;
  return sql<SqlBool>`(${sql.join(parts, f.match === 'any' ? sql` or ` : sql` and `)})`;
}

/** Raw sessions overlapping [from, to), grouped by user, with measured extras attached. */
export async function loadSessions(
  db: Kysely<UsageDB>,
  filter: UsageFilter,
  from: number,
  to: number,
  now: Date,
  onlyUsers?: readonly string[],
): Promise<Map<string, PricedSession[]>> {
  const where = filterSql(filter);
  const out = new Map<string, PricedSession[]>();
  if (where === null || onlyUsers?.length === 0) return out;
  const rows = await db
    .selectFrom('sessions')
    .select(['user_name', 'profile', 'resources', 'groups', 'started', 'stopped', 'last_seen', 'last_activity'])
    .where('started', '<', new Date(to))
    .where((eb) => eb.or([eb('stopped', 'is', null), eb('stopped', '>', new Date(from))]))
    .$if(where !== true, (q) => q.where(where as Expression<SqlBool>))
    .$if(onlyUsers !== undefined, (q) => q.where('user_name', 'in', [...onlyUsers!]))
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
      lastActivity: r.last_activity ? new Date(r.last_activity) : null,
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
 * SQL for the CTE `q` (after a `with`): the sessions matching `cond` cut into the same UTC-day
 * pieces as `dayPieces` (clipped to [from, to) when given), one row per piece with `secs` and the
 * increment `inc` of its day's card (null: no card, so free). Times are cut to milliseconds, as
 * JavaScript Dates see them, so both paths round alike.
 */
export function piecesCte(cond: RawBuilder<unknown>, opts: { from?: Date; to?: Date; now: Date; cards: readonly RateCard[] }): RawBuilder<unknown> {
  const sorted = [...opts.cards].sort((x, y) => (x.effectiveFrom < y.effectiveFrom ? -1 : 1));
  const start = sql`date_trunc('milliseconds', started)`;
  const end = sql`date_trunc('milliseconds', coalesce(stopped, least(last_seen, ${opts.now})))`;
  return sql`s as (
      select id, user_name, coalesce(profile, '') as profile, resources::text as resources, groups::text as groups, started,
             ${opts.from ? sql`greatest(${start}, ${opts.from})` : start} as a,
             ${opts.to ? sql`least(${end}, ${opts.to})` : end} as b
      from sessions where ${cond}
    ), p as (
      select s.id, s.user_name, s.profile, s.resources, s.groups, s.started, d.day,
             -- date_part gives a double, as JavaScript computes it, so the increment rounding agrees bit for bit.
             date_part('epoch', least(s.b, d.day + interval '1 day') - greatest(s.a, d.day)) as secs
      from s cross join lateral generate_series(date_trunc('day', s.a, 'UTC'), s.b, interval '1 day') as d(day)
      where s.b > s.a
    ), q as (
      select id, user_name, profile, resources, groups, started, day, secs,
             (${sorted.map((c) => c.incrementSeconds)}::int[])[width_bucket(day, ${sorted.map((c) => `${c.effectiveFrom}T00:00:00Z`)}::timestamptz[])] as inc
      from p where secs > 0
    )`;
}

/** One aggregated row: a user's usage in one segment, per profile, resources and groups. */
interface Aggregated {
  user_name: string;
  profile: string;
  resources: string;
  groups: string;
  /** Latest day (or start) inside the row, to find the user's current groups. */
  last: string;
  seg: number;
  sessions: string;
  seconds: string;
  billed: string;
  cpu_extra?: string;
  gib_extra?: string;
}

// Decimals are immutable, so lines without extras can share one zero.
const ZERO = new Decimal(0);

function toLines(rows: readonly Aggregated[], segStart: readonly number[]): Map<string, RolledUsage[]> {
  const latest = new Map<string, { last: string; groups: string }>();
  for (const r of rows) {
    const cur = latest.get(r.user_name);
    if (!cur || r.last > cur.last) latest.set(r.user_name, { last: r.last, groups: r.groups });
  }
  // Rows repeat a few distinct texts: parse each once (the parsed values are only read).
  const parsed = new Map<string, string[]>();
  const parsedResources = new Map<string, Resources>();
  const out = new Map<string, RolledUsage[]>();
  for (const r of rows) {
    const g = latest.get(r.user_name)!.groups;
    let groups = parsed.get(g);
    if (!groups) parsed.set(g, (groups = JSON.parse(g) as string[]));
    let resources = parsedResources.get(r.resources);
    if (!resources) parsedResources.set(r.resources, (resources = JSON.parse(r.resources) as Resources));
    const line: RolledUsage = {
      day: segStart[Number(r.seg)]!,
      profile: r.profile === '' ? null : r.profile,
      resources,
      seconds: Number(r.seconds),
      billedSeconds: Number(r.billed),
      cpuExtra: r.cpu_extra === undefined || r.cpu_extra === '0' ? ZERO : new Decimal(r.cpu_extra),
      gibExtra: r.gib_extra === undefined || r.gib_extra === '0' ? ZERO : new Decimal(r.gib_extra),
      sessions: Number(r.sessions),
      groups,
    };
    const list = out.get(r.user_name);
    if (list) list.push(line);
    else out.set(r.user_name, [line]);
  }
  return out;
}

/** The profile, resources and groups (as text) that `usage_shapes` ids stand for. */
async function shapesOf(db: Kysely<UsageDB>, ids: readonly number[]): Promise<Map<number, { profile: string; resources: string; groups: string }>> {
  const wanted = [...new Set(ids)];
  const out = new Map<number, { profile: string; resources: string; groups: string }>();
  if (wanted.length === 0) return out;
  const r = await sql<{ id: number; profile: string; resources: string; groups: string }>`
    select id, profile, resources::text as resources, groups::text as groups from usage_shapes where id = any(${wanted}::int[])`.execute(db);
  for (const x of r.rows) out.set(Number(x.id), { profile: x.profile, resources: x.resources, groups: x.groups });
  return out;
}

/** Segment starts for [first, last): cut at every month start, card change and (day-aligned) cut. */
function segments(first: number, last: number, cards: readonly RateCard[], cuts: readonly number[]): { bounds: number[]; segStart: number[] } {
  const set = new Set<number>();
  for (let m = nextMonth(first - 1); m < last; m = nextMonth(m)) set.add(m);
  for (const c of cards) set.add(Date.parse(`${c.effectiveFrom}T00:00:00Z`));
  for (const c of cuts) set.add(ceilDay(c));
  const bounds = [...set].filter((b) => b > first && b < last).sort((a, b) => a - b);
  return { bounds, segStart: [first, ...bounds] };
}

/**
 * Raw sessions of users without measured samples, cut into the same UTC-day pieces as
 * `dayPieces` (each rounded up to its day's card increment) and summed per segment in SQL, so a
 * whole hub's month never crosses into JavaScript row by row. Closed sessions' whole days are read
 * as cut ahead of time (pieces.ts). Cuts must be midnights.
 */
async function aggregateRaw(
  db: Kysely<UsageDB>,
  filter: UsageFilter,
  from: number,
  to: number,
  now: Date,
  cards: readonly RateCard[],
  cuts: readonly number[],
  exceptUsers: readonly string[],
  idleFrom?: number,
): Promise<{ lines: Map<string, RolledUsage[]>; groups: Map<string, string[]>; idle: Map<string, number> }> {
  const where = filterSql(filter);
  const idle = new Map<string, number>();
  if (where === null || to <= from) return { lines: new Map(), groups: new Map(), idle };
  const { bounds, segStart } = segments(from, to, cards, cuts);
  // Grouped by shape (an integer standing for profile, resources and groups), named here from
  // `usage_shapes`: a few rows, so each profile, resources and groups text is read and parsed once.
  const agg = await sql<Omit<Aggregated, 'profile' | 'resources' | 'groups'> & { shape: number; idle?: string }>`
    with ${piecesSource(filter, { from: new Date(from), to: new Date(to), now, cards, except: exceptUsers })}
    select user_name, shape, to_char(max(started) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') as last,
           width_bucket(day, ${bounds.map((b) => new Date(b).toISOString())}::timestamptz[]) as seg,
           count(*)::text as sessions, sum(secs)::text as seconds, coalesce(sum(ceil(secs / inc - 0.000000001) * inc), 0)::text as billed
           ${idleFrom === undefined ? sql`` : sql`, coalesce(sum(idle) filter (where day >= ${new Date(idleFrom)}), 0)::text as idle`}
    from q group by user_name, shape, seg`.execute(db);
  for (const r of agg.rows) if (r.idle !== undefined) idle.set(r.user_name, (idle.get(r.user_name) ?? 0) + Number(r.idle));
  const shapes = await shapesOf(db, agg.rows.map((r) => r.shape));
  const rows = { rows: agg.rows.map((r) => Object.assign(r, shapes.get(r.shape)!)) };
  const lines = toLines(rows.rows, segStart);
  const groups = new Map<string, string[]>();
  for (const [user, list] of lines) groups.set(user, [...(list[0]?.groups ?? [])]);
  return { lines, groups, idle };
}

/** Seconds of `sessions` inside [from, to) after their last activity. */
export function idleSeconds(sessions: readonly PricedSession[], from: number, to: number): number {
  let idle = 0;
  for (const s of sessions) {
    const end = Math.min(s.end.getTime(), to);
    const start = Math.max(s.lastActivity?.getTime() ?? s.start.getTime(), s.start.getTime(), from);
    if (end > start) idle += (end - start) / 1000;
  }
  return idle;
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
  const { bounds: sortedBounds, segStart } = segments(first, last, cards, cuts);
  // Groups are part of the key (they rarely change within a range), so one scan also yields each
  // user's groups on their latest day; summing per key is linear, so the split changes no money.
  const rows = await sql<Aggregated & { cpu_extra: string; gib_extra: string }>`
    select user_name, profile, resources::text as resources, groups::text as groups, max(day) as last,
           width_bucket(day, ${sortedBounds.map(isoDay)}::text[]) as seg,
           sum(sessions)::text as sessions, sum(seconds)::text as seconds, sum(billed_seconds)::text as billed,
           sum(cpu_extra)::text as cpu_extra, sum(gib_extra)::text as gib_extra
    from daily_usage
    where day >= ${isoDay(first)} and day < ${isoDay(last)} ${where === true ? sql`` : sql`and ${where}`}
    group by user_name, profile, resources::text, groups::text, seg`.execute(db);
  return toLines(rows.rows, segStart);
}

/**
 * Everything priced for [from, to): raw sessions and rollups, per user (and, with `idleFrom`, their
 * idle time from then on). When every cut (and `idleFrom`) is at a midnight, the raw sessions of users without measured samples are summed in SQL (`rolledByUser`
 * then holds them too, a range's partial first day dated by the range's start); users with samples,
 * and loads cut inside a day, are priced session by session.
 */
export async function loadUsage(
  db: Kysely<UsageDB>,
  filter: UsageFilter,
  range: { from: number; to: number; now: Date; cards: readonly RateCard[]; cuts?: readonly number[]; idleFrom?: number },
): Promise<LoadedUsage> {
  const cuts = range.cuts ?? [];
  // Segments are whole days inside the range (its ends may cut a day: see piecesSource).
  const aligned = [...cuts, range.idleFrom ?? 0].every((t) => t % DAY_MS === 0);
  const rolledP = loadRolled(db, filter, range.from, range.to, range.cards, cuts);
  if (!aligned) {
    const [sessionsByUser, rolledByUser] = await Promise.all([loadSessions(db, filter, range.from, range.to, range.now), rolledP]);
    if (range.idleFrom === undefined) return { sessionsByUser, rolledByUser };
    const idleFrom = range.idleFrom;
    return { sessionsByUser, rolledByUser, idleByUser: new Map([...sessionsByUser].map(([u, list]) => [u, idleSeconds(list, idleFrom, range.to)])) };
  }
  const sampled = await db
    .selectFrom('measured_samples')
    .select('user_name')
    .distinct()
    .where('at', '>', new Date(range.from))
    .where('at', '<', new Date(range.to + SAMPLE_SLACK_MS))
    .execute();
  const sampledUsers = sampled.map((r) => r.user_name);
  const [sessionsByUser, raw, rolledByUser] = await Promise.all([
    loadSessions(db, filter, range.from, range.to, range.now, sampledUsers),
    aggregateRaw(db, filter, range.from, range.to, range.now, range.cards, cuts, sampledUsers, range.idleFrom),
    rolledP,
  ]);
  // Raw sessions are newer than any rollup, so their groups are the user's current ones.
  for (const [user, lines] of raw.lines) {
    const older = (rolledByUser.get(user) ?? []).map((l) => ({ ...l, groups: raw.groups.get(user) ?? l.groups }));
    rolledByUser.set(user, [...older, ...lines]);
  }
  if (range.idleFrom === undefined) return { sessionsByUser, rolledByUser };
  const idleByUser = raw.idle;
  for (const [user, list] of sessionsByUser) idleByUser.set(user, idleSeconds(list, range.idleFrom, range.to));
  return { sessionsByUser, rolledByUser, idleByUser };
}
