/**
 * Closed sessions are cut into day pieces ahead of time by triggers (pieces.ts and its migration).
 * Every read that used to cut sessions on the fly (`piecesCte`) now reads those pieces, so they
 * must be the very same pieces, to the bit, whoever writes the sessions and however: inserted open
 * or closed, closed later, reopened, regrouped, deleted, truncated. And `piecesSource` must give
 * what the on-the-fly cut gives for any range, including ranges that cut a day (budget windows).
 * Runs on Postgres with DATABASE_URL, else PGlite.
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config.js';
import { piecesSource } from '../src/pieces.js';
import { sortCards } from '../src/pricing.js';
import { piecesCte } from '../src/usage-source.js';
import type { UsageFilter } from '../src/usage-source.js';
import type { UsageDB } from '../src/usage.table.js';
import { openUsageDatabase } from './fixtures/database.js';
import type { UsageDatabase } from './fixtures/database.js';

let usage: UsageDatabase;
let db: Kysely<UsageDB>;

const config = configSchema.parse({
  rateCards: [
    { id: 'p', effectiveFrom: '2026-01-01', profileHour: { small: '0.05' }, incrementSeconds: 60 },
    { id: 'r', effectiveFrom: '2026-10-15', mode: 'resource-hour', cpuHour: '0.03', gibHour: '0.004', incrementSeconds: 900 },
  ],
});
const cards = sortCards(config.rateCards);
const DAY = 86_400_000;
const BASE = Date.UTC(2026, 9, 10);
const NOW = new Date(BASE + 12 * DAY + 5 * 3_600_000 + 123);

// A deterministic pseudo-random generator, so a failure can be replayed.
let seed = 11;
const rnd = (n: number) => ((seed = (seed * 48271) % 2147483647) % n);

function randomSession(i: number) {
  const started = BASE + rnd(10 * DAY) + rnd(1000);
  // Up to three days long: many cross one or more midnights; a few are empty (start = stop).
  const length = rnd(8) === 0 ? 0 : rnd(3 * DAY) + rnd(1000);
  const open = rnd(5) === 0;
  const user = `u${rnd(6)}`;
  const groups = [['a'], ['b'], ['a', 'b'], []][rnd(4)]!;
  const lastActivity = rnd(3) === 0 ? null : new Date(started + rnd(length + 1));
  return {
    user_name: user,
    server_name: `s${i}`,
    started: new Date(started),
    profile: rnd(4) === 0 ? null : ['small', 'large'][rnd(2)]!,
    user_options: '{}',
    resources: JSON.stringify({ cpuGuarantee: [0.5, 2][rnd(2)], cpuLimit: 2, memGuaranteeGiB: 1, memLimitGiB: 2, gpus: 0 }),
    groups: JSON.stringify(groups),
    last_activity: lastActivity,
    first_seen: new Date(started),
    last_seen: new Date(Math.min(started + length, NOW.getTime() - 1000)),
    stopped: open ? null : new Date(started + length),
    stop_observed: open ? null : new Date(started + length + 30_000),
    stop_source: open ? null : 'poll',
  };
}

interface Piece {
  session_id: string;
  day: string;
  secs: number;
  idle: number;
  profile: string;
  resources: string;
  groups: string;
}

/** The stored pieces, with what their shape stands for. */
async function stored(): Promise<Piece[]> {
  const r = await sql<Piece>`
    select p.session_id::text as session_id, to_char(p.day at time zone 'UTC', 'YYYY-MM-DD') as day, p.secs, p.idle,
           h.profile, h.resources::text as resources, h.groups::text as groups
    from session_pieces p join usage_shapes h on h.id = p.shape
    order by 1, 2`.execute(db);
  return r.rows;
}

/** The closed sessions' pieces cut on the fly, as every read did before they were stored. */
async function onTheFly(): Promise<Piece[]> {
  const r = await sql<Piece>`
    with ${piecesCte(sql`stopped is not null`, { now: NOW, cards })}
    select q.id::text as session_id, to_char(q.day at time zone 'UTC', 'YYYY-MM-DD') as day, q.secs,
           greatest(0, date_part('epoch', least(s.stopped, q.day + interval '1 day') - greatest(coalesce(s.last_activity, s.started), s.started, q.day))) as idle,
           q.profile, q.resources, q.groups
    from q join sessions s on s.id = q.id
    order by 1, 2`.execute(db);
  return r.rows;
}

beforeAll(async () => {
  usage = await openUsageDatabase();
  db = usage.db;
  // Inserted in two statements, so the trigger sees a batch each time.
  await db.insertInto('sessions').values(Array.from({ length: 150 }, (_, i) => randomSession(i))).execute();
  await db.insertInto('sessions').values(Array.from({ length: 150 }, (_, i) => randomSession(150 + i))).execute();
});

afterAll(async () => {
  await usage?.close();
});

describe('session pieces kept by triggers', () => {
  it('equal the on-the-fly cut after inserts, closes, reopens, regrouping and deletes', async () => {
    const first = await stored();
    expect(first.length).toBeGreaterThan(300);
    // Some pieces are only a part of their day, and some sessions span several days.
    expect(new Set(first.map((p) => p.session_id)).size).toBeLessThan(first.length);
    expect(first).toEqual(await onTheFly());

    // The poller closes open sessions; a partial listing reopens closed ones; groups change.
    await sql`update sessions set stopped = last_seen, stop_observed = last_seen, stop_source = 'poll' where stopped is null and id % 2 = 0`.execute(db);
    await sql`update sessions set stopped = null, stop_observed = null, stop_source = null where stopped is not null and id % 7 = 0`.execute(db);
    await sql`update sessions set groups = '["c"]'::jsonb where id % 5 = 0`.execute(db);
    await sql`delete from sessions where id % 11 = 0`.execute(db);
    const after = await stored();
    expect(after).toEqual(await onTheFly());
    expect(after.some((p) => p.groups === '["c"]')).toBe(true);
    // Open sessions have no pieces: they are cut when read.
    const open = await sql<{ n: number }>`select count(*)::int as n from session_pieces p join sessions s on s.id = p.session_id where s.stopped is null`.execute(db);
    expect(open.rows[0]!.n).toBe(0);
  });

  for (const [label, filter] of [
    ['everyone', {}],
    ['one group', { groups: ['a'] }],
    ['some users', { users: ['u1', 'u3'] }],
  ] as [string, UsageFilter][]) {
    it(`read through piecesSource equal the on-the-fly cut for ${label}, over ranges that cut days or not`, async () => {
      const ranges = [
        [BASE, BASE + 10 * DAY],
        [BASE + 2 * DAY, BASE + 3 * DAY],
        // A budget window: from a moment of a day to the end of today.
        [BASE + 3 * DAY + 12_345_678, BASE + 13 * DAY],
        [BASE + 4 * DAY + 1, BASE + 4 * DAY + 7_200_000],
        [BASE + 5 * DAY + 3_600_000, BASE + 8 * DAY + 60_000],
      ];
      let compared = 0;
      for (const [from, to] of ranges) {
        const range = { from: new Date(from!), to: new Date(to!), now: NOW, cards };
        const fast = await sql<{ user_name: string; day: string; n: number; secs: number; billed: number; idle: number }>`
          with ${piecesSource(filter, range)}
          select user_name, to_char(day at time zone 'UTC', 'YYYY-MM-DD') as day, count(*)::int as n, sum(secs) as secs,
                 coalesce(sum(ceil(secs / inc - 0.000000001) * inc), 0)::float8 as billed, sum(idle) as idle
          from q group by 1, 2 order by 1, 2`.execute(db);
        // The reference: every session matching the filter, cut on the fly and clipped to the range.
        const f = filterSqlReference(filter);
        const slow = await sql<{ user_name: string; day: string; n: number; secs: number; billed: number; idle: number }>`
          with ${piecesCte(sql`started < ${range.to} and (stopped is null or stopped > ${range.from}) ${f}`, range)}
          select q.user_name, to_char(q.day at time zone 'UTC', 'YYYY-MM-DD') as day, count(*)::int as n, sum(q.secs) as secs,
                 coalesce(sum(ceil(q.secs / q.inc - 0.000000001) * q.inc), 0)::float8 as billed,
                 sum(greatest(0, date_part('epoch', least(coalesce(s.stopped, least(s.last_seen, ${NOW})), ${range.to}, q.day + interval '1 day')
                   - greatest(coalesce(s.last_activity, s.started), s.started, ${range.from}, q.day)))) as idle
          from q join sessions s on s.id = q.id group by 1, 2 order by 1, 2`.execute(db);
        // Pieces and billed seconds are equal exactly. Seconds are summed as doubles in another
        // order, so they agree to the millisecond every piece is measured in (each piece is exact).
        const ms = (rows: typeof fast.rows) => rows.map((r) => ({ ...r, secs: Math.round(r.secs * 1000), idle: Math.round(r.idle * 1000) }));
        expect(ms(fast.rows)).toEqual(ms(slow.rows));
        compared += slow.rows.length;
      }
      expect(compared).toBeGreaterThan(10);
    });
  }

  it('are emptied with the sessions table', async () => {
    await sql`truncate sessions`.execute(db);
    expect(await stored()).toEqual([]);
  });
});

/** The filter written out by hand over the sessions table (not through filterSql, which piecesSource uses). */
function filterSqlReference(f: UsageFilter) {
  if (f.users) return sql`and user_name in (${sql.join(f.users)})`;
  if (f.groups) return sql`and groups ?| ${sql.val([...f.groups])}::text[]`;
  return sql``;
}
