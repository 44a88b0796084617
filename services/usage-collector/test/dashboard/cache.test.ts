/**
 * The course/hub view cache: an answer is reused only while no poll landed and no session was
 * added, and never past its time to live; concurrent requests share one computation.
 */
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createViewCache } from '../../src/dashboard/cache.js';
import type { UsageDB } from '../../src/usage.table.js';
import { openUsageDatabase } from '../fixtures/database.js';
import type { UsageDatabase } from '../fixtures/database.js';

let usage: UsageDatabase;
let db: Kysely<UsageDB>;

beforeAll(async () => {
  usage = await openUsageDatabase();
  db = usage.db;
}, 60_000);

afterAll(async () => {
  await usage?.close();
});

describe('the view cache', () => {
  it('reuses an answer until a poll lands, a session is added or the time to live ends', async () => {
    let clock = 1_000_000;
    const cache = createViewCache(db, { ttlMs: 60_000, now: () => clock });
    let computed = 0;
    const compute = async () => ++computed;
    expect(await cache.get('k', compute)).toBe(1);
    expect(await cache.get('k', compute)).toBe(1);
    expect(await cache.get('other', compute)).toBe(2);

    await db.insertInto('polls').values({ at: new Date(), servers: 0, opened: 0, closed: 0 }).execute();
    expect(await cache.get('k', compute)).toBe(3);

    const t = new Date();
    await db
      .insertInto('sessions')
      .values({ user_name: 'ann', server_name: '', started: t, user_options: '{}', resources: '{}', groups: '[]', first_seen: t, last_seen: t })
      .execute();
    expect(await cache.get('k', compute)).toBe(4);
    expect(await cache.get('k', compute)).toBe(4);

    clock += 60_000;
    expect(await cache.get('k', compute)).toBe(5);

    // The time to live starts when a slow answer is ready, not when it was asked for.
    const slow = async () => {
      clock += 90_000;
      return 'slow';
    };
    expect(await cache.get('slow', slow)).toBe('slow');
    clock += 30_000;
    expect(await cache.get('slow', async () => 'recomputed')).toBe('slow');
  });

  it('shares one computation between concurrent requests and forgets failures', async () => {
    const cache = createViewCache(db, { ttlMs: 60_000 });
    let calls = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = async () => {
      calls += 1;
      await gate;
      return 'done';
    };
    const both = Promise.all([cache.get('s', slow), cache.get('s', slow), cache.get('s', slow)]);
    await new Promise((r) => setImmediate(r));
    release();
    expect(await both).toEqual(['done', 'done', 'done']);
    expect(calls).toBe(1);
    expect(await cache.get('s', slow)).toBe('done');
    const before = calls;
    await expect(cache.get('f', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await cache.get('f', async () => 'recovered')).toBe('recovered');
    expect(calls).toBe(before);
  });
});
