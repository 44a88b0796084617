/**
 * Closed sessions, cut ahead of time into the UTC-day pieces that pricing bills (see `piecesCte`).
 *
 * Cutting 300,000 sessions into days and grouping them by their JSON profile, resources and groups
 * costs Postgres well over a second per pass, and a dashboard makes several passes. A closed
 * session's pieces never change, so the database keeps them in `session_pieces`, one narrow row
 * per session and day, and each distinct (profile, resources, groups) once in `usage_shapes`. A
 * pass is then a scan of small rows grouped by integer keys.
 *
 * Triggers on `sessions` (made by the 2026-11-22T03-30-00 migration) keep the pieces exact
 * whoever writes the sessions (the poller, a rollup, an import in SQL): inserted or updated rows
 * get their pieces recomputed, deleted or truncated rows lose them. Open sessions have no pieces; readers cut them on the fly, as before. The table holds
 * seconds, not money: a piece's increment is looked up from the rate cards when it is read.
 */
import { sql } from 'kysely';
import type { RawBuilder } from 'kysely';
import type { RateCard } from './config.js';
import { DAY_MS } from './pricing.js';
import { filterSql } from './usage-source.js';
import type { UsageFilter } from './usage-source.js';

const dayStart = (t: number) => Math.floor(t / DAY_MS) * DAY_MS;

/**
 * SQL for CTEs ending in `q` (after a `with`): the pieces inside [from, to) of the sessions
 * matching `filter`, one row per piece with `user_name`, `shape`, `started`, `day`, `secs`, `idle`
 * (seconds after the last activity) and `inc`, the increment of the day's card (null: no card, so
 * free). Whole days of closed sessions come from `session_pieces`. Open sessions, billed up to the
 * last poll that saw them (never beyond `now`), and the parts of closed sessions in a first or last
 * day that the range only partly covers, are cut here, clipped to the range. `except`: users left out.
 */
export function piecesSource(filter: UsageFilter, opts: { from: Date; to: Date; now: Date; cards: readonly RateCard[]; except?: readonly string[] }): RawBuilder<unknown> {
  const sorted = [...opts.cards].sort((x, y) => (x.effectiveFrom < y.effectiveFrom ? -1 : 1));
  const from = opts.from.getTime();
  const to = opts.to.getTime();
  // Whole days [first, last) come from the table; [from, first) and [last, to) are partial days.
  const first = Math.min(dayStart(from) === from ? from : dayStart(from) + DAY_MS, to);
  const last = Math.max(dayStart(to), first);
  const onShapes = filterSql(filter, 'shape');
  const onSessions = filterSql(filter);
  const except = opts.except?.length ? sql`and not (user_name = any(${[...opts.except]}::text[]))` : sql``;
  // filterSql gives null when nothing can match; callers check that first, so `false` is only a guard.
  const and = (w: ReturnType<typeof filterSql>) => (w === null ? sql`and false` : w === true ? sql`` : sql`and ${w}`);
  const cut = (lo: number, hi: number, which: RawBuilder<unknown>) => sql`
        select user_name, started, profile, resources, groups,
               greatest(date_trunc('milliseconds', started), ${new Date(lo)}::timestamptz) as a,
               least(date_trunc('milliseconds', coalesce(stopped, least(last_seen, ${opts.now}))), ${new Date(hi)}::timestamptz) as b,
               greatest(coalesce(last_activity, started), started, ${new Date(lo)}::timestamptz) as i
        from sessions
        where ${which} and started < ${new Date(hi)} ${and(onSessions)} ${except}`;
  const parts = [cut(from, to, sql`stopped is null`)];
  if (from < first) parts.push(cut(from, first, sql`stopped is not null and stopped > ${opts.from}`));
  if (last < to) parts.push(cut(last, to, sql`stopped is not null and stopped > ${new Date(last)}`));
  return sql`c as (
      select user_name, shape, started, day, secs, idle from session_pieces
      where day >= ${new Date(first)} and day < ${new Date(last)} ${and(onShapes)} ${except}
    ), o as (
      select s.user_name, h.id as shape, s.started, d.day,
             date_part('epoch', least(s.b, d.day + interval '1 day') - greatest(s.a, d.day)) as secs,
             greatest(0, date_part('epoch', least(s.b, d.day + interval '1 day') - greatest(s.i, d.day))) as idle
      from (${sql.join(parts, sql` union all `)}) s
      join usage_shapes h on h.profile = coalesce(s.profile, '') and h.resources = s.resources and h.groups = s.groups
      cross join lateral generate_series(date_trunc('day', s.a, 'UTC'), s.b, interval '1 day') as d(day)
      where s.b > s.a
    ), q as (
      select user_name, shape, started, day, secs, idle,
             (${sorted.map((c) => c.incrementSeconds)}::int[])[width_bucket(day, ${sorted.map((c) => `${c.effectiveFrom}T00:00:00Z`)}::timestamptz[])] as inc
      from (select * from c union all select * from o where secs > 0) x
    )`;
}
