/**
 * Rate cards and budgets are versioned in the database (settings.ts): the community file gives
 * version 1 and any later file that differs, admins save versions on the dashboard on top of the
 * version they edited, and every replica sees the newest. Runs on Postgres with DATABASE_URL, else PGlite.
 */
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configSchema, resolveConfig } from '../src/config.js';
import { createSettingsStore, editableOf } from '../src/settings.js';
import type { SettingsDB } from '../src/settings.js';
import { openUsageDatabase } from './fixtures/database.js';
import type { UsageDatabase } from './fixtures/database.js';

let usage: UsageDatabase;
let db: Kysely<SettingsDB>;

const fileA = resolveConfig(configSchema.parse({
  currency: 'EUR',
  rateCards: [{ id: 'a', effectiveFrom: '2026-01-01', profileHour: { small: '0.10' } }],
  budgets: { default: { limit: '20' }, webhook: 'https://hooks.example.org/budget' },
}));
const fileB = resolveConfig(configSchema.parse({ currency: 'EUR', rateCards: [{ id: 'b', effectiveFrom: '2026-01-01', profileHour: { small: '0.12' } }], budgets: { default: { limit: '25' } } }));

beforeAll(async () => {
  usage = await openUsageDatabase();
  db = usage.db as unknown as Kysely<SettingsDB>;
});
afterAll(async () => {
  await usage?.close();
});

describe('settings versions', () => {
  it('start from the community file, survive restarts, and take a dashboard save on top of the version edited', async () => {
    const store = createSettingsStore(db, fileA, { ttlMs: 0 });
    // Before the first start wrote anything, the file's settings are in force as version 0.
    expect((await store.current()).version.id).toBe(0);
    await store.init();
    await createSettingsStore(db, fileA).init();
    expect((await store.current()).version).toMatchObject({ id: 1, source: 'community file', note: 'initial version from the community file' });

    const edited = editableOf(fileA);
    edited.budgets = { ...edited.budgets, users: { bob: { limit: '5', unit: 'hours', window: 'month', days: 30 } } };
    edited.rateCards = [...edited.rateCards, { ...edited.rateCards[0]!, id: 'autumn', effectiveFrom: '2026-09-01', profileHour: { small: '0.08' } }];
    const saved = await store.save(1, edited, 'ursula', 'autumn prices');
    expect(saved).toMatchObject({ saved: true, version: { id: 2, source: 'dashboard', author: 'ursula', note: 'autumn prices' } });
    const live = await store.current();
    expect(live.config.rateCards.map((c) => c.id)).toEqual(['a', 'autumn']);
    expect(live.config.budgets.users.bob).toMatchObject({ limit: '5', unit: 'hours' });
    // What the dashboard does not edit stays the file's, the webhook URL included.
    expect(live.config.budgets.webhook).toBe('https://hooks.example.org/budget');
    expect(live.config.currency).toBe('EUR');

    // A save on top of version 1, which is no longer the newest, is refused.
    expect(await store.save(1, editableOf(fileA), 'vera', '')).toEqual({ saved: false, current: 2 });
    // A restart with the same file keeps the dashboard's version in force.
    const restarted = createSettingsStore(db, fileA, { ttlMs: 0 });
    await restarted.init();
    expect((await restarted.current()).version.id).toBe(2);
    expect((await restarted.history()).map((v) => v.id)).toEqual([2, 1]);
  });

  it('take a new community file when it is deployed, once however many replicas start', async () => {
    const replicas = [0, 1, 2].map(() => createSettingsStore(db, fileB, { ttlMs: 0 }));
    await Promise.all(replicas.map((r) => r.init()));
    const live = await replicas[0]!.current();
    expect(live.version).toMatchObject({ id: 3, source: 'community file', note: 'the community file changed' });
    expect(live.config.rateCards.map((c) => c.id)).toEqual(['b']);
    expect(live.config.budgets.default?.limit).toBe('25');
    expect((await replicas[1]!.history()).map((v) => v.id)).toEqual([3, 2, 1]);
    // Another replica's store sees a save at its next read.
    await replicas[1]!.save(3, editableOf(fileA), 'ursula', '');
    expect((await replicas[2]!.current()).version.id).toBe(4);
  });
});
