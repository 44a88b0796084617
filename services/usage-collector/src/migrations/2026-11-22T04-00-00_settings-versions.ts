import type { Kysely } from 'kysely';
import { sql } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  // Rate cards and budgets, one row per version: from the community file, or saved by an admin
  // on the dashboard. The newest row is in force; older rows are the history.
  await db.schema
    .createTable('usage_settings')
    .addColumn('id', 'integer', (c) => c.primaryKey())
    .addColumn('settings', 'jsonb', (c) => c.notNull())
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('author', 'text', (c) => c.notNull())
    .addColumn('note', 'text', (c) => c.notNull().defaultTo(''))
    /** For versions from the community file: a hash of that file's section, to notice a new file. */
    .addColumn('file_hash', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('usage_settings').ifExists().execute();
}
