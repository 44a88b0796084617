import { sql } from 'kysely';
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('sessions')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('user_name', 'text', (c) => c.notNull())
    .addColumn('server_name', 'text', (c) => c.notNull())
    // The hub's own start time is part of the identity: a restart of the same server is a new session.
    .addColumn('started', 'timestamptz', (c) => c.notNull())
    .addColumn('profile', 'text')
    .addColumn('user_options', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('resources', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('groups', 'jsonb', (c) => c.notNull().defaultTo(sql`'[]'::jsonb`))
    .addColumn('last_activity', 'timestamptz')
    .addColumn('first_seen', 'timestamptz', (c) => c.notNull())
    .addColumn('last_seen', 'timestamptz', (c) => c.notNull())
    // Lower bound of the stop: the last poll that saw the server. Never later than the truth.
    .addColumn('stopped', 'timestamptz')
    // Upper bound: the first poll (or restart) that no longer saw it.
    .addColumn('stop_observed', 'timestamptz')
    .addColumn('stop_source', 'text')
    .addUniqueConstraint('sessions_identity', ['user_name', 'server_name', 'started'])
    .execute();
  await db.schema.createIndex('sessions_open').on('sessions').column('stopped').where(sql.ref('stopped'), 'is', null).execute();
  await db.schema.createIndex('sessions_user_started').on('sessions').columns(['user_name', 'started']).execute();
  // Course views filter on `groups @> '["g"]'`.
  await db.schema.createIndex('sessions_groups').on('sessions').using('gin').column('groups').execute();

  await db.schema
    .createTable('polls')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('at', 'timestamptz', (c) => c.notNull())
    .addColumn('servers', 'integer', (c) => c.notNull())
    .addColumn('opened', 'integer', (c) => c.notNull())
    .addColumn('closed', 'integer', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('budget_events')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('subject_kind', 'text', (c) => c.notNull())
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('threshold', 'integer', (c) => c.notNull())
    .addColumn('window_start', 'text', (c) => c.notNull())
    .addColumn('used', 'text', (c) => c.notNull())
    .addColumn('limit_value', 'text', (c) => c.notNull())
    .addColumn('unit', 'text', (c) => c.notNull())
    .addColumn('at', 'timestamptz', (c) => c.notNull())
    .addUniqueConstraint('budget_events_once', ['subject_kind', 'subject', 'threshold', 'window_start'])
    .execute();

  // Daily per-user rollups of closed sessions, so raw rows can be deleted after `retention.rawDays`.
  await db.schema
    .createTable('daily_usage')
    .addColumn('user_name', 'text', (c) => c.notNull())
    .addColumn('day', 'text', (c) => c.notNull())
    .addColumn('profile', 'text', (c) => c.notNull())
    .addColumn('seconds', 'bigint', (c) => c.notNull())
    .addColumn('cpu_seconds', 'double precision', (c) => c.notNull())
    .addColumn('gib_seconds', 'double precision', (c) => c.notNull())
    .addColumn('gpu_seconds', 'bigint', (c) => c.notNull())
    .addColumn('sessions', 'integer', (c) => c.notNull())
    .addColumn('groups', 'jsonb', (c) => c.notNull())
    .addPrimaryKeyConstraint('daily_usage_pk', ['user_name', 'day', 'profile'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ['daily_usage', 'budget_events', 'polls', 'sessions']) await db.schema.dropTable(table).ifExists().execute();
}
