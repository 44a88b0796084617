/**
 * Read-only share links for a course dashboard: a JWT (signed with @fastify/jwt, audience and
 * expiry) whose id is recorded in `dashboard_shares`, so an admin can revoke it before it expires.
 */
import { randomUUID } from 'node:crypto';
import type { JWT } from '@fastify/jwt';
import type { Kysely } from 'kysely';

export const SHARE_AUDIENCE = 'hubside-usage-dashboard-share';
export const MAX_SHARE_DAYS = 90;

export interface DashboardSharesTable {
  id: string;
  group_name: string;
  created_by: string;
  created_at: Date | string;
  expires_at: Date | string;
  revoked_at: Date | string | null;
  revoked_by: string | null;
}
export interface SharesDB {
  dashboard_shares: DashboardSharesTable;
}

export interface Share {
  id: string;
  group: string;
  created_by: string;
  created_at: string;
  expires_at: string;
  revoked_at: string | null;
  revoked_by: string | null;
}

const toShare = (r: DashboardSharesTable): Share => ({
  id: r.id,
  group: r.group_name,
  created_by: r.created_by,
  created_at: new Date(r.created_at).toISOString(),
  expires_at: new Date(r.expires_at).toISOString(),
  revoked_at: r.revoked_at ? new Date(r.revoked_at).toISOString() : null,
  revoked_by: r.revoked_by,
});

export type ShareCheck = { ok: true; share: Share } | { ok: false; reason: 'invalid' | 'expired' | 'revoked' };

/**
 * `keys[0]` signs; every key verifies, so rotating keys (newest first) keeps live links working
 * until their own expiry.
 */
export function sharesService(db: Kysely<SharesDB>, jwt: JWT, keys: readonly string[]) {
  return {
    async create(group: string, createdBy: string, days: number, now = new Date()): Promise<{ share: Share; token: string }> {
      const id = randomUUID();
      const expires = new Date(now.getTime() + days * 86_400_000);
      const row = { id, group_name: group, created_by: createdBy, created_at: now, expires_at: expires, revoked_at: null, revoked_by: null };
      await db.insertInto('dashboard_shares').values(row).execute();
      const token = jwt.sign({ grp: group }, { key: keys[0]!, jti: id, aud: SHARE_AUDIENCE, sub: createdBy, expiresIn: days * 86_400_000 });
      return { share: toShare(row), token };
    },

    async check(token: string): Promise<ShareCheck> {
      let payload: { jti?: unknown; grp?: unknown } | undefined;
      let expired = false;
      for (const key of keys) {
        try {
          payload = jwt.verify<{ jti?: unknown; grp?: unknown }>(token, { key, allowedAud: SHARE_AUDIENCE });
          break;
        } catch (err) {
          // An expired signature is still ours: say "expired", not "invalid".
          if ((err as { code?: string }).code === 'FAST_JWT_EXPIRED') expired = true;
        }
      }
      if (!payload) return { ok: false, reason: expired ? 'expired' : 'invalid' };
      if (typeof payload.jti !== 'string' || typeof payload.grp !== 'string') return { ok: false, reason: 'invalid' };
      const row = await db.selectFrom('dashboard_shares').selectAll().where('id', '=', payload.jti).executeTakeFirst();
      if (!row || row.group_name !== payload.grp) return { ok: false, reason: 'invalid' };
      if (row.revoked_at) return { ok: false, reason: 'revoked' };
      // The row's expiry is authoritative too, so a shortened link can't outlive it.
      if (new Date(row.expires_at).getTime() <= Date.now()) return { ok: false, reason: 'expired' };
      return { ok: true, share: toShare(row) };
    },

    async list(opts: { createdBy?: string } = {}): Promise<Share[]> {
      let q = db.selectFrom('dashboard_shares').selectAll().orderBy('created_at', 'desc').limit(500);
      if (opts.createdBy !== undefined) q = q.where('created_by', '=', opts.createdBy);
      return (await q.execute()).map(toShare);
    },

    async get(id: string): Promise<Share | null> {
      const row = await db.selectFrom('dashboard_shares').selectAll().where('id', '=', id).executeTakeFirst();
      return row ? toShare(row) : null;
    },

    async revoke(id: string, by: string, now = new Date()): Promise<Share | null> {
      await db.updateTable('dashboard_shares').set({ revoked_at: now, revoked_by: by }).where('id', '=', id).where('revoked_at', 'is', null).execute();
      return this.get(id);
    },
  };
}
export type SharesService = ReturnType<typeof sharesService>;
