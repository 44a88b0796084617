import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import type { UsageDB } from './usage.table.js';

/**
 * Fold closed sessions that stopped before `before` into daily per-user rows (UTC days, per
 * profile) and delete them, in one transaction: a crash leaves either the raw rows or the rollup.
 * Rolled-up time is no longer rounded per session, so statements over such days use the daily
 * totals with the card's increment applied per day (see README-usage.md).
 */
export async function rollupSessions(db: Kysely<UsageDB>, before: Date): Promise<{ sessions: number; days: number }> {
  return db.transaction().execute(async (trx) => {
    const result = await sql<{ sessions: number; days: number }>`
      with gone as (
        delete from sessions where stopped is not null and stopped < ${before} returning *
      ), pieces as (
        select g.user_name, coalesce(g.profile, '') as profile, g.groups, g.resources,
               greatest(g.started, d.day) as a, least(g.stopped, d.day + interval '1 day') as b, d.day
        from gone g
        cross join lateral generate_series(date_trunc('day', g.started at time zone 'UTC') at time zone 'UTC',
                                           g.stopped, interval '1 day') as d(day)
      ), agg as (
        insert into daily_usage (user_name, day, profile, seconds, cpu_seconds, gib_seconds, gpu_seconds, sessions, groups)
        select user_name, to_char(day at time zone 'UTC', 'YYYY-MM-DD'), profile,
               sum(extract(epoch from (b - a)))::bigint,
               sum(extract(epoch from (b - a)) * coalesce((resources->>'cpuGuarantee')::float8, 0)),
               sum(extract(epoch from (b - a)) * coalesce((resources->>'memGuaranteeGiB')::float8, 0)),
               sum(extract(epoch from (b - a)) * coalesce((resources->>'gpus')::int, 0))::bigint,
               count(*)::int, max(groups::text)::jsonb
        from pieces where b > a
        group by user_name, day, profile
        on conflict (user_name, day, profile) do update set
          seconds = daily_usage.seconds + excluded.seconds,
          cpu_seconds = daily_usage.cpu_seconds + excluded.cpu_seconds,
          gib_seconds = daily_usage.gib_seconds + excluded.gib_seconds,
          gpu_seconds = daily_usage.gpu_seconds + excluded.gpu_seconds,
          sessions = daily_usage.sessions + excluded.sessions
        returning 1
      )
      select (select count(*) from gone)::int as sessions, (select count(*) from agg)::int as days`.execute(trx);
    return result.rows[0] ?? { sessions: 0, days: 0 };
  });
}
