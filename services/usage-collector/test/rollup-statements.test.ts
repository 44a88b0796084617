/**
 * Statements priced from raw sessions, from daily rollups, and from a mix: the same to the cent.
 * Also resource-hour pricing of max(request, measured use) against a hand-computed fixture.
 * Runs on the real database engine (Postgres with DATABASE_URL, else PGlite).
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { evaluateBudgets } from '../src/budgets.js';
import { configSchema, resolveConfig } from '../src/config.js';
import type { Resources, UsageCollectorConfig } from '../src/config.js';
import { storeMeasured } from '../src/measured.js';
import { buildStatement, monthStart, sortCards } from '../src/pricing.js';
import { DEFAULT_RAW_DAYS, rollupSessions } from '../src/retention.js';
import { loadUsage } from '../src/usage-source.js';
import type { UsageFilter } from '../src/usage-source.js';
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
  for (const t of ['sessions', 'daily_usage', 'measured_samples'] as const) await db.deleteFrom(t).execute();
});

const T = (s: string) => new Date(s);
const res = (cpu: number, mem: number, gpus = 0): Resources => ({ cpuGuarantee: cpu, cpuLimit: cpu, memGuaranteeGiB: mem, memLimitGiB: mem, gpus });

async function insertSession(user: string, server: string, profile: string, resources: Resources, groups: string[], start: Date, stop: Date | null, lastSeen = stop) {
  await db
    .insertInto('sessions')
    .values({
      user_name: user,
      server_name: server,
      started: start,
      profile,
      user_options: JSON.stringify({ profile }),
      resources: JSON.stringify(resources),
      groups: JSON.stringify(groups),
      first_seen: start,
      last_seen: lastSeen!,
      stopped: stop,
      stop_observed: stop,
      stop_source: stop ? 'poll' : null,
    })
    .execute();
}

/** What GET api/statements does for an admin: load (raw + rollups) and price. */
async function statement(config: UsageCollectorConfig, from: number, to: number, filter: UsageFilter = {}, now = T('2027-01-01T00:00:00Z')) {
  const cards = sortCards(config.rateCards);
  const loaded = await loadUsage(db, filter, { from: monthStart(from), to, now, cards, cuts: [from] });
  return buildStatement({ ...loaded, from, to, cards, currency: config.currency, rule: config.attribution.rule, order: config.attribution.groupOrder });
}

describe('resource-hour pricing of max(request, measured use)', () => {
  const config = resolveConfig(configSchema.parse({
    rateCards: [{ id: 'r', effectiveFrom: '2026-01-01', mode: 'resource-hour', cpuHour: '0.25', gibHour: '0.01', incrementSeconds: 60 }],
  }));

  it('equals a hand-computed fixture to the cent, with two servers sharing one user’s samples', async () => {
    // A: 10:00-12:00, 1 CPU + 2 GiB requested. B (named): 10:00-11:00, 1 CPU, no memory request.
    await insertSession('ann', '', 'x', res(1, 2), ['g'], T('2026-10-05T10:00:00Z'), T('2026-10-05T12:00:00Z'));
    await insertSession('ann', 'b', 'x', res(1, 0), ['g'], T('2026-10-05T10:00:00Z'), T('2026-10-05T11:00:00Z'));
    const sample = (at: string, cpuSeconds: number, gib: number) =>
      storeMeasured(db, T(at), 1800, new Map([['ann', { cpuSeconds, memoryWorkingSetBytes: gib * 2 ** 30, cpuRequest: 0, memoryRequestBytes: 0 }]]));
    // 10:00-10:30: 3 cores for 2 requested → 1 core extra (0.5 each, by request) = 1800 core-s; 1 GiB < 2 requested.
    await sample('2026-10-05T10:30:00Z', 5400, 1);
    // 10:30-11:00: 0.5 core, under; 5 GiB, all of it A's share (B requests none) → 3 GiB extra = 5400 GiB-s.
    await sample('2026-10-05T11:00:00Z', 900, 5);
    // 11:00-11:30: only A runs; 4 cores → 3 extra = 5400 core-s.
    await sample('2026-10-05T11:30:00Z', 7200, 0);
    // 12:00-12:30: no session runs, so nothing is billed.
    await sample('2026-10-05T12:30:00Z', 36_000, 64);
    // Someone else's samples never reach ann.
    await storeMeasured(db, T('2026-10-05T10:30:00Z'), 1800, new Map([['ann2', { cpuSeconds: 99_999, memoryWorkingSetBytes: 2 ** 40, cpuRequest: 0, memoryRequestBytes: 0 }]]));

    // Requests: A 2 h × (1×0.25 + 2×0.01) = 0.54; B 1 h × 0.25 = 0.25.
    // Above the requests: 7200 core-s = 2 core-h × 0.25 = 0.50; 5400 GiB-s = 1.5 GiB-h × 0.01 = 0.015.
    // 0.54 + 0.25 + 0.50 + 0.015 = 1.305 → 1.31 (half up; a binary float would say 1.3049999…).
    const s = await statement(config, Date.UTC(2026, 9, 1), Date.UTC(2026, 10, 1));
    expect(s.users).toEqual([{ user: 'ann', groups: ['g'], hours: '3.0000', gross: '1.31', allowance: '0.00', net: '1.31' }]);

    // Profile-hour cards ignore measured use; so does a resource card when no samples exist.
    await db.deleteFrom('measured_samples').execute();
    expect((await statement(config, Date.UTC(2026, 9, 1), Date.UTC(2026, 10, 1))).users[0]!.gross).toBe('0.79');
  });
});

describe('statements from rollups', () => {
  // Two cards (the second from the 15th, with another increment), a monthly allowance, three
  // groups, the split rule, sessions across midnight and month ends, measured samples.
  const config = resolveConfig(configSchema.parse({
    currency: 'EUR',
    rateCards: [
      { id: 'a', effectiveFrom: '2026-01-01', mode: 'resource-hour', cpuHour: '0.031', gibHour: '0.0043', gpuHour: '0.9', incrementSeconds: 60, freeAllowancePerMonth: '0.75' },
      { id: 'b', effectiveFrom: '2026-10-15', mode: 'resource-hour', cpuHour: '0.037', gibHour: '0.0041', gpuHour: '1.1', incrementSeconds: 900, freeAllowancePerMonth: '0.75' },
    ],
    attribution: { rule: 'split', groupOrder: ['phys'] },
  }));
  const users = ['ann', 'ben', 'cat', 'dan', 'eve', 'fay', 'gus', 'hal', 'ida'];
  // These two have no measured samples: their raw sessions are summed in SQL, the others' in code.
  const unmeasured = new Set(['hal', 'ida']);
  const groupsOf = (i: number) => [['phys'], ['chem'], ['phys', 'chem'], ['bio', 'chem', 'phys'], []][i % 5]!;

  async function fixture(): Promise<void> {
    // A small deterministic generator, so the fixture is varied but the same on every run.
    let x = 12345;
    const rnd = (n: number) => ((x = (x * 1103515245 + 12345) % 2 ** 31), x % n);
    for (const [i, user] of users.entries()) {
      for (let k = 0; k < 14; k += 1) {
        const start = Date.UTC(2026, 8, 25) + rnd(45 * 86_400) * 1000 + rnd(1000);
        const length = (60 + rnd(30 * 3600)) * 1000 + rnd(1000);
        await insertSession(user, k % 3 === 0 ? 'named' : '', `p${k % 2}`, res([0.5, 1, 2][k % 3]!, [1, 4, 8][rnd(3)]!, k % 7 === 0 ? 1 : 0), groupsOf(i), new Date(start), new Date(start + length));
      }
      if (unmeasured.has(user)) continue;
      // Some measured samples, above and below the requests.
      const samples = new Map<string, { cpuSeconds: number; memoryWorkingSetBytes: number; cpuRequest: number; memoryRequestBytes: number }>();
      for (let k = 0; k < 40; k += 1) {
        samples.clear();
        samples.set(user, { cpuSeconds: rnd(3 * 1800), memoryWorkingSetBytes: rnd(12) * 2 ** 30 + rnd(2 ** 20), cpuRequest: 0, memoryRequestBytes: 0 });
        await storeMeasured(db, new Date(Date.UTC(2026, 9, 1) + rnd(31 * 48) * 1_800_000), 1800, samples);
      }
    }
  }

  const months = [
    [Date.UTC(2026, 8, 1), Date.UTC(2026, 9, 1)],
    [Date.UTC(2026, 9, 1), Date.UTC(2026, 10, 1)],
    [Date.UTC(2026, 10, 1), Date.UTC(2026, 11, 1)],
    // A custom, day-aligned period across the card change and a month end.
    [Date.UTC(2026, 9, 10), Date.UTC(2026, 10, 5)],
  ] as const;

  it('raw, partly rolled up and fully rolled up give identical statements to the cent', async () => {
    await fixture();
    const raw = [];
    for (const [from, to] of months) raw.push(await statement(config, from, to));
    // Sanity: the fixture really has money, measured extras and several groups.
    expect(Number(raw[1]!.total.net)).toBeGreaterThan(10);
    expect(raw[1]!.groups.map((g) => g.group)).toEqual(['bio', 'chem', 'phys']);
    const course = await statement(config, months[1][0], months[1][1], { groups: ['chem'] });
    const one = await statement(config, months[1][0], months[1][1], { users: ['dan'] });

    // Roll up what stopped before mid-October: statements now read a mix of rollups and raw rows.
    const part = await rollupSessions(db, T('2026-10-17T00:00:00Z'), config.rateCards, { batch: 7 });
    expect(part.sessions).toBeGreaterThan(10);
    expect(Number((await db.selectFrom('sessions').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n)).toBeGreaterThan(10);
    for (const [i, [from, to]] of months.entries()) expect(await statement(config, from, to)).toEqual(raw[i]);

    const all = await rollupSessions(db, T('2027-01-01T00:00:00Z'), config.rateCards);
    expect(all.sessions + part.sessions).toBe(users.length * 14);
    expect(await db.selectFrom('sessions').select('id').execute()).toEqual([]);
    for (const [i, [from, to]] of months.entries()) expect(await statement(config, from, to)).toEqual(raw[i]);
    expect(await statement(config, months[1][0], months[1][1], { groups: ['chem'] })).toEqual(course);
    expect(await statement(config, months[1][0], months[1][1], { users: ['dan'] })).toEqual(one);
  });

  it('month budgets read the rollups as they read raw sessions', async () => {
    await fixture();
    const budgeted = { ...config, budgets: configSchema.parse({ budgets: { default: { limit: '3', window: 'month' }, groups: { chem: { limit: '2', unit: 'hours' } } } }).budgets };
    const now = T('2026-10-31T12:00:00Z');
    const view = (e: Awaited<ReturnType<typeof evaluateBudgets>>) => e.map((x) => [x.subject, x.used.toFixed(4)]);
    const before = view(await evaluateBudgets(db, budgeted, 'cat', ['chem', 'phys'], now));
    expect(Number(before[0]![1])).toBeGreaterThan(0);
    await rollupSessions(db, T('2026-10-30T00:00:00Z'), budgeted.rateCards);
    expect(view(await evaluateBudgets(db, budgeted, 'cat', ['chem', 'phys'], now))).toEqual(before);
  });

  it('a rollup is all or nothing, and raw retention is finite by default', async () => {
    await insertSession('ann', '', 'p0', res(1, 1), ['phys'], T('2026-10-01T10:00:00Z'), T('2026-10-01T11:00:00Z'));
    // A failure inside the rollup's transaction (here: a row it may not write) leaves the raw session.
    await sql`alter table daily_usage add constraint no_ann check (user_name <> 'ann')`.execute(db);
    try {
      await expect(rollupSessions(db, T('2027-01-01T00:00:00Z'), config.rateCards)).rejects.toThrow();
      expect(await db.selectFrom('sessions').select('user_name').execute()).toEqual([{ user_name: 'ann' }]);
      expect(await db.selectFrom('daily_usage').select('user_name').execute()).toEqual([]);
    } finally {
      await sql`alter table daily_usage drop constraint no_ann`.execute(db);
    }
    expect(configSchema.parse({}).retention.rawDays).toBe(DEFAULT_RAW_DAYS);
    expect(DEFAULT_RAW_DAYS).toBeGreaterThan(0);
  });
});
