/**
 * Who may do what, and for how long. How long a group's data stays reachable after someone
 * leaves the group; who sees the issuance audit. A real JupyterHub
 * holds the groups; the service's token cache keeps its default 300 s, and the group check
 * (groupCheckSeconds) must still notice the change within seconds. The storage backend is a
 * stand-in that counts calls: what is under test is the gateway's decision, not STS.
 */
import { communitySchema, resolveSettings } from '@hubside/service-kit';
import { createTestDatabase, startHub, waitFor } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../src/app.js';
import type { Backend } from '../src/backends/types.js';
import { configSchema } from '../src/config.js';

const PREFIX = '/services/data-gateway/';
let hub: RunningHub;
let database: TestDatabase;
let app: FastifyInstance;
const tokens: Record<string, string> = {};

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

const s3 = { provider: 's3-compatible', bucket: 'hub-data', endpoint: 'http://127.0.0.1:9', s3: { roleArn: 'arn:aws:iam:::role/r' } };

beforeAll(async () => {
  const serviceToken = `svc-${crypto.randomUUID()}`;
  hub = await startHub({
    users: ['alice', 'bob'],
    groups: { climate: ['alice', 'bob'], ocean: ['alice'] },
    services: [{ name: 'data-gateway', apiToken: serviceToken }],
    roles: [{ name: 'gateway-users', scopes: ['access:services!service=data-gateway'], users: ['alice', 'bob'] }],
  });
  for (const user of ['alice', 'bob']) tokens[user] = await hub.createToken(user, { note: 'group revocation' });
  database = await createTestDatabase({ schemas: ['data_gateway'] });
  const config = configSchema.parse({
    groupCheckSeconds: 1,
    groupLifetimeSeconds: 120,
    datasets: {
      'climate-shared': { ...s3, prefix: 'shared/', access: 'read', groups: ['climate'], maxLifetimeSeconds: 3600 },
      teams: { ...s3, prefix: 'groups/{group}/', access: 'read-write', groups: ['climate', 'ocean'], maxLifetimeSeconds: 3600 },
      home: { ...s3, prefix: 'home/{username}/', access: 'read-write', maxLifetimeSeconds: 3600 },
    },
  });
  const settings = resolveSettings('data-gateway', {
    JUPYTERHUB_API_URL: hub.hubApiUrl,
    JUPYTERHUB_API_TOKEN: serviceToken,
    HUBSIDE_DATA_DIR: database.dataDir,
    HUBSIDE_RATE_LIMIT_USER: '0',
    ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
  });
  // The service's token cache stays at its default (300 s): the group check must not rely on it.
  expect(settings.authCacheTtlMs).toBe(300_000);
  // alice is a community admin (not a hub admin): she may read the issuance audit.
  const community = communitySchema.parse({ name: 'rights', admins: { users: ['alice'] } });
  app = await buildApp({ settings, config, community, logger: false, defaultMetrics: false }, { backends: { 's3-compatible': backend } });
}, 90_000);

afterAll(async () => {
  await app?.close();
  await database?.drop();
  await hub?.stop();
});

async function credentials(user: string, dataset: string, access = 'read') {
  const res = await app.inject({ method: 'POST', url: `${PREFIX}api/credentials`, headers: { authorization: `token ${tokens[user]}` }, payload: { dataset, access } });
  return { status: res.statusCode, body: res.json() as { expiration: string; prefixes: string[]; credentials: { accessKeyId: string } } };
}

const removeFromGroup = async (group: string, user: string) => {
  const res = await hub.api('DELETE', `/groups/${group}/users`, { users: [user] });
  expect(res.status).toBe(200);
};

describe('leaving a group', () => {
  it('caps a group dataset\u2019s credentials at groupLifetimeSeconds, and leaves other datasets alone', async () => {
    const shared = await credentials('bob', 'climate-shared');
    expect(shared.status).toBe(200);
    const left = new Date(shared.body.expiration).getTime() - Date.now();
    expect(left).toBeGreaterThan(100_000);
    expect(left).toBeLessThanOrEqual(120_000);
    const home = await credentials('bob', 'home', 'read-write');
    expect(new Date(home.body.expiration).getTime() - Date.now()).toBeGreaterThan(3000_000);
  });

  it('stops issuing a group dataset within groupCheckSeconds, though the token cache trusts the groups for 300 s', async () => {
    const first = await credentials('bob', 'climate-shared');
    expect(first.status).toBe(200);
    await removeFromGroup('climate', 'bob');
    const started = Date.now();
    await waitFor(async () => (await credentials('bob', 'climate-shared')).status === 403, {
      timeoutMs: 10_000,
      intervalMs: 200,
      what: 'the gateway to refuse bob the climate data after he left the group',
    });
    expect(Date.now() - started).toBeLessThan(5_000);
    // Nor is it listed any more; his own home stays his.
    const listed = await app.inject({ url: `${PREFIX}api/datasets`, headers: { authorization: `token ${tokens.bob}` } });
    expect((listed.json() as { datasets: { name: string }[] }).datasets.map((d) => d.name)).toEqual(['home']);
    expect((await credentials('bob', 'home', 'read-write')).status).toBe(200);

    // What was cached for him was dropped: back in the group, he gets new credentials, not the old ones.
    await hub.addToGroup('climate', ['bob']);
    const calls = backend.calls;
    let again = await credentials('bob', 'climate-shared');
    await waitFor(async () => (again = await credentials('bob', 'climate-shared')).status === 200, { timeoutMs: 10_000, intervalMs: 200, what: 'bob back in climate' });
    expect(again.body.credentials.accessKeyId).not.toBe(first.body.credentials.accessKeyId);
    expect(backend.calls).toBe(calls + 1);
  });

  it('narrows a {group} dataset to the groups left, and drops the wider cached credentials', async () => {
    const both = await credentials('alice', 'teams');
    expect(both.body.prefixes).toEqual(['groups/climate/', 'groups/ocean/']);
    await removeFromGroup('ocean', 'alice');
    let narrowed = both;
    await waitFor(async () => (narrowed = await credentials('alice', 'teams')).body.prefixes?.length === 1, {
      timeoutMs: 10_000,
      intervalMs: 200,
      what: 'alice\u2019s teams credentials to narrow to climate',
    });
    expect(narrowed.body.prefixes).toEqual(['groups/climate/']);
    expect(narrowed.body.credentials.accessKeyId).not.toBe(both.body.credentials.accessKeyId);
    // The wider entry is gone from the cache: only the narrowed one is held for alice/teams.
    expect(app.gateway.issuer.held('alice', 'teams')).toBe(1);
  });
});

describe('strings the audit is queried with', () => {
  it('answers a NUL or a lone surrogate in a filter with a 400, not a database error', async () => {
    for (const q of ['user=a%00b', 'dataset=%00', `user=${encodeURIComponent('x')}%ED%A0%80`]) {
      const res = await app.inject({ url: `${PREFIX}api/admin/issuances?${q}`, headers: { authorization: `token ${tokens.bob}` } });
      expect(res.statusCode, q).toBeLessThan(500);
    }
    const nul = await app.inject({ url: `${PREFIX}api/admin/issuances?user=a%00b`, headers: { authorization: `token ${tokens.bob}` } });
    expect(nul.statusCode).toBe(400);
    expect(nul.json()).toMatchObject({ statusCode: 400, error: 'Bad Request' });
  });
});

describe('the issuance audit', () => {
  it('is open to community admins as to hub admins, and to nobody else', async () => {
    const alice = await app.inject({ url: `${PREFIX}api/admin/issuances?user=bob`, headers: { authorization: `token ${tokens.alice}` } });
    expect(alice.statusCode, alice.body).toBe(200);
    expect((alice.json() as { items: { user: string }[] }).items.length).toBeGreaterThan(0);
    const bob = await app.inject({ url: `${PREFIX}api/admin/issuances`, headers: { authorization: `token ${tokens.bob}` } });
    expect(bob.statusCode).toBe(403);
    expect(bob.json()).toMatchObject({ code: 'HUBSIDE_GATEWAY_ERR_ADMIN_ONLY' });
  });
});
