import type { Kysely } from 'kysely';
import { sql } from 'kysely';

// Versions are append-only: the newest row is the live document, older rows are history.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('profile_versions')
    .addColumn('id', 'integer', (c) => c.primaryKey())
    .addColumn('document', 'text', (c) => c.notNull())
    .addColumn('author', 'text', (c) => c.notNull())
    .addColumn('message', 'text', (c) => c.notNull())
    .addColumn('parent_id', 'integer')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('profile_versions').execute();
}
