/**
 * The course and hub charts are summed per day across users in SQL (daily-source.ts); they must
 * equal, to the cent, the per-user path they replaced: every user's usage cut at every day and
 * priced by `dailyBreakdown`. The fixture mixes raw and rolled-up days, a card change mid-month
 * (another increment and resource-hour pricing), sessions across midnight, an open session and a
 * user with measured samples. Runs on Postgres with DATABASE_URL, else PGlite.
 */
import { Decimal } from 'decimal.js';
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config.js';
import type { Resources } from '../../src/config.js';
import { dailyBreakdown, daysOf } from '../../src/dashboard/aggregate.js';
import { loadActiveUsers, loadDaily } from '../../src/dashboard/daily-source.js';
import { storeMeasured } from '../../src/measured.js';
import { monthStart, sortCards } from '../../src/pricing.js';
import { rollupSessions } from '../../src/retention.js';
import { loadUsage } from '../../src/usage-source.js';
import type { UsageFilter } from '../../src/usage-source.js';
import type { UsageDB } from '../../src/usage.table.js';
import { openUsageDatabase } from '../fixtures/database.js';
import type { UsageDatabase } from '../fixtures/database.js';

let usage: UsageDatabase;
let db: Kysely<UsageDB>;

const config = configSchema.parse({
  profiles: { small: { cpuGuarantee: 0.5, memGuaranteeGiB: 1 }, large: { cpuGuarantee: 2, memGuaranteeGiB: 8 } },
  rateCards: [
    { id: 'p', effectiveFrom: '2026-01-01', profileHour: { small: '0.05', large: '0.20' }, incrementSeconds: 60 },
    { id: 'r', effectiveFrom: '2026-10-15', mode: 'resource-hour', cpuHour: '0.03', gibHour: '0.004', incrementSeconds: 900 },
  ],
});
const cards = sortCards(config.rateCards);
const res = (cpu: number, mem: number): Resources => ({ cpuGuarantee: cpu, cpuLimit: cpu, memGuaranteeGiB: mem, memLimitGiB: mem, gpus: 0 });
const FROM = Date.UTC(2026, 9, 1);
const TO = Date.UTC(2026, 10, 1);
const NOW = new Date('2026-10-31T12:00:00Z');
const H = 3_600_000;
// Each user keeps their groups (the per-user path names a user's latest groups, the SQL path each day's).
const USERS: [string, string[]][] = [
  ['ann', ['a']],
  ['ben', ['a', 'b']],
  ['cat', ['b']],
  ['dan', []],
  ['eve', ['a']],
];

beforeAll(async () => {
  usage = await openUsageDatabase();
  db = usage.db;
  // A deterministic pseudo-random month: 1-3 sessions a day per user, some across midnight.
  let seed = 7;
  const rnd = (n: number) => ((seed = (seed * 48271) % 2147483647) % n);
  const rows = [];
  for (const [u, groups] of USERS) {
    for (let d = FROM - 2 * 86_400_000; d < TO; d += 86_400_000) {
      if (rnd(4) === 0) continue;
      for (let k = 0, n = 1 + rnd(3); k < n; k += 1) {
        const start = d + rnd(24 * 60) * 60_000 + rnd(60) * 1000 + rnd(1000);
        const stop = start + (5 + rnd(300)) * 60_000 + rnd(1000);
        const profile = rnd(2) ? 'small' : 'large';
        const open = u === 'eve' && d === TO - 86_400_000 * 2 && k === 0;
        rows.push({
          user_name: u,
          server_name: `s${k}`,
          started: new Date(start),
          profile,
          user_options: JSON.stringify({ profile }),
          resources: JSON.stringify(profile === 'small' ? res(0.5, 1) : res(2, 8)),
          groups: JSON.stringify(groups),
          first_seen: new Date(start),
          last_seen: new Date(open ? NOW.getTime() - H : stop),
          stopped: open ? null : new Date(stop),
          stop_observed: open ? null : new Date(stop),
          stop_source: open ? null : 'poll',
        });
      }
    }
    // One session over three midnights.
    rows.push({
      user_name: u, server_name: 'long', started: new Date(FROM + 9 * 86_400_000 + 20 * H), profile: 'small', user_options: '{}', resources: JSON.stringify(res(0.5, 1)),
      groups: JSON.stringify(groups), first_seen: new Date(FROM), last_seen: new Date(FROM + 12 * 86_400_000 + 3 * H), stopped: new Date(FROM + 12 * 86_400_000 + 3 * H),
      stop_observed: null, stop_source: 'poll',
    });
  }
  await db.insertInto('sessions').values(rows).execute();
  // ben uses more than he asked for in the second half (resource-hour card): priced per sample.
  for (let t = Date.UTC(2026, 9, 15); t < TO; t += 6 * H) {
    await storeMeasured(db, new Date(t), 1800, new Map([['ben', { cpuSeconds: 1800 * 3, memoryWorkingSetBytes: 12 * 2 ** 30, cpuRequest: 0, memoryRequestBytes: 0 }]]));
  }
  // The first ten days are rolled up.
  await rollupSessions(db, new Date(Date.UTC(2026, 9, 10)), config.rateCards);
}, 120_000);
afterAll(async () => {
  await usage?.close();
});

const one = new Decimal(1);
const weights = (groups: readonly string[]) => (groups.length ? groups.map((g) => ({ name: g, weight: one.div(groups.length) })) : [{ name: '(none)', weight: one }]);
const byName = (xs: { name: string; costs: string[] }[]) => [...xs].sort((a, b) => (a.name < b.name ? -1 : 1));

describe('per-day charts summed across users in SQL', () => {
  for (const [label, filter] of [['the whole hub', {}], ['one course', { groups: ['a'] }]] as [string, UsageFilter][]) {
    it(`equal the per-user path for ${label}, to the cent, with the same active users`, async () => {
      const perUser = await loadUsage(db, filter, { from: monthStart(FROM), to: TO, now: NOW, cards, cuts: [FROM, ...daysOf(FROM, TO)] });
      const want = dailyBreakdown(perUser, FROM, TO, cards, weights);
      const daily = await loadDaily(db, filter, { from: FROM, to: TO, now: NOW, cards });
      const active = await loadActiveUsers(db, filter, { from: FROM, to: TO, now: NOW, cards });
      const got = dailyBreakdown(daily.usage, FROM, TO, cards, weights);
      expect(daily.usage.sessionsByUser.has('ben')).toBe(true);
      expect((await db.selectFrom('daily_usage').select('day').execute()).length).toBeGreaterThan(10);
      expect(want.byDay.filter((d) => d.cost !== '0.00').length).toBeGreaterThan(25);
      expect(got.byDay).toEqual(want.byDay);
      expect(byName(got.byProfile.series)).toEqual(byName(want.byProfile.series));
      expect(byName(got.byGroup.series)).toEqual(byName(want.byGroup.series));
      expect(daysOf(FROM, TO).map((d) => active.get(d) ?? 0)).toEqual(want.active);
    });
  }
});
