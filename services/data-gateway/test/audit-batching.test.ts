/**
 * The audit keeps "who got which credentials, when, from where" while repeat deliveries of a
 * cached credential are counted in memory and written in batches. A real JupyterHub resolves
 * the tokens and a real database (PGlite, or Postgres with DATABASE_URL) stores the rows. The
 * storage backend is a stand-in that counts calls: what is under test is the audit, and the
 * real STS path is covered by gateway-rgw.test.ts.
 */
import { resolveSettings } from '@hubside/service-kit';
import { createTestDatabase, startHub, waitFor } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../src/app.js';
import type { Backend } from '../src/backends/types.js';
import { configSchema } from '../src/config.js';
import type { GatewayDB } from '../src/issuances.table.js';

const PREFIX = '/services/data-gateway/';
let hub: RunningHub;
let serviceToken: string;
const tokens: Record<string, string> = {};
const open: FastifyInstance[] = [];
const databases: TestDatabase[] = [];

const backend: Backend & { calls: number } = {
  name: 'stand-in-sts',
  calls: 0,
  async issue(req) {
    backend.calls += 1;
    return {
      provider: req.dataset.provider,
      credentials: { accessKeyId: `AK${backend.calls}`, secretAccessKey: 'not-a-secret', sessionToken: 'not-a-token' },
      expiration: new Date(Date.now() + req.durationSeconds * 1000),
    };
  },
};

beforeAll(async () => {
  serviceToken = `svc-${crypto.randomUUID()}`;
  hub = await startHub({
    users: ['alice', 'ada'],
    admins: ['ada'],
    services: [{ name: 'data-gateway', apiToken: serviceToken }],
    roles: [{ name: 'gateway-users', scopes: ['access:services!service=data-gateway'], users: ['alice', 'ada'] }],
  });
  for (const user of ['alice', 'ada']) tokens[user] = await hub.createToken(user, { note: 'audit batching' });
}, 90_000);

afterEach(async () => {
  await Promise.all(open.splice(0).map((a) => a.close()));
  await Promise.all(databases.splice(0).map((d) => d.drop()));
});

afterAll(async () => {
  await hub?.stop();
});

async function newDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase({ schemas: ['data_gateway'] });
  databases.push(db);
  return db;
}

async function gateway(database: TestDatabase, audit: { flushSeconds: number; maxPendingBatches?: number }, using: Backend = backend): Promise<FastifyInstance> {
  const config = configSchema.parse({
    audit,
    datasets: {
      home: { provider: 's3-compatible', bucket: 'hub-data', endpoint: 'http://127.0.0.1:9', prefix: 'home/{username}/', access: 'read-write', s3: { roleArn: 'arn:aws:iam:::role/r' } },
    },
  });
  const settings = resolveSettings('data-gateway', {
    JUPYTERHUB_API_URL: hub.hubApiUrl,
    JUPYTERHUB_API_TOKEN: serviceToken,
    HUBSIDE_DATA_DIR: database.dataDir,
    HUBSIDE_RATE_LIMIT_USER: '0',
    ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
  });
  const app = await buildApp({ settings, config, logger: false, defaultMetrics: false }, { backends: { 's3-compatible': using } });
  open.push(app);
  return app;
}

async function credentials(app: FastifyInstance, from: string) {
  const res = await app.inject({
    method: 'POST',
    url: `${PREFIX}api/credentials`,
    remoteAddress: from,
    headers: { authorization: `token ${tokens.alice}` },
    payload: { dataset: 'home', access: 'read-write' },
  });
  expect(res.statusCode, res.body).toBe(200);
}

/** The rows as stored, read straight from the table (no flush on the way). */
async function stored(app: FastifyInstance) {
  const rows = await (app.db as Kysely<GatewayDB>).selectFrom('issuances').selectAll().orderBy('id').execute();
  return rows.map((r) => ({ cached: r.cached, ip: r.client_ip, deliveries: r.deliveries, credential: r.credential_id }));
}

async function listing(app: FastifyInstance, query = '') {
  const res = await app.inject({ url: `${PREFIX}api/admin/issuances${query}`, headers: { authorization: `token ${tokens.ada}` } });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as { items: { cached: boolean; deliveries: number; clientIp: string; credentialId: string; issuedAt: string; lastAt: string | null; user: string }[] };
}

describe('issuances are durable before the answer; repeat deliveries are batched', () => {
  it('a graceful close writes every pending delivery: nothing is lost', async () => {
    const database = await newDatabase();
    const app = await gateway(database, { flushSeconds: 60 });
    await credentials(app, '10.0.0.1'); // the backend issuance
    const before = backend.calls;
    for (let i = 0; i < 30; i += 1) await credentials(app, '10.0.0.1');
    for (let i = 0; i < 20; i += 1) await credentials(app, '10.0.0.2');
    expect(backend.calls).toBe(before);
    // Only the issuance is stored so far; the 50 repeat deliveries are counted in memory.
    const early = await stored(app);
    expect(early).toHaveLength(1);
    expect(early[0]).toMatchObject({ cached: false, ip: '10.0.0.1', deliveries: 1 });
    expect(app.gateway.auditLog.pendingDeliveries).toBe(50);

    await app.close();
    open.splice(open.indexOf(app), 1);
    const reopened = await gateway(database, { flushSeconds: 60 });
    const rows = await stored(reopened);
    expect(rows).toEqual([
      { cached: false, ip: '10.0.0.1', deliveries: 1, credential: early[0]!.credential },
      { cached: true, ip: '10.0.0.1', deliveries: 30, credential: early[0]!.credential },
      { cached: true, ip: '10.0.0.2', deliveries: 20, credential: early[0]!.credential },
    ]);
    const { items } = await listing(reopened, `?credential=${early[0]!.credential}`);
    expect(items).toHaveLength(3);
    for (const item of items) {
      expect(item.user).toBe('alice');
      if (item.deliveries > 1) expect(new Date(item.lastAt!).getTime()).toBeGreaterThanOrEqual(new Date(item.issuedAt).getTime());
    }
  });

  it('pending deliveries are written on the timer, without a close', async () => {
    const app = await gateway(await newDatabase(), { flushSeconds: 0.2 });
    await credentials(app, '10.0.0.3');
    for (let i = 0; i < 5; i += 1) await credentials(app, '10.0.0.3');
    const rows = await waitFor(async () => {
      const r = await stored(app);
      return r.length === 2 ? r : undefined;
    }, { timeoutMs: 10_000, intervalMs: 50, what: 'the timer writes the batch' });
    expect(rows[1]).toMatchObject({ cached: true, deliveries: 5 });
    expect(app.gateway.auditLog.pendingDeliveries).toBe(0);
  });

  it('too many pending batches force a write before a new one starts (bounded memory)', async () => {
    const app = await gateway(await newDatabase(), { flushSeconds: 60, maxPendingBatches: 2 });
    await credentials(app, '10.0.1.1');
    await credentials(app, '10.0.1.1');
    await credentials(app, '10.0.1.2');
    expect(await stored(app)).toHaveLength(1);
    await credentials(app, '10.0.1.3'); // a third client: the two pending batches are written first
    expect((await stored(app)).map((r) => [r.ip, r.deliveries])).toEqual([
      ['10.0.1.1', 1],
      ['10.0.1.1', 1],
      ['10.0.1.2', 1],
    ]);
    expect(app.gateway.auditLog.pendingDeliveries).toBe(1);
  });

  it('the admin listing includes deliveries not yet written', async () => {
    const app = await gateway(await newDatabase(), { flushSeconds: 60 });
    for (let i = 0; i < 4; i += 1) await credentials(app, '10.0.2.1');
    const { items } = await listing(app, '?user=alice');
    expect(items.map((i) => [i.cached, i.deliveries])).toEqual([
      [true, 3],
      [false, 1],
    ]);
  });

  it('flushSeconds 0 writes every delivery before answering it', async () => {
    const app = await gateway(await newDatabase(), { flushSeconds: 0 });
    await credentials(app, '10.0.3.1');
    await credentials(app, '10.0.3.1');
    await credentials(app, '10.0.3.1');
    expect((await stored(app)).map((r) => [r.cached, r.deliveries])).toEqual([
      [false, 1],
      [true, 1],
      [true, 1],
    ]);
  });

  it('a request that joins an issuance in flight is not answered before the issuance row is written', async () => {
    // Found by test/faults/kill9-gateway.test.ts on a loaded machine: the request that joined
    // the backend call was answered from memory while the first one was still writing the
    // issuance row, so a kill -9 in between left a credential in a client's hands with no row.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let issuing = 0;
    const gated: Backend = {
      name: 'gated-sts',
      async issue(req) {
        issuing += 1;
        await gate;
        return { provider: req.dataset.provider, credentials: { accessKeyId: 'AKGATED', secretAccessKey: 'x', sessionToken: 'y' }, expiration: new Date(Date.now() + 900_000) };
      },
    };
    const database = await newDatabase();
    const app = await gateway(database, { flushSeconds: 60 }, gated);
    const db = app.db as Kysely<GatewayDB>;
    const ask = (ip: string) =>
      app.inject({ method: 'POST', url: `${PREFIX}api/credentials`, remoteAddress: ip, headers: { authorization: `token ${tokens.alice}` }, payload: { dataset: 'home', access: 'read-write' } });
    const answered: string[] = [];
    const first = ask('10.0.0.1').then((r) => (answered.push('first'), r));
    const joiner = ask('10.0.0.2').then((r) => (answered.push('joiner'), r));
    await waitFor(async () => issuing === 1, { timeoutMs: 10_000, intervalMs: 10, what: 'the backend call in flight' });
    // Hold the issuances table, so the issuance row cannot be written yet.
    let unlock!: () => void;
    const held = new Promise<void>((r) => (unlock = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const holder = db.transaction().execute(async (trx) => {
      await sql`lock table issuances in exclusive mode`.execute(trx);
      locked();
      await held;
    });
    await isLocked;
    release();
    // For a second, with the row unwritable, nobody may be answered.
    const early = await Promise.race([Promise.race([first, joiner]).then(() => 'answered'), new Promise<string>((r) => setTimeout(() => r('waited'), 1000))]);
    expect(early, `answered while the issuance row could not be written: ${answered.join(', ')}`).toBe('waited');
    unlock();
    await holder;
    const [a, b] = await Promise.all([first, joiner]);
    expect([a.statusCode, b.statusCode]).toEqual([200, 200]);
    expect(issuing).toBe(1);
    const rows = await stored(app);
    expect(rows.filter((r) => !r.cached)).toHaveLength(1);
  });
});
