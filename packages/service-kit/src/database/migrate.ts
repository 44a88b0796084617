// kysely 0.28 (the last line that runs on Node 20) exports Migrator from its main entry;
// the `kysely/migration` subpath only exists from 0.29.
import { Migrator, sql } from 'kysely';
import type { Kysely, Migration, MigrationProvider, MigrationResult } from 'kysely';
import type { Database } from './database.js';

export type { Migration } from 'kysely';

/** Migrations by name, e.g. `{ '2026-11-21T00-00-00_init': { up, down } }`. Applied in name order. */
export type MigrationSet = Record<string, Migration>;

export interface MigrateOptions {
  /** 'latest' applies every pending migration; 'down' reverts the last applied one. */
  direction?: 'latest' | 'down';
}

export interface MigrateResult {
  /** Names of the migrations run by this call, in the order they ran (reverted ones for 'down'). */
  applied: string[];
}

// The name's timestamp is what orders migrations, and kysely refuses a new migration that sorts
// before one already applied, so a name like `add_index` would break the next deploy.
const MIGRATION_NAME = /^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}_[A-Za-z0-9_-]+$/;

function validate(migrations: MigrationSet): void {
  for (const [name, migration] of Object.entries(migrations)) {
    if (!MIGRATION_NAME.test(name)) {
      throw new Error(
        `Invalid migration name ${JSON.stringify(name)}: expected a timestamp and a label, ` +
          `e.g. "2026-11-21T00-00-00_init"`,
      );
    }
    if (typeof migration?.up !== 'function') {
      throw new Error(`Migration "${name}" has no up() function`);
    }
  }
}

/**
 * Brings the service's schema up to date (or one step down). The bookkeeping tables
 * (kysely_migration, kysely_migration_lock) live in the service's own schema. Safe to run from
 * several processes at once: kysely holds a Postgres advisory lock while it migrates, and the
 * migrations themselves run in one transaction. The lock key is fixed, so services that share
 * one database migrate one after another, never at the same time.
 */
export async function migrate(
  database: Database<any>,
  migrations: MigrationSet,
  opts: MigrateOptions = {},
): Promise<MigrateResult> {
  validate(migrations);
  const direction = opts.direction ?? 'latest';
  const provider: MigrationProvider = { getMigrations: async () => migrations };

  // One connection for the whole run so the session settings below cover the lock wait and
  // every migration statement: the pool's statement_timeout would otherwise cancel a long
  // CREATE INDEX, or the wait for another process that is migrating.
  const { error, results } = await database.db.connection().execute(async (connection: Kysely<any>) => {
    await sql`set statement_timeout = 0`.execute(connection);
    try {
      const migrator = new Migrator({ db: connection, provider, migrationTableSchema: database.schema });
      return direction === 'down' ? await migrator.migrateDown() : await migrator.migrateToLatest();
    } finally {
      // Best effort: if the connection broke, keep the migration's own error.
      await sql`reset statement_timeout`.execute(connection).catch(() => {});
    }
  });

  if (error !== undefined) throw migrationError(database.schema, error, results);
  return {
    applied: (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName),
  };
}

function migrationError(schema: string, error: unknown, results: MigrationResult[] | undefined): Error {
  const reason = error instanceof Error ? error.message : String(error);
  const failed = results?.find((r) => r.status === 'Error');
  if (failed) {
    const verb = failed.direction === 'Up' ? 'apply' : 'revert';
    const message =
      `Could not ${verb} migration "${failed.migrationName}" in schema ${schema}: ${reason}. ` +
      `Its changes were rolled back, as were those of the migrations run before it in this batch.`;
    return new Error(message, { cause: error });
  }
  return new Error(`Migrations in schema ${schema} failed: ${reason}`, { cause: error });
}
