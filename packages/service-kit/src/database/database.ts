import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { PGlite, types as pgliteTypes } from '@electric-sql/pglite';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { PoolConfig } from 'pg';
import { PGliteDialect } from './pglite-dialect.js';
import { lockDataDir } from './pglite-lock.js';
import { PGLITE_TEMPLATE_DIR, seedFromTemplate } from './pglite-template.js';
import type { DataDirLock } from './pglite-lock.js';

/** The subset of a pino logger the database layer uses (fastify.log and pino() both fit). */
export interface DatabaseLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface CreateDatabaseOptions {
  /** A postgres:// URL. Without it the embedded PGlite database under `dataDir` is used. */
  databaseUrl?: string | undefined;
  /** Parent directory of the embedded database; it lives in `join(dataDir, schema)`. */
  dataDir: string;
  /** The schema this service owns, e.g. `profile_api`. Every connection's search_path. */
  schema: string;
  logger?: DatabaseLogger | undefined;
  /** Upper bound of the Postgres pool. Default 10. */
  poolMax?: number | undefined;
  /** Postgres statement_timeout (ms, 0 = none). Default 30 000. Migrations lift it. */
  statementTimeoutMs?: number | undefined;
  /** How long a query may wait for a (pooled or the single embedded) connection (ms). Default 5 000. */
  connectionTimeoutMs?: number | undefined;
  /** How long an unused pooled connection is kept (ms). Default 30 000. */
  idleTimeoutMs?: number | undefined;
}

export interface Database<DB> {
  db: Kysely<DB>;
  kind: 'postgres' | 'pglite';
  schema: string;
  /** Closes the pool or the embedded database. Safe to call more than once. */
  destroy(): Promise<void>;
  /** Runs `select 1`; rejects with an error whose message holds no secrets. */
  ping(): Promise<void>;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Throws unless `schema` is a plain lower-case identifier we may put into SQL and search_path. */
export function assertValidSchemaName(schema: string): void {
  if (typeof schema !== 'string' || !SCHEMA_NAME.test(schema)) {
    throw new Error(
      `Invalid database schema name ${JSON.stringify(schema)}: use 1-63 characters of a-z, 0-9 ` +
        `and _, not starting with a digit (e.g. "profile_api")`,
    );
  }
  if (schema.startsWith('pg_')) {
    throw new Error(`Invalid database schema name "${schema}": names starting with pg_ are reserved by Postgres`);
  }
}

const NOOP_LOGGER: DatabaseLogger = { info() {}, warn() {}, error() {}, debug() {} };

const CREDENTIALS_IN_URL = /([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):[^@/\s]*@/gi;

/** Removes passwords from `message`: URL credentials, and `secrets` wherever they appear. */
export function redactSecrets(message: string, secrets: readonly string[] = []): string {
  let out = message.replace(CREDENTIALS_IN_URL, '$1:***@');
  for (const secret of secrets) {
    if (secret.length >= 3) out = out.split(secret).join('***');
  }
  return out;
}

function errorMessage(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) {
    // Node reports a refused connection to every address of a host as an AggregateError with
    // an empty message.
    return err.errors.map(errorMessage).join('; ');
  }
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return err.message || code || err.name;
  }
  return String(err);
}

/** Where a URL points, for logs and errors: never its password. */
interface PostgresTarget {
  host: string;
  port: number;
  database: string;
  user: string;
}

function parsePostgresUrl(databaseUrl: string): { url: URL; target: PostgresTarget; password: string } {
  let url: URL;
  try {
    url = new URL(databaseUrl);
  } catch {
    // The input may hold a password, so it is not repeated here.
    throw new Error('The database URL is not a valid URL (expected postgres://user:password@host:port/database)');
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new Error(`The database URL must start with postgres:// or postgresql://, not ${url.protocol}//`);
  }
  const password = safeDecode(url.password);
  return {
    url,
    password,
    target: {
      host: url.hostname || url.searchParams.get('host') || 'localhost',
      port: Number(url.port || 5432),
      database: safeDecode(url.pathname.slice(1)),
      user: safeDecode(url.username),
    },
  };
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

const DATE_OID = 1082;
const DATE_ARRAY_OID = 1182;
const INTERVAL_OID = 1186;
const INTERVAL_ARRAY_OID = 1187;
const TEXT_ARRAY_OID = 1009;

// Both engines should hand back the same JS values for the same SQL, or code tested on one
// breaks on the other. Where their defaults differ we pick one behaviour:
// - int8 (count(*), bigserial): string, as node-postgres does (PGlite: number or bigint).
// - bytea: Buffer, as node-postgres does (PGlite: Uint8Array).
// - interval: the Postgres text ('1 day 02:00:00'), as PGlite does (node-postgres: an object).
// - date: 'YYYY-MM-DD' string on both. node-postgres makes local midnight and PGlite UTC
//   midnight, so a Date would shift by a day depending on the process's time zone.
// - The session time zone is UTC on both (PGlite's is fixed), so now()::date and date_trunc()
//   agree; a URL `options=-c TimeZone=...` still overrides it.

// pg's typings only accept the oids of its built-in scalar types.
const defaultPgParser = pg.types.getTypeParser as (oid: number, format?: 'text' | 'binary') => unknown;
const pgTypes: NonNullable<PoolConfig['types']> = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (format !== 'binary') {
      if (oid === INTERVAL_OID || oid === DATE_OID) return (value: string) => value;
      if (oid === INTERVAL_ARRAY_OID || oid === DATE_ARRAY_OID) return defaultPgParser(TEXT_ARRAY_OID, 'text');
    }
    return defaultPgParser(oid, format);
  }) as NonNullable<PoolConfig['types']>['getTypeParser'],
};

const pgliteParsers = {
  [pgliteTypes.INT8]: (value: string) => value,
  [pgliteTypes.BYTEA]: (value: string) => Buffer.from(value.slice(2), 'hex'),
  [pgliteTypes.DATE]: (value: string) => value,
};

/** A Date as node-postgres sends it: local wall time with the local UTC offset. */
function localTimestamp(date: Date): string {
  const pad = (n: number, width = 2) => String(Math.abs(n)).padStart(width, '0');
  const offset = -date.getTimezoneOffset();
  return (
    `${pad(date.getFullYear(), 4)}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}` +
    `${offset >= 0 ? '+' : '-'}${pad(Math.trunc(offset / 60))}:${pad(offset % 60)}`
  );
}

function serializeDate(value: unknown): string {
  if (value instanceof Date) return localTimestamp(value);
  if (typeof value === 'number') return localTimestamp(new Date(value));
  return String(value);
}

// PGlite sends a Date parameter as UTC (toISOString). Into a `timestamp` or `date` column that
// stores the UTC wall time, which reads back shifted whenever the process's time zone is not
// UTC, and differs from what node-postgres stores. Send the local time, as node-postgres does.
const pgliteSerializers = {
  [pgliteTypes.TIMESTAMP]: serializeDate,
  [pgliteTypes.TIMESTAMPTZ]: serializeDate,
  [pgliteTypes.DATE]: serializeDate,
};

/**
 * Opens the service's database: Postgres when `databaseUrl` is given, else embedded PGlite.
 * Either way every query runs with search_path = `schema`, which is created if missing, so the
 * same SQL works on both.
 */
export async function createDatabase<DB>(opts: CreateDatabaseOptions): Promise<Database<DB>> {
  assertValidSchemaName(opts.schema);
  const logger = opts.logger ?? NOOP_LOGGER;
  if (opts.databaseUrl) return openPostgres<DB>(opts, opts.databaseUrl, logger);
  return openPGlite<DB>(opts, logger);
}

async function ensureSchema(db: Kysely<any>, schema: string): Promise<void> {
  const exists = async () =>
    (await sql`select 1 from pg_namespace where nspname = ${schema}`.execute(db)).rows.length > 0;
  // Checked first so a role without CREATE on the database can use a schema made for it.
  if (await exists()) return;
  try {
    await sql`create schema if not exists ${sql.id(schema)}`.execute(db);
  } catch (err) {
    // Two processes creating it at once: "if not exists" can still fail on the catalog's
    // unique index for the loser.
    if (!(await exists())) throw err;
  }
}

async function assertSearchPath(db: Kysely<any>, schema: string): Promise<void> {
  const { rows } = await sql<{ current: string | null }>`select current_schema() as current`.execute(db);
  const current = rows[0]?.current ?? null;
  if (current !== schema) {
    throw new Error(
      `Connections use schema ${JSON.stringify(current)} instead of "${schema}": the search_path ` +
        `was not applied. A connection pooler in transaction mode (e.g. PgBouncer) drops the ` +
        `startup options it is set with; connect to Postgres directly or in session mode.`,
    );
  }
}

async function openPostgres<DB>(
  opts: CreateDatabaseOptions,
  databaseUrl: string,
  logger: DatabaseLogger,
): Promise<Database<DB>> {
  const { schema } = opts;
  const { url, target, password } = parsePostgresUrl(databaseUrl);
  const secrets = [databaseUrl, password];
  const poolMax = opts.poolMax ?? 10;
  if (!Number.isInteger(poolMax) || poolMax < 1) throw new Error(`poolMax must be a positive integer, not ${poolMax}`);

  // Startup options rather than a SET after connecting: the server applies them before the
  // first query, and RESET/DISCARD fall back to them. Settings in the URL's own `options`
  // parameter are kept; node-postgres would let the URL's value replace ours.
  let connectionString = databaseUrl;
  const urlOptions = url.searchParams.get('options');
  if (urlOptions !== null) {
    url.searchParams.delete('options');
    connectionString = url.href;
  }
  // JIT off: our queries are short or set-based reports whose plans Postgres overestimates
  // (a generate_series per session made it spend 3.1 s of a 3.8 s report compiling). The URL's
  // own options come after it, so an operator can turn it back on.
  const options = ['-c TimeZone=UTC -c jit=off', urlOptions, `-c search_path=${schema}`].filter(Boolean).join(' ');

  const pool = new pg.Pool({
    connectionString,
    options,
    max: poolMax,
    connectionTimeoutMillis: opts.connectionTimeoutMs ?? 5_000,
    idleTimeoutMillis: opts.idleTimeoutMs ?? 30_000,
    statement_timeout: opts.statementTimeoutMs ?? 30_000,
    application_name: `hubside-${schema}`,
    keepAlive: true,
    types: pgTypes,
  });
  // Without a listener, a pooled idle connection that the server drops (restart, failover,
  // pg_terminate_backend) emits 'error' and crashes the process. The pool discards that client.
  pool.on('error', (err) => {
    logger.warn(
      { err: { message: redactSecrets(errorMessage(err), secrets) }, ...target, schema },
      'idle database connection failed; the pool replaces it',
    );
  });

  // The pool's own listener covers idle clients only. A client that is checked out but between
  // queries (a session advisory lock held across a poll, a migration's connection) emits 'error'
  // with no listener when the server restarts, which would crash the process. Log it instead: the
  // next query on that client fails, and the pool drops the client when it comes back.
  pool.on('connect', (client) => {
    client.on('error', (err) => {
      logger.warn(
        { err: { message: redactSecrets(errorMessage(err), secrets) }, ...target, schema },
        'database connection lost while in use; the pool replaces it',
      );
    });
  });

  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
  const endPool = async () => {
    await db.destroy();
    // Kysely only ends pools it has used; this one may not have been.
    if (!pool.ended) await pool.end();
  };

  try {
    await ensureSchema(db as Kysely<any>, schema);
    await assertSearchPath(db as Kysely<any>, schema);
  } catch (err) {
    await endPool().catch(() => {});
    throw new Error(
      `Could not open the Postgres database ${target.database} on ${target.host}:${target.port} ` +
        `(schema ${schema}): ${redactSecrets(errorMessage(err), secrets)}`,
    );
  }
  logger.info({ kind: 'postgres', ...target, schema, poolMax }, 'database ready');

  let destroyed: Promise<void> | undefined;
  return {
    db,
    kind: 'postgres',
    schema,
    destroy: () => (destroyed ??= endPool()),
    ping: () => (destroyed ? Promise.reject(new Error('The database is closed')) : ping(db, secrets)),
  };
}

async function openPGlite<DB>(opts: CreateDatabaseOptions, logger: DatabaseLogger): Promise<Database<DB>> {
  const { schema } = opts;
  if (!opts.dataDir) throw new Error('dataDir is required for the embedded database (no database URL given)');
  const parent = resolve(opts.dataDir);
  const location = join(parent, schema);
  await mkdir(location, { recursive: true });

  // Only one process may open a PGlite directory at a time (see pglite-lock.ts): with two
  // replicas, or a hub-managed copy next to a hand-started one, writes are lost.
  const lock: DataDirLock = await lockDataDir(join(parent, `${schema}.lock`), location, logger);
  let pglite: PGlite | undefined;
  let db: Kysely<DB> | undefined;
  const close = async () => {
    try {
      await db?.destroy();
      if (pglite && !pglite.closed) await pglite.close();
    } finally {
      await lock.release();
    }
  };

  try {
    await seedFromTemplate(location, join(parent, PGLITE_TEMPLATE_DIR));
    pglite = await PGlite.create({ dataDir: location, parsers: pgliteParsers, serializers: pgliteSerializers });
    // PGlite is a single session, so a session-level SET is the search_path of every query.
    await pglite.exec(
      `create schema if not exists ${quoteIdent(schema)}; set search_path to ${quoteIdent(schema)}`,
    );
    db = new Kysely<DB>({
      dialect: new PGliteDialect(pglite, {
        acquireTimeoutMs: opts.connectionTimeoutMs ?? 5_000,
        onLeakedTransaction: () =>
          logger.error({ schema }, 'a database connection was released inside an open transaction; rolled back'),
      }),
    });
    await assertSearchPath(db as Kysely<any>, schema);
  } catch (err) {
    await close().catch(() => {});
    throw new Error(`Could not open the embedded database in ${location}: ${errorMessage(err)}`, { cause: err });
  }
  logger.info({ kind: 'pglite', dataDir: location, schema }, 'database ready');

  let destroyed: Promise<void> | undefined;
  const kysely = db;
  return {
    db: kysely,
    kind: 'pglite',
    schema,
    destroy: () => (destroyed ??= close()),
    ping: () => (destroyed ? Promise.reject(new Error('The database is closed')) : ping(kysely, [])),
  };
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

async function ping(db: Kysely<any>, secrets: readonly string[]): Promise<void> {
  try {
    await sql`select 1`.execute(db);
  } catch (err) {
    throw new Error(redactSecrets(errorMessage(err), secrets));
  }
}
