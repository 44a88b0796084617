import type { MigrationSet } from '@hubside/service-kit';
import { sql } from 'kysely';
import type { Kysely } from 'kysely';

/** Timestamped migrations, applied in name order. */
export const migrations: MigrationSet = {
  '2026-11-21T23-00-00_issuances': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('issuances')
        .addColumn('id', 'bigserial', (c) => c.primaryKey())
        .addColumn('issued_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('username', 'text', (c) => c.notNull())
        .addColumn('dataset', 'text', (c) => c.notNull())
        .addColumn('access', 'text', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('provider', 'text', (c) => c.notNull())
        .addColumn('cached', 'boolean', (c) => c.notNull())
        .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
        .addColumn('client_ip', 'text')
        .execute();
      await db.schema.createIndex('issuances_user_time').on('issuances').columns(['username', 'issued_at']).execute();
      await db.schema.createIndex('issuances_dataset_time').on('issuances').columns(['dataset', 'issued_at']).execute();
    },
    async down(db: Kysely<any>) {
      await db.schema.dropTable('issuances').execute();
    },
  },
  '2026-11-22T01-00-00_issuance-deliveries': {
    // Repeat deliveries of a cached credential are stored as counted batches, linked to the
    // backend issuance they repeat (see audit-log.ts).
    async up(db: Kysely<any>) {
      await db.schema
        .alterTable('issuances')
        .addColumn('deliveries', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('last_at', 'timestamptz')
        .addColumn('credential_id', 'text')
        .execute();
      await db.schema.createIndex('issuances_credential').on('issuances').column('credential_id').execute();
    },
    async down(db: Kysely<any>) {
      await db.schema.dropIndex('issuances_credential').execute();
      await db.schema.alterTable('issuances').dropColumn('credential_id').dropColumn('last_at').dropColumn('deliveries').execute();
    },
  },
};
