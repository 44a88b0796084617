import type { Kysely } from 'kysely';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import type { DB } from '../db.table.js';
import { storable } from '../text.js';

/**
 * oidc-provider's storage on kysely: every model (Session, Grant, AuthorizationCode, AccessToken,
 * RefreshToken, Interaction, ...) is a row of `oidc_model`, keyed by (model, id). Expired rows
 * read as missing at once and are deleted by `cleanupExpired`.
 */
export function createOidcAdapter(db: Kysely<DB>, model: string): Adapter {
  const live = () =>
    db
      .selectFrom('oidc_model')
      .select(['payload', 'consumed_at'])
      .where('model', '=', model)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', new Date())]));

  const unpack = (row: { payload: Record<string, unknown>; consumed_at: Date | null } | undefined): AdapterPayload | undefined => {
    if (!row) return undefined;
    const payload = (typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload) as AdapterPayload;
    return row.consumed_at ? { ...payload, consumed: Math.floor(new Date(row.consumed_at).getTime() / 1000) } : payload;
  };

  return {
    async upsert(id, payload, expiresIn) {
      const expiresAt = expiresIn ? new Date(Date.now() + expiresIn * 1000) : null;
      const values = {
        payload: JSON.stringify(payload),
        grant_id: typeof payload.grantId === 'string' ? payload.grantId : null,
        user_code: typeof payload.userCode === 'string' ? payload.userCode : null,
        uid: typeof payload.uid === 'string' ? payload.uid : null,
        account_id: typeof payload.accountId === 'string' ? payload.accountId : null,
        expires_at: expiresAt,
      };
      await db
        .insertInto('oidc_model')
        .values({ model, id, ...values, consumed_at: null })
        .onConflict((oc) => oc.columns(['model', 'id']).doUpdateSet(values))
        .execute();
    },
    // Ids come from requests (tokens, codes, cookies); one the database cannot even hold
    // (a NUL) is simply not found, rather than an error.
    async find(id) {
      return storable(id) ? unpack(await live().where('id', '=', id).executeTakeFirst()) : undefined;
    },
    async findByUserCode(userCode) {
      return storable(userCode) ? unpack(await live().where('user_code', '=', userCode).executeTakeFirst()) : undefined;
    },
    async findByUid(uid) {
      return storable(uid) ? unpack(await live().where('uid', '=', uid).executeTakeFirst()) : undefined;
    },
    async consume(id) {
      if (!storable(id)) return;
      await db.updateTable('oidc_model').set({ consumed_at: new Date() }).where('model', '=', model).where('id', '=', id).execute();
    },
    async destroy(id) {
      if (!storable(id)) return;
      await db.deleteFrom('oidc_model').where('model', '=', model).where('id', '=', id).execute();
    },
    async revokeByGrantId(grantId) {
      if (!storable(grantId)) return;
      // A grant's codes and tokens live under several models; revoking the grant removes them all.
      await db.deleteFrom('oidc_model').where('grant_id', '=', grantId).execute();
    },
  };
}

/**
 * Delete every expired row: oidc-provider models, pending upstream logins, group memberships
 * from expired access codes, and login-log entries older than `loginLogDays`. Returns how many went.
 */
export async function cleanupExpired(db: Kysely<DB>, opts: { now?: Date; loginLogDays?: number } = {}): Promise<number> {
  const now = opts.now ?? new Date();
  const results = await Promise.all([
    db.deleteFrom('oidc_model').where('expires_at', '<=', now).executeTakeFirst(),
    db.deleteFrom('upstream_login').where('expires_at', '<=', now).executeTakeFirst(),
    db.deleteFrom('code_membership').where('expires_at', '<=', now).executeTakeFirst(),
    ...(opts.loginLogDays
      ? [db.deleteFrom('login_event').where('at', '<=', new Date(now.getTime() - opts.loginLogDays * 86_400_000)).executeTakeFirst()]
      : []),
  ]);
  return results.reduce((sum, r) => sum + Number(r.numDeletedRows), 0);
}
