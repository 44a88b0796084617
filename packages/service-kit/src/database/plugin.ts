import { performance } from 'node:perf_hooks';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Kysely } from 'kysely';
import { createDatabase, redactSecrets } from './database.js';
import type { CreateDatabaseOptions, Database } from './database.js';
import { migrate } from './migrate.js';
import type { MigrationSet } from './migrate.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** The service's database, search_path set to its schema. */
    db: Kysely<any>;
    /** The same database with its kind, schema, ping() and destroy(). */
    database: Database<any>;
  }
}

export interface DatabasePluginOptions extends Omit<CreateDatabaseOptions, 'logger'> {
  migrations?: MigrationSet;
  /** Run pending migrations before the app is ready. Default true. */
  migrateOnStart?: boolean;
}

export interface DatabaseHealth {
  ok: boolean;
  latencyMs: number;
  /** Why the check failed; holds no connection string or password. */
  error?: string;
}

/**
 * Readiness check: pings the database and gives up after `timeoutMs` (default 2 000), so a
 * hung connection makes the probe fail rather than hang.
 */
export async function databaseHealth(
  database: Database<any>,
  opts: { timeoutMs?: number } = {},
): Promise<DatabaseHealth> {
  const timeoutMs = opts.timeoutMs ?? 2_000;
  const started = performance.now();
  const elapsed = () => Math.round((performance.now() - started) * 100) / 100;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      database.ping(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the database did not answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return { ok: true, latencyMs: elapsed() };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return { ok: false, latencyMs: elapsed(), error: redactSecrets(message) };
  } finally {
    clearTimeout(timer);
  }
}

async function registerDatabase(fastify: FastifyInstance, opts: DatabasePluginOptions): Promise<void> {
  const { migrations, migrateOnStart = true, ...databaseOptions } = opts;
  const database = await createDatabase<any>({ ...databaseOptions, logger: fastify.log });
  try {
    if (migrations && migrateOnStart) {
      const { applied } = await migrate(database, migrations);
      fastify.log.info({ schema: database.schema, applied }, applied.length ? 'database migrated' : 'database schema up to date');
    }
  } catch (err) {
    // The app never becomes ready, so onClose would not run: release the pool or PGlite's lock now.
    await database.destroy();
    throw err;
  }
  fastify.decorate('db', database.db);
  fastify.decorate('database', database);
  fastify.addHook('onClose', async () => {
    await database.destroy();
  });
}

/** Decorates `fastify.db` and `fastify.database`, runs migrations, closes in onClose. */
export const databasePlugin = fp(registerDatabase, { name: 'hubside-database', fastify: '5.x' });
export default databasePlugin;
