import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  // Read-only dashboard share links. The link itself is a signed JWT; this row lets an admin revoke it.
  await db.schema
    .createTable('dashboard_shares')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('group_name', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('revoked_at', 'timestamptz')
    .addColumn('revoked_by', 'text')
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('dashboard_shares').ifExists().execute();
}
