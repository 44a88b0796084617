/** Reconciliation and retention on the real database engine (Postgres with DATABASE_URL, else PGlite). */
import fc from 'fast-check';
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { rollupSessions } from '../src/retention.js';
import { sessionsRepository } from '../src/sessions-repository.js';
import type { ObservedServer } from '../src/sessions-repository.js';
import type { UsageDB } from '../src/usage.table.js';
import { openUsageDatabase } from './fixtures/database.js';
import type { UsageDatabase } from './fixtures/database.js';

let usage: UsageDatabase;
let db: Kysely<UsageDB>;

beforeAll(async () => {
  usage = await openUsageDatabase();
  db = usage.db;
}, 60_000);
afterAll(async () => {
  await usage?.close();
});
beforeEach(async () => {
  await db.deleteFrom('sessions').execute();
  await db.deleteFrom('daily_usage').execute();
});

const res = { cpuGuarantee: 1, cpuLimit: 1, memGuaranteeGiB: 2, memLimitGiB: 2, gpus: 0 };
const obs = (user: string, server: string, started: string): ObservedServer => ({
  user,
  server,
  started: new Date(started),
  profile: 'small',
  userOptions: { profile: 'small' },
  resources: res,
  groups: ['g'],
  lastActivity: null,
});

describe('reconcile', () => {
  it('property: any sequence of polls (repeats, gaps, restarts) yields one session per (user, server, start)', async () => {
    const starts = ['2026-03-01T00:00:00Z', '2026-03-01T01:00:00Z', '2026-03-01T02:00:00Z'];
    const servers = fc.array(fc.record({ user: fc.constantFrom('ann', 'bo', 'çé@x.org'), server: fc.constantFrom('', 'gpu'), start: fc.constantFrom(...starts) }), { maxLength: 6 });
    await fc.assert(
      fc.asyncProperty(fc.array(servers, { minLength: 1, maxLength: 6 }), async (polls) => {
        await db.deleteFrom('sessions').execute();
        const seen = new Set<string>();
        let t = Date.parse('2026-03-01T03:00:00Z');
        for (const poll of polls) {
          // The hub never lists one server twice.
          const unique = new Map(poll.map((p) => [JSON.stringify([p.user, p.server]), p]));
          const observed = [...unique.values()].map((p) => obs(p.user, p.server, p.start));
          for (const o of observed) seen.add(JSON.stringify([o.user, o.server, o.started.getTime()]));
          t += 30_000;
          const r = await sessionsRepository(db).reconcile(observed, new Date(t));
          expect(r.locked).toBe(true);
        }
        const rows = await db.selectFrom('sessions').select(['user_name', 'server_name', 'started', 'stopped', 'last_seen']).execute();
        expect(rows).toHaveLength(seen.size);
        for (const r of rows) if (r.stopped) expect(new Date(r.stopped).getTime()).toBe(new Date(r.last_seen).getTime());
      }),
      { numRuns: 25 },
    );
  });

  it('a poll that fails mid-transaction leaves no trace', async () => {
    const repo = sessionsRepository(db);
    await repo.reconcile([obs('ann', '', '2026-03-01T00:00:00Z')], new Date('2026-03-01T00:01:00Z'));
    // Two rows for one identity in one poll violate the unique key: the whole poll rolls back.
    const bad = [obs('bo', '', '2026-03-01T00:00:00Z'), obs('bo', '', '2026-03-01T00:00:00Z')];
    await expect(repo.reconcile(bad, new Date('2026-03-01T00:02:00Z'))).rejects.toThrow();
    const rows = await db.selectFrom('sessions').select(['user_name', 'stopped']).execute();
    expect(rows).toEqual([{ user_name: 'ann', stopped: null }]);
  });
});

describe('retention', () => {
  it('rolls closed sessions into daily rows across midnight, once', async () => {
    const repo = sessionsRepository(db);
    await repo.reconcile([obs('ann', '', '2026-03-01T22:00:00Z')], new Date('2026-03-02T02:00:00Z'));
    await repo.reconcile([], new Date('2026-03-02T02:00:30Z'));
    const r = await rollupSessions(db, new Date('2026-04-01T00:00:00Z'));
    expect(r).toEqual({ sessions: 1, days: 2 });
    const days = await db.selectFrom('daily_usage').select(['day', 'seconds', 'cpu_seconds']).orderBy('day').execute();
    expect(days.map((d) => [d.day, Number(d.seconds), Number(d.cpu_seconds)])).toEqual([
      ['2026-03-01', 7200, 7200],
      ['2026-03-02', 7200, 7200],
    ]);
    expect(await rollupSessions(db, new Date('2026-04-01T00:00:00Z'))).toEqual({ sessions: 0, days: 0 });
    expect(await db.selectFrom('sessions').select('id').execute()).toEqual([]);
  });
});
