/**
 * Share links: signed with the newest key and still verified after a rotation, refused when signed
 * for another audience or with an unknown key, when revoked, and when expired.
 */
import fastifyJwt from '@fastify/jwt';
import type { JWT } from '@fastify/jwt';
import { createDatabase, migrate } from '@hubside/service-kit';
import { createTestDatabase } from '@hubside/testing';
import type { TestDatabase } from '@hubside/testing';
import Fastify from 'fastify';
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharesService } from '../../src/dashboard/shares.js';
import type { SharesDB } from '../../src/dashboard/shares.js';
import { migrations } from '../../src/migrations/index.js';

let test: TestDatabase;
let database: Awaited<ReturnType<typeof createDatabase>>;
let db: Kysely<SharesDB>;
let app: FastifyInstance;
let jwt: JWT;

beforeAll(async () => {
  test = await createTestDatabase({ schemas: ['usage_collector'] });
  database = await createDatabase({ databaseUrl: test.databaseUrl, dataDir: test.dataDir, schema: 'usage_collector' });
  await migrate(database, migrations);
  db = database.db as Kysely<SharesDB>;
  app = Fastify();
  await app.register(fastifyJwt, { secret: 'unused-default-key', namespace: 's' });
  await app.ready();
  jwt = (app.jwt as unknown as Record<string, JWT>).s!;
}, 60_000);

afterAll(async () => {
  await app?.close();
  await database?.destroy();
  await test?.drop();
});

describe('share links', () => {
  it('keep working after a key rotation, and stop when the old key is dropped', async () => {
    const { token, share } = await sharesService(db, jwt, ['key-2025']).create('phys', 'prof', 7);
    expect(share).toMatchObject({ group: 'phys', created_by: 'prof', revoked_at: null });
    expect(await sharesService(db, jwt, ['key-2025']).check(token)).toMatchObject({ ok: true, share: { id: share.id } });
    expect(await sharesService(db, jwt, ['key-2026', 'key-2025']).check(token)).toMatchObject({ ok: true });
    expect(await sharesService(db, jwt, ['key-2026']).check(token)).toEqual({ ok: false, reason: 'invalid' });
  });

  it('are refused for another audience, a changed group, after revocation and after expiry', async () => {
    const svc = sharesService(db, jwt, ['k']);
    const { token, share } = await svc.create('chem', 'prof', 1);
    const otherAudience = jwt.sign({ grp: 'chem' }, { key: 'k', jti: share.id, aud: 'something-else', expiresIn: 60_000 });
    expect(await svc.check(otherAudience)).toEqual({ ok: false, reason: 'invalid' });
    const otherGroup = jwt.sign({ grp: 'phys' }, { key: 'k', jti: share.id, aud: 'hubside-usage-dashboard-share', expiresIn: 60_000 });
    expect(await svc.check(otherGroup)).toEqual({ ok: false, reason: 'invalid' });

    expect((await svc.revoke(share.id, 'root'))?.revoked_by).toBe('root');
    expect(await svc.check(token)).toEqual({ ok: false, reason: 'revoked' });

    const past = new Date(Date.now() - 3 * 86_400_000);
    const old = await svc.create('chem', 'prof', 1, past);
    expect(await svc.check(old.token)).toEqual({ ok: false, reason: 'expired' });
  });
});
