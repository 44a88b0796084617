import { Decimal } from 'decimal.js';
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import type { RateCard } from './config.js';
import { dayPieces, sortCards } from './pricing.js';
import type { PricedSession } from './pricing.js';
import { loadSessions, piecesCte } from './usage-source.js';
import type { UsageDB } from './usage.table.js';

export { DEFAULT_RAW_DAYS } from './config.js';

interface DayRow {
  user_name: string;
  day: string;
  profile: string;
  resources: string;
  seconds: Decimal;
  billed: number;
  cpuExtra: Decimal;
  gibExtra: Decimal;
  cpuSeconds: number;
  gibSeconds: number;
  gpuSeconds: number;
  sessions: number;
  groups: string;
  groupsAt: number;
}

const ADD_ON_CONFLICT = sql`on conflict on constraint daily_usage_pk do update set
  seconds = daily_usage.seconds + excluded.seconds,
  billed_seconds = daily_usage.billed_seconds + excluded.billed_seconds,
  cpu_extra = daily_usage.cpu_extra + excluded.cpu_extra,
  gib_extra = daily_usage.gib_extra + excluded.gib_extra,
  cpu_seconds = daily_usage.cpu_seconds + excluded.cpu_seconds,
  gib_seconds = daily_usage.gib_seconds + excluded.gib_seconds,
  gpu_seconds = daily_usage.gpu_seconds + excluded.gpu_seconds,
  sessions = daily_usage.sessions + excluded.sessions,
  groups = excluded.groups`;

/** Day rows for sessions without measured samples, computed and written by the database. */
async function rollupInSql(trx: Kysely<UsageDB>, ids: readonly string[], sorted: readonly RateCard[]): Promise<number> {
  const r = await sql<{ n: number }>`
    with ${piecesCte(sql`id = any(${ids.map(Number)}::bigint[])`, { now: new Date(), cards: sorted })},
    ins as (
      insert into daily_usage (user_name, day, profile, resources, seconds, billed_seconds, cpu_extra, gib_extra, cpu_seconds, gib_seconds, gpu_seconds, sessions, groups)
      select user_name, to_char(day at time zone 'UTC', 'YYYY-MM-DD'), profile, resources::jsonb, sum(secs),
             coalesce(sum(ceil(secs / inc - 0.000000001) * inc), 0), 0, 0,
             sum(secs * coalesce((resources::jsonb->>'cpuGuarantee')::float8, 0)),
             sum(secs * coalesce((resources::jsonb->>'memGuaranteeGiB')::float8, 0)),
             round(sum(secs * coalesce((resources::jsonb->>'gpus')::float8, 0))),
             count(*), ((array_agg(groups order by started desc, id desc))[1])::jsonb
      from q group by user_name, day, profile, resources
      ${ADD_ON_CONFLICT}
      returning 1
    )
    select count(*)::int as n from ins`.execute(trx);
  return Number(r.rows[0]?.n ?? 0);
}

/**
 * Fold closed sessions that stopped before `before` into daily per-user rows and delete them, a
 * batch per transaction: a crash leaves each session either raw or rolled up, never both or neither.
 * The rows hold the same UTC-day pieces statements price raw sessions with (rounded to the card
 * of each day, plus measured use above the request), so a statement reads the same either way.
 * Rate cards changed afterwards do not re-round rolled-up time (see hub/README-usage.md).
 */
export async function rollupSessions(
  db: Kysely<UsageDB>,
  before: Date,
  cards: readonly RateCard[] = [],
  opts: { batch?: number } = {},
): Promise<{ sessions: number; days: number }> {
  const sorted = sortCards(cards);
  const batch = opts.batch ?? 20_000;
  let sessions = 0;
  let days = 0;
  // A cursor, so each batch starts past the rows the previous ones deleted instead of rescanning them.
  let after = 0n;
  for (;;) {
    const r = await db.transaction().execute(async (trx) => {
      const picked = await sql<{ id: string; user_name: string; started: Date; stopped: Date }>`
        select id, user_name, started, stopped from sessions
        where stopped is not null and stopped < ${before} and id > ${after}
        order by id limit ${batch} for update skip locked`.execute(trx);
      if (picked.rows.length === 0) return { sessions: 0, days: 0 };
      const ids = picked.rows.map((p) => String(p.id));
      after = BigInt(ids.at(-1)!);
      const users = [...new Set(picked.rows.map((p) => p.user_name))];
      let from = Infinity;
      let to = -Infinity;
      for (const p of picked.rows) {
        from = Math.min(from, new Date(p.started).getTime());
        to = Math.max(to, new Date(p.stopped).getTime());
      }
      // Users with measured samples go through the statement loader, so measured extras are shared
      // exactly as raw statements share them; everyone else is cut into day pieces in SQL.
      const sampled = (
        await trx
          .selectFrom('measured_samples')
          .select('user_name')
          .distinct()
          .where('user_name', 'in', users)
          .where('at', '>', new Date(from))
          .where('at', '<', new Date(to + 3_600_000))
          .execute()
      ).map((r) => r.user_name);
      const sqlIds = picked.rows.filter((p) => !sampled.includes(p.user_name)).map((p) => String(p.id));
      const sqlDays = sqlIds.length ? await rollupInSql(trx, sqlIds, sorted) : 0;
      const loaded = sampled.length ? await loadSessions(trx, { users: sampled }, from, to + 1, new Date(to + 1)) : new Map<string, PricedSession[]>();
      const wanted = new Set(picked.rows.map((p) => JSON.stringify([p.user_name, new Date(p.started).getTime(), new Date(p.stopped).getTime()])));
      const rows = new Map<string, DayRow>();
      for (const [user, list] of loaded) {
        for (const s of list) {
          if (!wanted.has(JSON.stringify([user, s.start.getTime(), s.end.getTime()]))) continue;
          const resources = JSON.stringify({
            cpuGuarantee: s.resources.cpuGuarantee,
            cpuLimit: s.resources.cpuLimit,
            memGuaranteeGiB: s.resources.memGuaranteeGiB,
            memLimitGiB: s.resources.memLimitGiB,
            gpus: s.resources.gpus,
            ...(s.resources.pricePerHour !== undefined ? { pricePerHour: s.resources.pricePerHour } : {}),
          });
          const profile = s.profile ?? '';
          for (const piece of dayPieces(s, -Infinity, Infinity, sorted)) {
            const day = new Date(piece.day).toISOString().slice(0, 10);
            const key = JSON.stringify([user, day, profile, resources]);
            const row = rows.get(key) ?? { user_name: user, day, profile, resources, seconds: new Decimal(0), billed: 0, cpuExtra: new Decimal(0), gibExtra: new Decimal(0), cpuSeconds: 0, gibSeconds: 0, gpuSeconds: 0, sessions: 0, groups: '[]', groupsAt: -Infinity };
            row.seconds = row.seconds.plus(piece.seconds);
            row.billed += piece.billedSeconds;
            row.cpuExtra = row.cpuExtra.plus(piece.cpuExtra);
            row.gibExtra = row.gibExtra.plus(piece.gibExtra);
            row.cpuSeconds += piece.seconds * s.resources.cpuGuarantee;
            row.gibSeconds += piece.seconds * s.resources.memGuaranteeGiB;
            row.gpuSeconds += piece.seconds * s.resources.gpus;
            row.sessions += 1;
            if (s.start.getTime() >= row.groupsAt) [row.groupsAt, row.groups] = [s.start.getTime(), JSON.stringify(s.groups)];
            rows.set(key, row);
          }
        }
      }
      const values = [...rows.values()];
      for (let i = 0; i < values.length; i += 1000) {
        await trx
          .insertInto('daily_usage')
          .values(
            values.slice(i, i + 1000).map((v) => ({
              user_name: v.user_name,
              day: v.day,
              profile: v.profile,
              resources: v.resources,
              seconds: v.seconds.toString(),
              billed_seconds: v.billed,
              cpu_extra: v.cpuExtra.toString(),
              gib_extra: v.gibExtra.toString(),
              cpu_seconds: v.cpuSeconds,
              gib_seconds: v.gibSeconds,
              gpu_seconds: Math.round(v.gpuSeconds),
              sessions: v.sessions,
              groups: v.groups,
            })),
          )
          .onConflict((oc) =>
            oc.constraint('daily_usage_pk').doUpdateSet({
              seconds: sql`daily_usage.seconds + excluded.seconds`,
              billed_seconds: sql`daily_usage.billed_seconds + excluded.billed_seconds`,
              cpu_extra: sql`daily_usage.cpu_extra + excluded.cpu_extra`,
              gib_extra: sql`daily_usage.gib_extra + excluded.gib_extra`,
              cpu_seconds: sql`daily_usage.cpu_seconds + excluded.cpu_seconds`,
              gib_seconds: sql`daily_usage.gib_seconds + excluded.gib_seconds`,
              gpu_seconds: sql`daily_usage.gpu_seconds + excluded.gpu_seconds`,
              sessions: sql`daily_usage.sessions + excluded.sessions`,
              groups: sql`excluded.groups`,
            }),
          )
          .execute();
      }
      for (let i = 0; i < ids.length; i += 1000) await trx.deleteFrom('sessions').where('id', 'in', ids.slice(i, i + 1000)).execute();
      return { sessions: ids.length, days: values.length + sqlDays };
    });
    sessions += r.sessions;
    days += r.days;
    if (r.sessions < batch) return { sessions, days };
  }
}
