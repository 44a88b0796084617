/**
 * The dashboards' per-day charts of many users, summed in SQL across users: one row per day,
 * profile, resources and groups (plus one per day with its number of active users), instead of one
 * row per user and day. Pieces are the same UTC-day pieces `dayPieces` prices (see usage-source.ts),
 * each rounded up to its card's increment before summing, and money is only multiplied out in
 * JavaScript (aggregate.ts), so a day's cost is exactly what the per-user path gives.
 */
import { Decimal } from 'decimal.js';
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import type { RateCard, Resources } from '../config.js';
import { DAY_MS, dayStart } from '../pricing.js';
import type { RolledUsage } from '../pricing.js';
import { filterSql, loadSessions, piecesCte, SAMPLE_SLACK_MS } from '../usage-source.js';
import type { UsageFilter } from '../usage-source.js';
import type { UsageDB } from '../usage.table.js';
import type { Usage } from './aggregate.js';

export interface DailyUsage {
  /**
   * For `dailyBreakdown`: users with measured samples session by session (their extras are priced
   * per sample interval), everyone else as day lines under the key '' (not a user name).
   */
  usage: Usage;
  /** Distinct users with any usage, per day start (ms); empty unless asked for (it costs a second pass). */
  active: Map<number, number>;
}

interface Row {
  kind: 'raw' | 'rolled' | 'active';
  day: string;
  profile: string | null;
  resources: string | null;
  groups: string | null;
  n: string;
  seconds: string | null;
  billed: string | null;
  cpu_extra: string | null;
  gib_extra: string | null;
}

const ceilDay = (t: number) => (dayStart(t) === t ? t : dayStart(t) + DAY_MS);
const isoDay = (t: number) => new Date(t).toISOString().slice(0, 10);

/** Usage of [from, to) for `filter`, summed per day across users (one query, plus the sampled users' sessions). */
export async function loadDaily(
  db: Kysely<UsageDB>,
  filter: UsageFilter,
  range: { from: number; to: number; now: Date; cards: readonly RateCard[]; activeUsers?: boolean },
): Promise<DailyUsage> {
  const where = filterSql(filter);
  const empty: DailyUsage = { usage: { sessionsByUser: new Map(), rolledByUser: new Map() }, active: new Map() };
  if (where === null || range.to <= range.from) return empty;
  const { from, to, now, cards } = range;
  const sampled = (
    await db.selectFrom('measured_samples').select('user_name').distinct().where('at', '>', new Date(from)).where('at', '<', new Date(to + SAMPLE_SLACK_MS)).execute()
  ).map((r) => r.user_name);
  const and = where === true ? sql`` : sql`and ${where}`;
  const notSampled = sampled.length ? sql`and not (user_name = any(${sampled}::text[]))` : sql``;
  const cond = sql`started < ${new Date(to)} and (stopped is null or stopped > ${new Date(from)}) ${and}`;
  // With active users, `q` is referenced twice, so Postgres computes the pieces once (a materialized CTE).
  const activeSql = range.activeUsers
    ? sql`union all
    select 'active', day, null, null, null, count(distinct user_name)::text, null, null, null, null
    from (select to_char(day at time zone 'UTC', 'YYYY-MM-DD') as day, user_name from q union all select day::text, user_name from r) a
    group by day`
    : sql``;
  const rows = await sql<Row>`
    with ${piecesCte(cond, { from: new Date(from), to: new Date(to), now, cards })},
    r as (
      select day, profile, resources::text as resources, groups::text as groups, user_name, sessions, seconds, billed_seconds, cpu_extra, gib_extra
      from daily_usage where day >= ${isoDay(ceilDay(from))} and day < ${isoDay(ceilDay(to))} ${and}
    )
    select 'raw' as kind, to_char(day at time zone 'UTC', 'YYYY-MM-DD') as day, profile, resources, groups, count(*)::text as n,
           sum(secs)::text as seconds, coalesce(sum(ceil(secs / inc - 0.000000001) * inc), 0)::text as billed, null as cpu_extra, null as gib_extra
    from q where true ${notSampled} group by day, profile, resources, groups
    union all
    select 'rolled', day::text, profile, resources, groups, sum(sessions)::text, sum(seconds)::text, sum(billed_seconds)::text, sum(cpu_extra)::text, sum(gib_extra)::text
    from r group by day, profile, resources, groups
    ${activeSql}`.execute(db);

  const lines: RolledUsage[] = [];
  const active = new Map<number, number>();
  const parsed = new Map<string, unknown>();
  const json = <T>(s: string): T => {
    let v = parsed.get(s);
    if (v === undefined) parsed.set(s, (v = JSON.parse(s)));
    return v as T;
  };
  for (const r of rows.rows) {
    const day = Date.parse(`${r.day.slice(0, 10)}T00:00:00Z`);
    if (r.kind === 'active') {
      active.set(day, Number(r.n));
      continue;
    }
    lines.push({
      day,
      profile: r.profile === '' ? null : r.profile,
      resources: json<Resources>(r.resources!),
      seconds: Number(r.seconds),
      billedSeconds: Number(r.billed),
      cpuExtra: new Decimal(r.cpu_extra ?? 0),
      gibExtra: new Decimal(r.gib_extra ?? 0),
      sessions: Number(r.n),
      groups: json<string[]>(r.groups!),
    });
  }
  const sessionsByUser = sampled.length ? await loadSessions(db, filter, from, to, now, sampled) : new Map();
  return { usage: { sessionsByUser, rolledByUser: new Map([['', lines]]) }, active };
}
