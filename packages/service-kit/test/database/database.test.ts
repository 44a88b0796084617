import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify from 'fastify';
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTestDatabase, DEFAULT_TEST_DATABASE_URL } from '@hubside/testing';
import type { TestDatabase } from '@hubside/testing';
import { createDatabase, databaseHealth, databasePlugin, migrate } from '../../src/database/index.js';
import type { CreateDatabaseOptions, Database, DatabaseLogger, MigrationSet } from '../../src/database/index.js';

type Engine = 'pglite' | 'postgres';

interface LogLine {
  level: string;
  obj: object;
  msg: string | undefined;
}

function captureLogger(onLine?: (line: LogLine) => void): { logger: DatabaseLogger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: string) => (obj: object, msg?: string) => {
    const line = { level, obj, msg };
    lines.push(line);
    onLine?.(line);
  };
  return { lines, logger: { info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') } };
}

/** Polls `check` until it returns true or the deadline passes. */
async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const ITEMS: MigrationSet = {
  '2026-11-21T00-00-00_items': {
    async up(db) {
      await db.schema
        .createTable('items')
        .addColumn('id', 'serial', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .execute();
    },
    async down(db) {
      await db.schema.dropTable('items').execute();
    },
  },
  '2026-11-22T00-00-00_counter': {
    async up(db) {
      await db.schema.createTable('counter').addColumn('n', 'integer', (c) => c.notNull()).execute();
      await db.insertInto('counter').values({ n: 0 }).execute();
    },
    async down(db) {
      await db.schema.dropTable('counter').execute();
    },
  },
};

/** Tables in the schema the connection's search_path points at. */
async function tableNames(db: Kysely<any>): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`
    select table_schema || '.' || table_name as name from information_schema.tables
    where table_schema = current_schema() order by 1`.execute(db);
  return rows.map((r) => r.name);
}

// Every schema a test opens on PGlite gets a data directory from the pre-initialised template.
const SCHEMAS = [
  'mig_once',
  'mig_fail',
  'iso_a',
  'iso_b',
  'tx',
  'conc',
  'parity',
  'plugin_svc',
  'plugin_nomig',
  'deadlock',
] as const;

describe.each<Engine>(['pglite', 'postgres'])('database on %s', (engine) => {
  let testDb: TestDatabase;
  const open: Database<any>[] = [];

  beforeAll(async () => {
    testDb = await createTestDatabase({ engine, schemas: [...SCHEMAS] });
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((d) => d.destroy()));
  });
  afterAll(async () => {
    await testDb?.drop();
  });

  async function openDb(schema: string, extra: Partial<CreateDatabaseOptions> = {}): Promise<Database<any>> {
    const database = await createDatabase<any>({
      databaseUrl: testDb.databaseUrl,
      dataDir: testDb.dataDir,
      schema,
      ...extra,
    });
    open.push(database);
    return database;
  }

  it('applies migrations once, keeps the bookkeeping in the schema, and reruns as a no-op', async () => {
    const database = await openDb('mig_once');
    expect(database.kind).toBe(engine);

    expect(await migrate(database, ITEMS)).toEqual({
      applied: ['2026-11-21T00-00-00_items', '2026-11-22T00-00-00_counter'],
    });
    expect(await migrate(database, ITEMS)).toEqual({ applied: [] });
    expect(await tableNames(database.db)).toEqual([
      'mig_once.counter',
      'mig_once.items',
      'mig_once.kysely_migration',
      'mig_once.kysely_migration_lock',
    ]);
    const counter = await database.db.selectFrom('counter').selectAll().execute();
    expect(counter).toEqual([{ n: 0 }]);

    expect(await migrate(database, ITEMS, { direction: 'down' })).toEqual({ applied: ['2026-11-22T00-00-00_counter'] });
    expect(await tableNames(database.db)).not.toContain('mig_once.counter');
    expect(await migrate(database, ITEMS)).toEqual({ applied: ['2026-11-22T00-00-00_counter'] });
  });

  it('names the failed migration, rolls back the whole batch and refuses unordered names', async () => {
    const database = await openDb('mig_fail');
    const broken: MigrationSet = {
      ...ITEMS,
      '2026-11-23T00-00-00_broken': {
        async up(db) {
          await sql`alter table no_such_table add column x int`.execute(db);
        },
      },
    };
    const failure = migrate(database, broken);
    await expect(failure).rejects.toThrow(/Could not apply migration "2026-11-23T00-00-00_broken" in schema mig_fail: .*no_such_table/);
    // The two good migrations ran in the same transaction, so they are gone too.
    expect(await tableNames(database.db)).not.toContain('mig_fail.items');
    expect(await migrate(database, ITEMS)).toEqual({ applied: Object.keys(ITEMS) });

    // A name that does not sort by time would break the next deploy, so it is refused up front.
    await expect(migrate(database, { add_index: { async up() {} } })).rejects.toThrow(/Invalid migration name "add_index"/);
  });

  it('keeps schemas apart: a service sees only its own tables', async () => {
    const a = await openDb('iso_a');
    const b = await openDb('iso_b');
    await migrate(a, ITEMS);
    await a.db.insertInto('items').values({ name: 'from a' }).execute();

    await expect(b.db.selectFrom('items').selectAll().execute()).rejects.toThrow(/relation "items" does not exist/);
    await migrate(b, ITEMS);
    await b.db.insertInto('items').values({ name: 'from b' }).execute();

    expect(await a.db.selectFrom('items').select('name').execute()).toEqual([{ name: 'from a' }]);
    expect(await b.db.selectFrom('items').select('name').execute()).toEqual([{ name: 'from b' }]);
  });

  it('rolls a transaction back when its callback or a statement fails', async () => {
    const database = await openDb('tx');
    await migrate(database, ITEMS);
    const { db } = database;

    await expect(
      db.transaction().execute(async (trx) => {
        await trx.insertInto('items').values({ name: 'ghost' }).execute();
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');

    await db.insertInto('items').values({ name: 'taken' }).execute();
    await expect(
      db.transaction().execute(async (trx) => {
        await trx.updateTable('counter').set({ n: 99 }).execute();
        await trx.insertInto('items').values({ name: 'taken' }).execute();
      }),
    ).rejects.toThrow(/duplicate key/);

    expect(await db.selectFrom('items').select('name').execute()).toEqual([{ name: 'taken' }]);
    expect(await db.selectFrom('counter').select('n').executeTakeFirst()).toEqual({ n: 0 });

    // Savepoints roll back part of a transaction on both engines.
    const trx = await db.startTransaction().execute();
    await trx.insertInto('items').values({ name: 'kept' }).execute();
    const sp = await trx.savepoint('before_dupe').execute();
    await expect(sp.insertInto('items').values({ name: 'taken' }).execute()).rejects.toThrow(/duplicate key/);
    await sp.rollbackToSavepoint('before_dupe').execute();
    await trx.commit().execute();
    expect((await db.selectFrom('items').select('name').orderBy('name').execute()).map((r) => r.name)).toEqual(['kept', 'taken']);

    // A read-only transaction really is read-only.
    await expect(
      db
        .transaction()
        .setAccessMode('read only')
        .execute((t) => t.insertInto('items').values({ name: 'nope' }).execute()),
    ).rejects.toThrow(/read-only transaction/);
  });

  it('runs 50 concurrent transactions and queries without error or lost updates', async () => {
    const database = await openDb('conc', { poolMax: 5 });
    await migrate(database, ITEMS);
    const { db } = database;
    // Read-modify-write with a gap between read and write: on PGlite this only adds up because
    // transactions are serialized; on Postgres the row lock (FOR UPDATE) does it.
    const bump = () =>
      db.transaction().execute(async (trx) => {
        const { n } = await trx.selectFrom('counter').select('n').forUpdate().executeTakeFirstOrThrow();
        await new Promise((resolve) => setImmediate(resolve));
        await trx.updateTable('counter').set({ n: n + 1 }).execute();
      });
    const read = (i: number) => sql<{ i: number }>`select ${i}::int as i`.execute(db);
    const work = Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? bump() : read(i)));
    const results = await Promise.allSettled(work);
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    expect(await db.selectFrom('counter').select('n').executeTakeFirst()).toEqual({ n: 25 });
  });

  it('returns the same JS values for the same SQL on both engines', async () => {
    const database = await openDb('parity');
    const { rows } = await sql<Record<string, unknown>>`
      select 42::int8 as i8, count(*) as c, 7::int4 as i4, 1.50::numeric as num, 1.5::float8 as f8,
             '2024-03-04'::date as d, '2024-03-04 05:06:07+00'::timestamptz as ts,
             '2024-03-04 05:06:07'::timestamp as local_ts,
             '1 day 02:00:00'::interval as iv, decode('0102', 'hex') as b, '{"a":[1]}'::jsonb as j,
             array[1, 2]::int8[] as arr, true as t, current_setting('TimeZone') as tz`.execute(database.db);
    expect(rows).toEqual([
      {
        i8: '42',
        c: '1',
        i4: 7,
        num: '1.50',
        f8: 1.5,
        d: '2024-03-04',
        ts: new Date('2024-03-04T05:06:07Z'),
        // Without a time zone both read it as the process's local time.
        local_ts: new Date(2024, 2, 4, 5, 6, 7),
        iv: '1 day 02:00:00',
        b: Buffer.from([1, 2]),
        j: { a: [1] },
        arr: ['1', '2'],
        t: true,
        tz: expect.stringMatching(/^(UTC|Etc\/UTC|Etc\/GMT0|GMT)$/),
      },
    ]);
    expect(Buffer.isBuffer(rows[0]?.b)).toBe(true);

    // Several statements without parameters run in one call, as node-postgres allows.
    await sql`create table a (x int); create table b (x int)`.execute(database.db);
    expect(await tableNames(database.db)).toEqual(['parity.a', 'parity.b']);

    // A mutation that touches no row reports 0, not undefined.
    const result = await database.db.updateTable('a').set({ x: 1 }).executeTakeFirst();
    expect(result.numUpdatedRows).toBe(0n);
  });

  it('stores and reads back Dates the same way on both engines, whatever the process time zone', async () => {
    const database = await openDb('parity');
    await sql`create table if not exists stamps (ts timestamp, tstz timestamptz, d date)`.execute(database.db);
    vi.stubEnv('TZ', 'America/New_York');
    try {
      const at = new Date(2024, 2, 4, 22, 30, 0); // 22:30 local = 03:30 UTC the next day
      await database.db.insertInto('stamps').values({ ts: at, tstz: at, d: at }).execute();
      const { rows } = await sql<Record<string, unknown>>`
        select ts, tstz, d, ts::text as ts_text from stamps`.execute(database.db);
      expect(rows).toEqual([{ ts: at, tstz: at, d: '2024-03-04', ts_text: '2024-03-04 22:30:00' }]);
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('decorates fastify with the database, migrates on start and closes it with the app', async () => {
    const app = Fastify({ logger: false });
    await app.register(databasePlugin, {
      databaseUrl: testDb.databaseUrl,
      dataDir: testDb.dataDir,
      schema: 'plugin_svc',
      migrations: ITEMS,
    });
    await app.ready();
    expect(app.database.kind).toBe(engine);
    await app.db.insertInto('items').values({ name: 'via plugin' }).execute();
    expect(await app.db.selectFrom('counter').select('n').execute()).toEqual([{ n: 0 }]);
    expect(await databaseHealth(app.database, { timeoutMs: 1_000 })).toEqual({ ok: true, latencyMs: expect.any(Number) });

    if (engine === 'postgres') {
      const admin = new pg.Client({ connectionString: testDb.databaseUrl });
      await admin.connect();
      try {
        const connections = async () =>
          Number(
            (
              await admin.query(
                `select count(*) as n from pg_stat_activity where application_name = 'hubside-plugin_svc' and datname = current_database()`,
              )
            ).rows[0].n,
          );
        expect(await connections()).toBeGreaterThan(0);
        await app.close();
        await eventually(async () => (await connections()) === 0, 'the pool has closed its connections');
      } finally {
        await admin.end();
      }
    } else {
      await app.close();
      // The data directory's lock is free again: another instance can open it and sees the data.
      const reopened = await openDb('plugin_svc');
      expect(await reopened.db.selectFrom('items').select('name').execute()).toEqual([{ name: 'via plugin' }]);
    }
    await expect(app.database.ping()).rejects.toThrow(/closed/);
    expect(await databaseHealth(app.database)).toEqual({ ok: false, latencyMs: expect.any(Number), error: 'The database is closed' });
  });

  it('leaves migrations to someone else when migrateOnStart is false', async () => {
    const app = Fastify({ logger: false });
    await app.register(databasePlugin, {
      databaseUrl: testDb.databaseUrl,
      dataDir: testDb.dataDir,
      schema: 'plugin_nomig',
      migrations: ITEMS,
      migrateOnStart: false,
    });
    try {
      await app.ready();
      expect(await tableNames(app.db)).toEqual([]);
    } finally {
      await app.close();
    }
  });

  // Only PGlite has a single connection to wait on; Postgres simply uses a second connection.
  if (engine === 'pglite') it('fails fast instead of hanging when a transaction queries through db instead of trx', async () => {
    const { lines, logger } = captureLogger();
    const database = await openDb('deadlock', { connectionTimeoutMs: 200, logger });
    await migrate(database, ITEMS);
    const { db } = database;
    await expect(
      db.transaction().execute(async (trx) => {
        await trx.insertInto('items').values({ name: 'in trx' }).execute();
        await db.selectFrom('items').selectAll().execute();
      }),
    ).rejects.toThrow(/use `trx`/);
    expect(await db.selectFrom('items').selectAll().execute()).toEqual([]);

    // A connection handed back inside a transaction is rolled back, not passed on.
    await db.connection().execute(async (conn) => {
      await sql`begin`.execute(conn);
      await conn.insertInto('items').values({ name: 'leaked' }).execute();
    });
    await db.insertInto('items').values({ name: 'after' }).execute();
    expect(await db.selectFrom('items').select('name').execute()).toEqual([{ name: 'after' }]);
    expect(lines.some((l) => l.level === 'error' && /open transaction/.test(l.msg ?? ''))).toBe(true);
  });

  it('rejects schema names that are not plain identifiers', async () => {
    for (const schema of ['Profile', '1abc', 'a-b', 'a;drop schema public', '', 'x'.repeat(64), 'pg_temp', 'é']) {
      await expect(openDb(schema), schema).rejects.toThrow(/Invalid database schema name/);
    }
  });
});

describe('database on pglite only', () => {
  let parent: string;
  beforeAll(async () => {
    parent = await mkdtemp(join(tmpdir(), 'hubside-pglite-'));
  });
  afterAll(async () => {
    await rm(parent, { recursive: true, force: true });
  });

  it('creates a database in an empty directory and keeps its data across close and reopen', async () => {
    const dataDir = join(parent, 'nested', 'data');
    const first = await createDatabase<any>({ dataDir, schema: 'persisted' });
    try {
      await migrate(first, ITEMS);
      await first.db.insertInto('items').values({ name: 'survives' }).execute();
      // A second instance on the same directory would lose writes; the lock refuses it.
      await expect(createDatabase<any>({ dataDir, schema: 'persisted' })).rejects.toThrow(/already open in this process/);
    } finally {
      await first.destroy();
    }
    await first.destroy(); // idempotent

    const second = await createDatabase<any>({ dataDir, schema: 'persisted' });
    try {
      expect(await migrate(second, ITEMS)).toEqual({ applied: [] });
      expect(await second.db.selectFrom('items').select('name').execute()).toEqual([{ name: 'survives' }]);
    } finally {
      await second.destroy();
    }
    // A fresh directory has no cached template, so this pays for a whole PGlite initdb plus
    // two opens; on a loaded 2-core machine that alone can take half a minute.
  }, 120_000);
});

describe('database on postgres only', () => {
  let testDb: TestDatabase;
  const adminUrl = process.env.DATABASE_URL || DEFAULT_TEST_DATABASE_URL;
  beforeAll(async () => {
    testDb = await createTestDatabase({ engine: 'postgres', adminUrl });
  });
  afterAll(async () => {
    await testDb?.drop();
  });

  const url = () => testDb.databaseUrl as string;

  it('runs two concurrent migrators and applies each migration exactly once', async () => {
    // Two pools stand in for two processes starting at once.
    const [a, b] = await Promise.all([
      createDatabase<any>({ databaseUrl: url(), dataDir: '', schema: 'race' }),
      createDatabase<any>({ databaseUrl: url(), dataDir: '', schema: 'race' }),
    ]);
    const admin = new pg.Client({ connectionString: url() });
    await admin.connect();
    let upCalls = 0;
    const migrations: MigrationSet = {
      '2026-11-21T00-00-00_runs': {
        async up(db) {
          upCalls++;
          // Hold the lock until the other migrator is queued behind it, so the race is real.
          await eventually(
            async () =>
              (
                await admin.query(
                  `select 1 from pg_stat_activity where datname = current_database() and wait_event = 'advisory'`,
                )
              ).rowCount === 1,
            'the second migrator waits for the migration lock',
          );
          await db.schema.createTable('runs').addColumn('name', 'text').execute();
          await db.insertInto('runs').values({ name: 'runs' }).execute();
        },
      },
      '2026-11-22T00-00-00_more': {
        async up(db) {
          upCalls++;
          await db.insertInto('runs').values({ name: 'more' }).execute();
        },
      },
    };
    try {
      const [ra, rb] = await Promise.all([migrate(a, migrations), migrate(b, migrations)]);
      expect([ra.applied, rb.applied].sort((x, y) => y.length - x.length)).toEqual([Object.keys(migrations), []]);
      expect(upCalls).toBe(2);
      expect(await a.db.selectFrom('runs').select('name').orderBy('name').execute()).toEqual([
        { name: 'more' },
        { name: 'runs' },
      ]);
      expect(await b.db.selectFrom('kysely_migration').select('name').execute()).toHaveLength(2);
    } finally {
      await admin.end();
      await Promise.all([a.destroy(), b.destroy()]);
    }
  });

  it('applies statement_timeout to queries but lifts it for migrations', async () => {
    const database = await createDatabase<any>({ databaseUrl: url(), dataDir: '', schema: 'timeouts', poolMax: 1, statementTimeoutMs: 100 });
    try {
      await expect(sql`select pg_sleep(0.3)`.execute(database.db)).rejects.toThrow(/statement timeout/);
      const { applied } = await migrate(database, {
        '2026-11-21T00-00-00_slow': {
          async up(db) {
            await sql`select pg_sleep(0.3)`.execute(db);
          },
        },
      });
      expect(applied).toEqual(['2026-11-21T00-00-00_slow']);
      // Same (only) connection: the timeout is back after migrating.
      const { rows } = await sql<{ statement_timeout: string }>`show statement_timeout`.execute(database.db);
      expect(rows[0]?.statement_timeout).toBe('100ms');
    } finally {
      await database.destroy();
    }
  });

  it('survives the server dropping an idle pooled connection', async () => {
    let dropped!: () => void;
    const warned = new Promise<void>((resolve) => (dropped = resolve));
    const { logger } = captureLogger((line) => {
      if (line.level === 'warn') dropped();
    });
    const database = await createDatabase<any>({ databaseUrl: url(), dataDir: '', schema: 'idle_err', logger });
    const admin = new pg.Client({ connectionString: url() });
    await admin.connect();
    try {
      await database.ping();
      await admin.query(
        `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hubside-idle_err' and datname = current_database()`,
      );
      await warned;
      await database.ping();
    } finally {
      await admin.end();
      await database.destroy();
    }
  });

  it('keeps the password out of logs and errors', async () => {
    const withPassword = new URL(url());
    withPassword.username = 'postgres';
    withPassword.password = 'hunter2-secret';
    const { lines, logger } = captureLogger();
    // Trust authentication: the server never asks for the password, so this connects.
    const database = await createDatabase<any>({ databaseUrl: withPassword.href, dataDir: '', schema: 'secrets', logger });
    await database.destroy();
    expect(JSON.stringify(lines)).not.toContain('hunter2');
    expect(lines.some((l) => l.msg === 'database ready')).toBe(true);

    const unreachable = new URL(withPassword.href);
    unreachable.port = '1';
    const failure = await createDatabase<any>({ databaseUrl: unreachable.href, dataDir: '', schema: 'secrets', logger }).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    expect(failure?.message).toMatch(/Could not open the Postgres database .* on 127\.0\.0\.1:1/);
    expect(failure?.message).not.toContain('hunter2');

    await expect(createDatabase<any>({ databaseUrl: 'postgres://u:hunter2@%zz', dataDir: '', schema: 'secrets' })).rejects.toThrow(
      /^(?!.*hunter2)/,
    );
  });

  it('turns the JIT compiler off unless the URL turns it back on', async () => {
    const jitOf = async (databaseUrl: string) => {
      const database = await createDatabase<any>({ databaseUrl, dataDir: '', schema: 'jit_opts' });
      try {
        return (await sql<{ jit: string }>`show jit`.execute(database.db)).rows[0]!.jit;
      } finally {
        await database.destroy();
      }
    };
    expect(await jitOf(url())).toBe('off');
    const withJit = new URL(url());
    withJit.searchParams.set('options', '-c jit=on');
    expect(await jitOf(withJit.href)).toBe('on');
  });

  it('keeps the search_path even when the URL carries its own options', async () => {
    const withOptions = new URL(url());
    withOptions.searchParams.set('options', '-c search_path=public');
    const database = await createDatabase<any>({ databaseUrl: withOptions.href, dataDir: '', schema: 'url_opts' });
    try {
      const { rows } = await sql<{ s: string }>`select current_schema() as s`.execute(database.db);
      expect(rows).toEqual([{ s: 'url_opts' }]);
    } finally {
      await database.destroy();
    }
  });
});
