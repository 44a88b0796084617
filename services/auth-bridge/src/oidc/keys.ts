import { randomBytes, randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair } from 'jose';
import type { Kysely } from 'kysely';
import type { DB } from '../db.table.js';

export interface KeyMaterial {
  /** Private JWKs, newest first: the first signs, the rest still verify. */
  jwks: { keys: Record<string, unknown>[] };
  /** Cookie signing keys, newest first. */
  cookieKeys: string[];
}

// Retired keys stay published this long, so tokens signed before a rotation still verify.
const RETIRED_KEEP_MS = 7 * 24 * 3600 * 1000;

async function newSigningKey(db: Kysely<DB>): Promise<void> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = randomUUID();
  const jwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
  await db.insertInto('signing_key').values({ kid, kind: 'signing', material: JSON.stringify(jwk), retired_at: null }).execute();
}

async function newCookieKey(db: Kysely<DB>): Promise<void> {
  const kid = randomUUID();
  await db
    .insertInto('signing_key')
    .values({ kid, kind: 'cookie', material: JSON.stringify({ k: randomBytes(32).toString('base64url') }), retired_at: null })
    .execute();
}

/** Load the keys, creating the first ones on a fresh database; retire keys past `maxAgeDays`. */
export async function loadKeys(db: Kysely<DB>, opts: { maxAgeDays?: number } = {}): Promise<KeyMaterial> {
  let rows = await db.selectFrom('signing_key').selectAll().orderBy('created_at', 'desc').orderBy('kid').execute();
  const activeSigning = rows.filter((r) => r.kind === 'signing' && !r.retired_at);
  const stale =
    opts.maxAgeDays && activeSigning[0] && Date.now() - new Date(activeSigning[0].created_at).getTime() > opts.maxAgeDays * 86_400_000;
  if (activeSigning.length === 0 || stale) await rotateKeys(db);
  if (!rows.some((r) => r.kind === 'cookie' && !r.retired_at)) await newCookieKey(db);
  if (activeSigning.length === 0 || stale || !rows.some((r) => r.kind === 'cookie')) {
    rows = await db.selectFrom('signing_key').selectAll().orderBy('created_at', 'desc').orderBy('kid').execute();
  }
  const cutoff = Date.now() - RETIRED_KEEP_MS;
  const parse = (m: unknown) => (typeof m === 'string' ? JSON.parse(m) : m) as Record<string, unknown>;
  const usable = rows.filter((r) => !r.retired_at || new Date(r.retired_at).getTime() > cutoff);
  // Active keys before retired ones, newest first within each.
  const ordered = [...usable.filter((r) => !r.retired_at), ...usable.filter((r) => r.retired_at)];
  return {
    jwks: { keys: ordered.filter((r) => r.kind === 'signing').map((r) => parse(r.material)) },
    cookieKeys: ordered.filter((r) => r.kind === 'cookie').map((r) => String(parse(r.material).k)),
  };
}

/** A new signing key takes over; the old ones are retired but keep verifying for a week. */
export async function rotateKeys(db: Kysely<DB>): Promise<string> {
  await db.updateTable('signing_key').set({ retired_at: new Date() }).where('kind', '=', 'signing').where('retired_at', 'is', null).execute();
  await newSigningKey(db);
  const row = await db
    .selectFrom('signing_key')
    .select('kid')
    .where('kind', '=', 'signing')
    .where('retired_at', 'is', null)
    .executeTakeFirstOrThrow();
  return row.kid;
}
