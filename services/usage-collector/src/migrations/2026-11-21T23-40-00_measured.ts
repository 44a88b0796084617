import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  // Measured usage per user and poll, from Prometheus; one row per (user, at), so a retried poll is a no-op.
  await db.schema
    .createTable('measured_samples')
    .addColumn('user_name', 'text', (c) => c.notNull())
    .addColumn('at', 'timestamptz', (c) => c.notNull())
    .addColumn('window_seconds', 'integer', (c) => c.notNull())
    .addColumn('cpu_seconds', 'double precision', (c) => c.notNull())
    .addColumn('memory_working_set_bytes', 'double precision', (c) => c.notNull())
    .addColumn('cpu_request', 'double precision', (c) => c.notNull())
    .addColumn('memory_request_bytes', 'double precision', (c) => c.notNull())
    .addPrimaryKeyConstraint('measured_samples_pk', ['user_name', 'at'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('measured_samples').ifExists().execute();
}
