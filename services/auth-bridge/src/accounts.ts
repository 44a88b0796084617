import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { HubConfig } from './config.js';
import type { DB } from './db.table.js';

export interface HubIdentity {
  username: string;
  email: string | null;
  name: string | null;
  groups: string[];
  admin: boolean;
}

/** Account ids are `<hub>.<opaque>`: the hub is visible (sessions are per hub), the upstream subject is not. */
export function accountId(hub: string, idp: string, upstreamSub: string): string {
  const digest = createHash('sha256').update(`${idp}\0${upstreamSub}`).digest('base64url').slice(0, 32);
  return `${hub}.${digest}`;
}

export function hubOfAccount(id: string): string {
  return id.slice(0, Math.max(0, id.indexOf('.')));
}

export async function saveAccount(
  db: Kysely<DB>,
  row: { id: string; hub: string; idp: string; upstreamSub: string } & HubIdentity,
): Promise<void> {
  const values = {
    hub: row.hub,
    idp: row.idp,
    upstream_sub: row.upstreamSub,
    username: row.username,
    email: row.email,
    name: row.name,
    groups: JSON.stringify(row.groups),
    admin: row.admin,
    updated_at: new Date(),
  };
  await db
    .insertInto('account')
    .values({ id: row.id, ...values })
    .onConflict((oc) => oc.column('id').doUpdateSet(values))
    .execute();
}

/** Did the login that stored these claims happen more than `maxAgeSeconds` ago? */
export function claimsExpired(updatedAt: Date | string, maxAgeSeconds: number, now = Date.now()): boolean {
  return new Date(updatedAt).getTime() + maxAgeSeconds * 1000 <= now;
}

/** When the account's claims came from its institution (its last login), or undefined. */
export async function claimsTime(db: Kysely<DB>, id: string): Promise<Date | undefined> {
  const row = await db.selectFrom('account').select('updated_at').where('id', '=', id).executeTakeFirst();
  return row ? new Date(row.updated_at) : undefined;
}

const asArray = (v: unknown): string[] => (Array.isArray(v) ? (v as string[]) : typeof v === 'string' ? (JSON.parse(v) as string[]) : []);

/**
 * The claims a hub receives: the account's own groups (from its institution, as of its last
 * login) plus the groups of live access codes, read at every userinfo and refresh. A code that
 * is revoked or expired adds nothing from that moment on, and admin status is worked out here
 * from the hub's current rules, so a group a code granted never leaves admin behind it.
 */
export async function loadClaims(
  db: Kysely<DB>,
  id: string,
  hubs?: Record<string, HubConfig>,
  opts: { maxAgeSeconds?: number } = {},
): Promise<Record<string, unknown> | undefined> {
  const row = await db.selectFrom('account').selectAll().where('id', '=', id).executeTakeFirst();
  if (!row) return undefined;
  // What the institution said is too old to vouch for: as if the account were unknown, so
  // userinfo and refresh refuse and the hub sends the person through a login again.
  if (opts.maxAgeSeconds !== undefined && claimsExpired(row.updated_at, opts.maxAgeSeconds)) return undefined;
  const now = new Date();
  const memberships = await db
    .selectFrom('code_membership')
    .select('group_name')
    .where('account_id', '=', id)
    .where('expires_at', '>', now)
    // Revoking deletes a code's memberships; this also covers a revoke racing a redemption.
    .where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom('access_code')
            .select('access_code.id')
            .whereRef('access_code.id', '=', 'code_membership.code_id')
            .where((eb) => eb.or([eb('access_code.revoked_at', 'is not', null), eb('access_code.expires_at', '<=', now)])),
        ),
      ),
    )
    .execute();
  const groups = [...new Set([...asArray(row.groups), ...memberships.map((m) => m.group_name)])].sort();
  const hub = hubs?.[row.hub];
  const admin = hub ? hub.adminUsers.includes(row.username) || hub.adminGroups.some((g) => groups.includes(g)) : row.admin;
  return {
    sub: id,
    username: row.username,
    groups,
    email: row.email ?? undefined,
    name: row.name ?? undefined,
    idp: row.idp,
    admin,
  };
}
