import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pgliteTemplate } from '@hubside/service-kit';
import pg from 'pg';

/** The Postgres server tests use when DATABASE_URL is not set but Postgres is asked for. */
export const DEFAULT_TEST_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/test';

export interface TestDatabaseOptions {
  /** Default: 'postgres' when DATABASE_URL is set, else 'pglite'. */
  engine?: 'postgres' | 'pglite';
  /** Server to create the throwaway database on. Default: DATABASE_URL, else the local default. */
  adminUrl?: string;
  /**
   * Schemas the test will open. On PGlite each gets a data directory copied from a cached,
   * already initialised cluster, which saves the ~3 s initdb that a fresh directory costs.
   */
  schemas?: string[];
}

export interface TestDatabase {
  kind: 'postgres' | 'pglite';
  /** Set for Postgres: a URL for a database that exists only for this test. */
  databaseUrl?: string;
  /** A fresh temporary directory (the embedded database's parent directory on PGlite). */
  dataDir: string;
  /** Drops the database (WITH (FORCE)) or removes the directory. Safe to call twice. */
  drop(): Promise<void>;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * A database nobody else uses: a new `hubside_t_<random>` database on the Postgres server when
 * DATABASE_URL is set (or `engine: 'postgres'`), else a fresh directory for PGlite.
 * Pass `databaseUrl` and `dataDir` to createDatabase / the database plugin.
 */
export async function createTestDatabase(opts: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const envUrl = process.env.DATABASE_URL || undefined;
  const engine = opts.engine ?? (envUrl ? 'postgres' : 'pglite');
  for (const schema of opts.schemas ?? []) {
    if (!SCHEMA_NAME.test(schema)) throw new Error(`Invalid schema name ${JSON.stringify(schema)}`);
  }
  const root = await scratchRoot();
  const dataDir = await mkdtemp(join(root, 'hubside-test-db-'));
  const removeDir = () => rm(dataDir, { recursive: true, force: true });

  if (engine === 'pglite') {
    try {
      if (opts.schemas?.length) {
        const template = await pgliteTemplate(join(root, 'hubside-pglite-template'), { slim: true });
        await Promise.all(opts.schemas.map((schema) => cp(template, join(dataDir, schema), { recursive: true })));
      }
    } catch (err) {
      await removeDir();
      throw err;
    }
    return { kind: 'pglite', dataDir, drop: removeDir };
  }

  const adminUrl = opts.adminUrl ?? envUrl ?? DEFAULT_TEST_DATABASE_URL;
  const name = `hubside_t_${randomBytes(6).toString('hex')}`;
  try {
    await withAdminClient(adminUrl, (client) => client.query(`create database "${name}"`));
  } catch (err) {
    await removeDir();
    throw err;
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  let dropped: Promise<void> | undefined;
  return {
    kind: 'postgres',
    databaseUrl: url.href,
    dataDir,
    drop: () =>
      (dropped ??= (async () => {
        try {
          // FORCE ends connections the test left open (Postgres 13+), so drop never waits on them.
          await withAdminClient(adminUrl, (client) => client.query(`drop database if exists "${name}" with (force)`));
        } finally {
          await removeDir();
        }
      })()),
  };
}

async function withAdminClient<T>(adminUrl: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 5_000 });
  // An error on an idle client would otherwise be thrown from an event emitter.
  client.on('error', () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/**
 * Where throwaway databases go: RAM-backed /dev/shm when it is roomy (Linux), else the OS temp
 * directory. A PGlite directory is a few hundred files, and creating them on a VM's disk costs
 * about 1 ms each, three times what tmpfs takes; PGlite also writes through on every query.
 * A directory left behind by a crashed test costs ~25 MB of RAM until reboot.
 */
async function scratchRoot(): Promise<string> {
  if (process.platform === 'linux') {
    try {
      const fs = await statfs('/dev/shm');
      if (fs.bavail * fs.bsize >= 2 * 1024 ** 3) return '/dev/shm';
    } catch {
      // No /dev/shm: fall through.
    }
  }
  return tmpdir();
}
