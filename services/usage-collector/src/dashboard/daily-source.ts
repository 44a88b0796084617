/**
 * The dashboards' per-day charts of many users, summed in SQL across users: one row per day,
 * profile, resources and groups instead of one row per user and day, and (a separate pass, so it can
 * run beside) the number of active users a day. Pieces are the same UTC-day pieces `dayPieces` prices (see usage-source.ts),
 * each rounded up to its card's increment before summing, and money is only multiplied out in
 * JavaScript (aggregate.ts), so a day's cost is exactly what the per-user path gives.
 */
import { Decimal } from 'decimal.js';
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import type { RateCard, Resources } from '../config.js';
import { DAY_MS, dayStart } from '../pricing.js';
import type { RolledUsage } from '../pricing.js';
import { piecesSource } from '../pieces.js';
import { filterSql, loadSessions, SAMPLE_SLACK_MS } from '../usage-source.js';
import type { UsageFilter } from '../usage-source.js';
import type { UsageDB } from '../usage.table.js';
import type { Usage } from './aggregate.js';

export interface DailyUsage {
  /**
   * For `dailyBreakdown`: users with measured samples session by session (their extras are priced
   * per sample interval), everyone else as day lines under the key '' (not a user name).
   */
  usage: Usage;
}

interface Row {
  kind: 'raw' | 'rolled';
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

/** Usage of the day-aligned [from, to) for `filter`, summed per day across users (one query, plus the sampled users' sessions). */
export async function loadDaily(
  db: Kysely<UsageDB>,
  filter: UsageFilter,
  range: { from: number; to: number; now: Date; cards: readonly RateCard[] },
): Promise<DailyUsage> {
  const where = filterSql(filter);
  const empty: DailyUsage = { usage: { sessionsByUser: new Map(), rolledByUser: new Map() } };
  if (where === null || range.to <= range.from) return empty;
  const { from, to, now, cards } = range;
  // A day's line is dated by its start: a range cutting a day would misdate (and drop) its pieces.
  if (from % DAY_MS !== 0 || to % DAY_MS !== 0) throw new Error('loadDaily: the range must be whole UTC days');
  const sampled = (
    await db.selectFrom('measured_samples').select('user_name').distinct().where('at', '>', new Date(from)).where('at', '<', new Date(to + SAMPLE_SLACK_MS)).execute()
  ).map((r) => r.user_name);
  const and = where === true ? sql`` : sql`and ${where}`;
  const notSampled = sampled.length ? sql`where not (user_name = any(${sampled}::text[]))` : sql``;
  // Raw pieces are summed per day and shape (an integer standing for profile, resources and groups), then named.
  const rows = await sql<Row>`
    with ${piecesSource(filter, { from: new Date(from), to: new Date(to), now, cards })},
    r as (
      select day, profile, resources::text as resources, groups::text as groups, user_name, sessions, seconds, billed_seconds, cpu_extra, gib_extra
      from daily_usage where day >= ${isoDay(ceilDay(from))} and day < ${isoDay(ceilDay(to))} ${and}
    ),
    a as (
      select day, shape, count(*) as n, sum(secs) as seconds, coalesce(sum(ceil(secs / inc - 0.000000001) * inc), 0) as billed
      from q ${notSampled} group by day, shape
    )
    select 'raw' as kind, to_char(a.day at time zone 'UTC', 'YYYY-MM-DD') as day, h.profile, h.resources::text as resources, h.groups::text as groups,
           a.n::text as n, a.seconds::text as seconds, a.billed::text as billed, null as cpu_extra, null as gib_extra
    from a join usage_shapes h on h.id = a.shape
    union all
    select 'rolled', day::text, profile, resources, groups, sum(sessions)::text, sum(seconds)::text, sum(billed_seconds)::text, sum(cpu_extra)::text, sum(gib_extra)::text
    from r group by day, profile, resources, groups`.execute(db);

  const lines: RolledUsage[] = [];
  const parsed = new Map<string, unknown>();
  const json = <T>(s: string): T => {
    let v = parsed.get(s);
    if (v === undefined) parsed.set(s, (v = JSON.parse(s)));
    return v as T;
  };
  for (const r of rows.rows) {
    const day = Date.parse(`${r.day.slice(0, 10)}T00:00:00Z`);
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
  return { usage: { sessionsByUser, rolledByUser: new Map([['', lines]]) } };
}

/**
 * Distinct users with any usage, per day start (ms), for the whole day-aligned range [from, to):
 * raw pieces and rolled-up days, each user counted once a day.
 */
export async function loadActiveUsers(
  db: Kysely<UsageDB>,
  filter: UsageFilter,
  range: { from: number; to: number; now: Date; cards: readonly RateCard[] },
): Promise<Map<number, number>> {
  const { from, to, now, cards } = range;
  if (from % DAY_MS !== 0 || to % DAY_MS !== 0) throw new Error('loadActiveUsers: the range must be whole UTC days');
  const where = filterSql(filter);
  if (where === null || to <= from) return new Map();
  const rows = await sql<{ day: string; n: string }>`
    with ${piecesSource(filter, { from: new Date(from), to: new Date(to), now, cards })}
    select to_char(day at time zone 'UTC', 'YYYY-MM-DD') as day, count(*)::text as n from (
      select day, user_name from q
      union
      select (day || 'T00:00:00Z')::timestamptz, user_name from daily_usage
      where day >= ${isoDay(from)} and day < ${isoDay(to)} ${where === true ? sql`` : sql`and ${where}`}
    ) a group by day`.execute(db);
  return new Map(rows.rows.map((r) => [Date.parse(`${r.day}T00:00:00Z`), Number(r.n)]));
}
