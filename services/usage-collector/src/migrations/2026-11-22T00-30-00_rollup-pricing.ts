import { sql } from 'kysely';
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  // Rollups now hold the priced pieces themselves (billed seconds per day, per profile and
  // resources, plus measured use above the request), so statements can read them instead of raw rows.
  await sql`alter table daily_usage alter column seconds type numeric`.execute(db);
  await db.schema
    .alterTable('daily_usage')
    .addColumn('resources', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('billed_seconds', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('cpu_extra', 'numeric', (c) => c.notNull().defaultTo(0))
    .addColumn('gib_extra', 'numeric', (c) => c.notNull().defaultTo(0))
    .execute();
  // Rows rolled up before this migration: time billed as is, resources as the per-second average.
  await sql`update daily_usage set billed_seconds = ceil(seconds),
      resources = jsonb_build_object('cpuGuarantee', cpu_seconds / seconds, 'cpuLimit', 0,
        'memGuaranteeGiB', gib_seconds / seconds, 'memLimitGiB', 0, 'gpus', round(gpu_seconds / seconds))
    where seconds > 0`.execute(db);
  await sql`alter table daily_usage drop constraint daily_usage_pk`.execute(db);
  await sql`alter table daily_usage add constraint daily_usage_pk primary key (user_name, day, profile, resources)`.execute(db);
  await db.schema.createIndex('daily_usage_day').on('daily_usage').column('day').execute();
  await db.schema.createIndex('daily_usage_groups').on('daily_usage').using('gin').column('groups').execute();
  // Range reads (`stopped > from`) and the retention sweep (`stopped < before`).
  await db.schema.createIndex('sessions_stopped').on('sessions').column('stopped').execute();
  await db.schema.createIndex('measured_samples_at').on('measured_samples').column('at').execute();
  // When each poll began listing the hub, so overlapping polls (two replicas) would show.
  await db.schema.alterTable('polls').addColumn('started', 'timestamptz').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('polls').dropColumn('started').execute();
  await db.schema.dropIndex('measured_samples_at').ifExists().execute();
  await db.schema.dropIndex('sessions_stopped').ifExists().execute();
  await db.schema.dropIndex('daily_usage_groups').ifExists().execute();
  await db.schema.dropIndex('daily_usage_day').ifExists().execute();
  await sql`alter table daily_usage drop constraint daily_usage_pk`.execute(db);
  await sql`delete from daily_usage a using daily_usage b
    where a.user_name = b.user_name and a.day = b.day and a.profile = b.profile and a.ctid > b.ctid`.execute(db);
  await sql`alter table daily_usage add constraint daily_usage_pk primary key (user_name, day, profile)`.execute(db);
  await db.schema.alterTable('daily_usage').dropColumn('resources').dropColumn('billed_seconds').dropColumn('cpu_extra').dropColumn('gib_extra').execute();
  await sql`alter table daily_usage alter column seconds type bigint using round(seconds)`.execute(db);
}
