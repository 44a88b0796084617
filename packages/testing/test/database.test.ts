import { access } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createTestDatabase, DEFAULT_TEST_DATABASE_URL } from '../src/database.js';

const adminUrl = process.env.DATABASE_URL || DEFAULT_TEST_DATABASE_URL;

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function databaseExists(name: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    return (await client.query('select 1 from pg_database where datname = $1', [name])).rowCount === 1;
  } finally {
    await client.end();
  }
}

describe('createTestDatabase', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  it('uses Postgres when DATABASE_URL is set and PGlite otherwise', async () => {
    vi.stubEnv('DATABASE_URL', adminUrl);
    const onPostgres = await createTestDatabase();
    await onPostgres.drop();
    expect(onPostgres.kind).toBe('postgres');

    vi.stubEnv('DATABASE_URL', '');
    const onPGlite = await createTestDatabase();
    await onPGlite.drop();
    expect(onPGlite.kind).toBe('pglite');
    expect(onPGlite.databaseUrl).toBeUndefined();
  });

  it('creates a fresh Postgres database and drops it even while a client is still connected', async () => {
    const testDb = await createTestDatabase({ engine: 'postgres', adminUrl });
    const url = new URL(testDb.databaseUrl as string);
    const name = url.pathname.slice(1);
    expect(name).toMatch(/^hubside_t_[0-9a-f]{12}$/);
    expect(await exists(testDb.dataDir)).toBe(true);

    const leftOpen = new pg.Client({ connectionString: testDb.databaseUrl });
    leftOpen.on('error', () => {}); // FORCE terminates it
    await leftOpen.connect();
    expect((await leftOpen.query('select current_database() as db')).rows).toEqual([{ db: name }]);

    await testDb.drop();
    await testDb.drop();
    expect(await databaseExists(name)).toBe(false);
    expect(await exists(testDb.dataDir)).toBe(false);
    await leftOpen.end().catch(() => {});
  });

  it('gives PGlite a fresh directory, with initialised clusters for the schemas asked for', async () => {
    const testDb = await createTestDatabase({ engine: 'pglite', schemas: ['svc_a', 'svc_b'] });
    try {
      expect(testDb.databaseUrl).toBeUndefined();
      expect(await exists(join(testDb.dataDir, 'svc_a', 'PG_VERSION'))).toBe(true);
      expect(await exists(join(testDb.dataDir, 'svc_b', 'PG_VERSION'))).toBe(true);
    } finally {
      await testDb.drop();
    }
    expect(await exists(testDb.dataDir)).toBe(false);
  });

  it('rejects schema names that could escape the data directory', async () => {
    await expect(createTestDatabase({ engine: 'pglite', schemas: ['../etc'] })).rejects.toThrow(/Invalid schema name/);
  });
});
