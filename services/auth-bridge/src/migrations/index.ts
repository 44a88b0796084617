import type { MigrationSet } from '@hubside/service-kit';
import { sql } from 'kysely';
import type { Kysely } from 'kysely';

/** Timestamped migrations, applied in name order. The same SQL runs on Postgres and PGlite. */
export const migrations: MigrationSet = {
  '2026-11-21T23-00-00_init': {
    async up(db: Kysely<any>) {
      // Every oidc-provider model (sessions, grants, codes, tokens, interactions) in one table.
      await db.schema
        .createTable('oidc_model')
        .addColumn('model', 'text', (c) => c.notNull())
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('payload', 'jsonb', (c) => c.notNull())
        .addColumn('grant_id', 'text')
        .addColumn('user_code', 'text')
        .addColumn('uid', 'text')
        .addColumn('account_id', 'text')
        .addColumn('expires_at', 'timestamptz')
        .addColumn('consumed_at', 'timestamptz')
        .addPrimaryKeyConstraint('oidc_model_pk', ['model', 'id'])
        .execute();
      await db.schema.createIndex('oidc_model_grant').on('oidc_model').column('grant_id').execute();
      await db.schema.createIndex('oidc_model_uid').on('oidc_model').column('uid').execute();
      await db.schema.createIndex('oidc_model_account').on('oidc_model').column('account_id').execute();
      await db.schema.createIndex('oidc_model_expires').on('oidc_model').column('expires_at').execute();

      // Signing keys (private JWKs) and cookie keys; the newest active key signs.
      await db.schema
        .createTable('signing_key')
        .addColumn('kid', 'text', (c) => c.primaryKey())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('material', 'jsonb', (c) => c.notNull())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('retired_at', 'timestamptz')
        .execute();

      // Pending upstream logins: one row per state, deleted when used (so a replayed state fails).
      await db.schema
        .createTable('upstream_login')
        .addColumn('state', 'text', (c) => c.primaryKey())
        .addColumn('idp', 'text', (c) => c.notNull())
        .addColumn('interaction_uid', 'text', (c) => c.notNull())
        .addColumn('hub', 'text', (c) => c.notNull())
        .addColumn('nonce', 'text', (c) => c.notNull())
        .addColumn('code_verifier', 'text', (c) => c.notNull())
        .addColumn('access_code', 'text')
        .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
        .execute();

      // Accounts as the hubs see them: one per (hub, upstream subject).
      await db.schema
        .createTable('account')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('hub', 'text', (c) => c.notNull())
        .addColumn('idp', 'text', (c) => c.notNull())
        .addColumn('upstream_sub', 'text', (c) => c.notNull())
        .addColumn('username', 'text', (c) => c.notNull())
        .addColumn('email', 'text')
        .addColumn('name', 'text')
        .addColumn('groups', 'jsonb', (c) => c.notNull())
        .addColumn('admin', 'boolean', (c) => c.notNull().defaultTo(false))
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .execute();

      await db.schema
        .createTable('access_code')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('code_hash', 'text', (c) => c.notNull().unique())
        .addColumn('hub', 'text', (c) => c.notNull())
        .addColumn('group_name', 'text', (c) => c.notNull())
        .addColumn('idps', 'jsonb', (c) => c.notNull())
        .addColumn('max_uses', 'integer', (c) => c.notNull())
        .addColumn('uses', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
        .addColumn('revoked_at', 'timestamptz')
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .execute();

      // Group memberships granted by a code, valid until the code's expiry.
      await db.schema
        .createTable('code_membership')
        .addColumn('account_id', 'text', (c) => c.notNull())
        .addColumn('code_id', 'text', (c) => c.notNull())
        .addColumn('group_name', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
        .addPrimaryKeyConstraint('code_membership_pk', ['account_id', 'code_id'])
        .execute();

      await db.schema
        .createTable('login_event')
        .addColumn('id', 'serial', (c) => c.primaryKey())
        .addColumn('at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('hub', 'text', (c) => c.notNull())
        .addColumn('idp', 'text', (c) => c.notNull())
        .addColumn('username', 'text')
        .addColumn('outcome', 'text', (c) => c.notNull())
        .addColumn('reason', 'text')
        .execute();
      await db.schema.createIndex('login_event_at').on('login_event').column('at').execute();
    },
    async down(db: Kysely<any>) {
      for (const t of ['login_event', 'code_membership', 'access_code', 'account', 'upstream_login', 'signing_key', 'oidc_model']) {
        await db.schema.dropTable(t).ifExists().execute();
      }
    },
  },
  '2026-12-03T18-00-00_code-groups-apart': {
    // Accounts used to store a code's group among their own groups, so it outlived a revoke.
    // Take it out: a code's group lives only in code_membership now. Someone who also has that
    // group from their institution gets it back at their next login.
    async up(db: Kysely<any>) {
      const rows = (await db
        .selectFrom('code_membership')
        .innerJoin('account', 'account.id', 'code_membership.account_id')
        .select(['account.id as id', 'account.groups as groups', 'code_membership.group_name as group_name'])
        .execute()) as { id: string; groups: unknown; group_name: string }[];
      const byAccount = new Map<string, { groups: string[]; drop: Set<string> }>();
      for (const r of rows) {
        const groups = Array.isArray(r.groups) ? (r.groups as string[]) : typeof r.groups === 'string' ? (JSON.parse(r.groups) as string[]) : [];
        const entry = byAccount.get(r.id) ?? { groups, drop: new Set<string>() };
        entry.drop.add(r.group_name);
        byAccount.set(r.id, entry);
      }
      for (const [id, { groups, drop }] of byAccount) {
        const kept = groups.filter((g) => !drop.has(g));
        if (kept.length !== groups.length) await db.updateTable('account').set({ groups: JSON.stringify(kept) }).where('id', '=', id).execute();
      }
    },
    async down() {},
  },
};
