/**
 * End to end: the real JupyterHub resolves tokens and groups, a real Ceph RGW issues STS
 * credentials with the gateway's session policies and enforces them, boto3 picks them up.
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { resolveSettings } from '@hubside/service-kit';
import { createTestDatabase, freePort, startHub, waitFor } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../src/app.js';
import { configSchema } from '../src/config.js';
import { startCephRgw } from './helpers/ceph-rgw.js';
import type { CephRgw } from './helpers/ceph-rgw.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../bin/hubside-creds.js', import.meta.url));
const PREFIX = '/services/data-gateway/';
const BUCKET = 'hub-data';
const SHORT = 5; // seconds: the shortest session RGW is configured to allow here

let rgw: CephRgw;
let hub: RunningHub;
let database: TestDatabase;
let app: FastifyInstance;
let base: string;
let blackHole: Server;
const sockets = new Set<Socket>();
const children: ChildProcess[] = [];
const tokens: Record<string, string> = {};

interface Creds {
  dataset: string;
  expiration: string;
  endpoint: string;
  bucket: string;
  prefix: string;
  prefixes: string[];
  credentials: { accessKeyId: string; secretAccessKey: string; sessionToken: string };
}

async function call(method: string, path: string, token: string | null, body?: unknown) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { ...(token ? { authorization: `token ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as any };
}

const credsFor = async (user: string, dataset: string, access = 'read-write') => {
  const res = await call('POST', 'api/credentials', tokens[user]!, { dataset, access });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as Creds;
};

const s3With = (c: Creds) =>
  new S3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, maxAttempts: 1, credentials: c.credentials });

async function backendCalls(): Promise<number> {
  const text = await (await app.inject({ url: `${PREFIX}metrics`, headers: { authorization: `token ${tokens.ada}` } })).body;
  return text
    .split('\n')
    .filter((l) => l.startsWith('hubside_data_gateway_backend_calls_total{'))
    .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
}

const denied = async (p: Promise<unknown>) => {
  const err = (await p.then(() => undefined, (e: unknown) => e)) as { $metadata?: { httpStatusCode?: number } } | undefined;
  expect(err, 'the request should have been refused').toBeDefined();
  expect(err!.$metadata?.httpStatusCode).toBe(403);
};

beforeAll(async () => {
  blackHole = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => blackHole.listen(0, '127.0.0.1', () => r()));
  const holePort = (blackHole.address() as { port: number }).port;
  const closedPort = await freePort();
  const serviceToken = `svc-${crypto.randomUUID()}`;
  [rgw, hub, database] = await Promise.all([
    startCephRgw({ minSessionDurationSeconds: SHORT }),
    startHub({
      users: ['alice', 'bob', 'alice2', 'ada'],
      admins: ['ada'],
      groups: { climate: ['alice'], physics: ['bob'] },
      services: [{ name: 'data-gateway', apiToken: serviceToken }],
      roles: [{ name: 'gateway-users', scopes: ['access:services!service=data-gateway', 'read:metrics'], users: ['alice', 'bob', 'alice2', 'ada'] }],
    }),
    createTestDatabase({ schemas: ['data_gateway'] }),
  ]);
  const admin = new S3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } });
  await admin.send(new CreateBucketCommand({ Bucket: BUCKET }));
  for (const key of ['home/bob/secret.txt', 'home/alice2/notes.txt', 'public/readme.txt', 'groups/physics/plan.txt']) {
    await admin.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: `content of ${key}` }));
  }
  admin.destroy();

  const s3 = { roleArn: rgw.roleArn, accessKeyIdEnv: 'GW_KEY', secretAccessKeyEnv: 'GW_SECRET' };
  const common = { provider: 's3-compatible', bucket: BUCKET, endpoint: rgw.endpoint, region: 'us-east-1', s3 };
  const config = configSchema.parse({
    hubRegion: 'us-east-1',
    backendTimeoutSeconds: 2,
    datasets: {
      home: { ...common, prefix: 'home/{username}/', access: 'read-write', maxLifetimeSeconds: 900, envVar: 'SCRATCH_BUCKET' },
      climate: { ...common, prefix: 'groups/{group}/', access: 'read-write', groups: ['climate'] },
      reference: { ...common, prefix: 'public/', access: 'read' },
      short: { ...common, prefix: 'home/{username}/', access: 'read-write', maxLifetimeSeconds: SHORT },
      broken: { ...common, endpoint: `http://127.0.0.1:${closedPort}`, prefix: 'home/{username}/' },
      hanging: { ...common, endpoint: `http://127.0.0.1:${holePort}`, prefix: 'home/{username}/' },
      era5: { provider: 'gcs', bucket: 'era5-public', region: 'europe-west4', prefix: '', access: 'read' },
    },
  });
  const settings = resolveSettings('data-gateway', {
    JUPYTERHUB_API_URL: hub.hubApiUrl,
    JUPYTERHUB_API_TOKEN: serviceToken,
    HUBSIDE_DATA_DIR: database.dataDir,
    ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
  });
  app = await buildApp({ settings, config, logger: false, defaultMetrics: false }, { env: { GW_KEY: rgw.accessKeyId, GW_SECRET: rgw.secretAccessKey } });
  await app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}${PREFIX}`;
  for (const user of ['alice', 'bob', 'alice2', 'ada']) tokens[user] = await hub.createToken(user, { note: 'gateway e2e' });
}, 120_000);

afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
  await app?.close();
  for (const s of sockets) s.destroy();
  await new Promise((r) => blackHole?.close(r));
  await Promise.all([hub?.stop(), rgw?.stop()]);
  await database?.drop();
});

describe('refusals never reach the backend', () => {
  it('a wrong token gets 401, a missing one 401, a dataset outside the groups 403; no STS call', async () => {
    const before = await backendCalls();
    expect((await call('POST', 'api/credentials', 'not-a-token-0123456789', { dataset: 'home' })).status).toBe(401);
    expect((await call('POST', 'api/credentials', null, { dataset: 'home' })).status).toBe(401);
    const expired = await hub.createToken('alice', { expiresIn: 1 });
    // Wait until the hub itself refuses it; the gateway never saw it valid, so nothing is cached.
    await waitFor(async () => (await hub.api('GET', '/user', undefined, expired)).status === 403, { timeoutMs: 15_000, intervalMs: 250, what: 'the hub expires the token' });
    expect((await call('POST', 'api/credentials', expired, { dataset: 'home' })).status).toBe(401);
    const forbidden = await call('POST', 'api/credentials', tokens.bob!, { dataset: 'climate' });
    expect(forbidden.status).toBe(403);
    expect(forbidden.body).toMatchObject({ code: 'HUBSIDE_GATEWAY_ERR_FORBIDDEN', message: expect.stringContaining('climate') });
    const ro = await call('POST', 'api/credentials', tokens.alice!, { dataset: 'reference', access: 'read-write' });
    expect(ro.status).toBe(403);
    expect(ro.body.message).toContain('read-only');
    expect(await backendCalls()).toBe(before);
  });

  it('bad input is a 4xx naming the field', async () => {
    const res = await call('POST', 'api/credentials', tokens.alice!, { dataset: 'home', access: 'admin' });
    expect(res.status).toBe(400);
    expect(res.body.message).toContain('access');
    expect((await call('POST', 'api/credentials', tokens.alice!, { dataset: 'nope' })).status).toBe(404);
    expect((await call('POST', 'api/credentials', tokens.alice!, { dataset: '__proto__' })).status).toBe(404);
  });
});

describe('alice (group climate) against Ceph RGW', () => {
  it('can PUT, GET and LIST home/alice/', async () => {
    const c = await credsFor('alice', 'home');
    expect(c).toMatchObject({ bucket: BUCKET, prefix: 'home/alice/', endpoint: rgw.endpoint, region: 'us-east-1' });
    const s3 = s3With(c);
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'home/alice/a.txt', Body: 'mine' }));
    expect(await (await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'home/alice/a.txt' }))).Body!.transformToString()).toBe('mine');
    const list = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'home/alice/' }));
    expect(list.Contents?.map((o) => o.Key)).toEqual(['home/alice/a.txt']);
  });

  it('gets 403 on home/bob/ and home/alice2/', async () => {
    const s3 = s3With(await credsFor('alice', 'home'));
    await denied(s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'home/bob/secret.txt' })));
    await denied(s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'home/bob/x.txt', Body: 'x' })));
    await denied(s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'home/bob/' })));
    await denied(s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'home/alice2/notes.txt' })));
    await denied(s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'home/alice' })));
    await denied(s3.send(new ListObjectsV2Command({ Bucket: BUCKET })));
  });

  it('can PUT, GET and LIST groups/climate/ but not groups/physics/', async () => {
    const c = await credsFor('alice', 'climate');
    expect(c.prefixes).toEqual(['groups/climate/']);
    const s3 = s3With(c);
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'groups/climate/run.nc', Body: 'data' }));
    expect(await (await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'groups/climate/run.nc' }))).Body!.transformToString()).toBe('data');
    expect((await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'groups/climate/' }))).KeyCount).toBe(1);
    await denied(s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'groups/physics/plan.txt' })));
  });

  it('a read-only dataset reads but refuses PUT', async () => {
    const s3 = s3With(await credsFor('alice', 'reference', 'read'));
    expect(await (await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'public/readme.txt' }))).Body!.transformToString()).toBe('content of public/readme.txt');
    await denied(s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'public/evil.txt', Body: 'x' })));
  });

  it('credentials and presigned URLs stop working after they expire', async () => {
    const c = await credsFor('alice', 'short');
    const lifetime = new Date(c.expiration).getTime() - Date.now();
    expect(lifetime).toBeLessThanOrEqual(SHORT * 1000 + 2000);
    const s3 = s3With(c);
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'home/alice/short.txt', Body: 'brief' }));
    const presigned = await call('POST', 'api/presign', tokens.alice!, { dataset: 'short', key: 'home/alice/short.txt', method: 'GET' });
    expect(presigned.status).toBe(200);
    expect((await fetch(presigned.body.url)).status).toBe(200);
    await waitFor(async () => (await fetch(presigned.body.url)).status === 403, { timeoutMs: 20_000, intervalMs: 250, what: 'the presigned URL expires' });
    await waitFor(
      async () => s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'home/alice/short.txt' })).then(() => false, (e: { $metadata?: { httpStatusCode?: number } }) => e.$metadata?.httpStatusCode === 403),
      { timeoutMs: 20_000, intervalMs: 250, what: 'the session credentials expire' },
    );
    // Fresh ones are issued (the cache refreshes at 80% of the lifetime) and work again.
    const again = s3With(await credsFor('alice', 'short'));
    expect((await again.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'home/alice/short.txt' }))).$metadata.httpStatusCode).toBe(200);
  });

  it('presign refuses keys outside the policy', async () => {
    for (const key of ['home/bob/secret.txt', 'home/alice2/notes.txt', 'home/alice']) {
      const res = await call('POST', 'api/presign', tokens.alice!, { dataset: 'home', key, method: 'GET' });
      expect(res.status).toBe(403);
    }
    const put = await call('POST', 'api/presign', tokens.alice!, { dataset: 'reference', key: 'public/x', method: 'PUT' });
    expect(put.status).toBe(403);
    const ok = await call('POST', 'api/presign', tokens.alice!, { dataset: 'home', key: 'home/alice/up.txt', method: 'PUT' });
    expect(ok.status).toBe(200);
    expect((await fetch(ok.body.url, { method: 'PUT', body: 'via url' })).status).toBe(200);
  });
});

describe('cache, coalescing and backend failures', () => {
  it('concurrent identical requests make one STS call and share the credentials; repeats hit the cache', async () => {
    const before = await backendCalls();
    const all = await Promise.all(Array.from({ length: 12 }, () => credsFor('bob', 'home')));
    expect(new Set(all.map((c) => c.credentials.accessKeyId)).size).toBe(1);
    expect(await backendCalls()).toBe(before + 1);
    await credsFor('bob', 'home');
    expect(await backendCalls()).toBe(before + 1);
    // A different access level is a different cache entry.
    await credsFor('bob', 'home', 'read');
    expect(await backendCalls()).toBe(before + 2);
  });

  it('an unreachable backend is a 502 naming it', async () => {
    const res = await call('POST', 'api/credentials', tokens.alice!, { dataset: 'broken' });
    expect(res.status).toBe(502);
    expect(res.body).toMatchObject({ code: 'HUBSIDE_GATEWAY_ERR_BACKEND', message: expect.stringContaining('s3-sts') });
  });

  it('a backend that never answers is a 502 within the timeout, not a hang', async () => {
    const started = Date.now();
    const res = await call('POST', 'api/credentials', tokens.alice!, { dataset: 'hanging' });
    expect(res.status).toBe(502);
    expect(res.body.message).toMatch(/s3-sts did not answer within 2000 ms/);
    expect(Date.now() - started).toBeLessThan(6_000);
  });
});

describe('audit and metrics', () => {
  it('admins list issuances with filters; users may not', async () => {
    const res = await call('GET', 'api/admin/issuances?user=alice&dataset=home&kind=credentials', tokens.ada!);
    expect(res.status).toBe(200);
    expect(res.body.items.length).toBeGreaterThan(0);
    for (const item of res.body.items) expect(item).toMatchObject({ user: 'alice', dataset: 'home', kind: 'credentials', provider: 's3-compatible', clientIp: '127.0.0.1' });
    expect(res.body.items[0]).toHaveProperty('expiresAt');
    const presigns = await call('GET', 'api/admin/issuances?kind=presign&limit=1', tokens.ada!);
    expect(presigns.body.items).toHaveLength(1);
    expect(presigns.body.next).not.toBeNull();
    expect((await call('GET', 'api/admin/issuances', tokens.alice!)).status).toBe(403);
    // bob's 12 coalesced requests and his repeat: one STS issuance, 13 answers, all in the log.
    const bob = (await call('GET', 'api/admin/issuances?user=bob&dataset=home', tokens.ada!)).body.items as { cached: boolean; access: string; credentialId: string; deliveries: number }[];
    const issued = bob.filter((i) => !i.cached && i.access === 'read-write');
    expect(issued).toHaveLength(1);
    expect(bob.filter((i) => i.credentialId === issued[0]!.credentialId).reduce((n, i) => n + i.deliveries, 0)).toBe(13);
    expect((await call('GET', 'api/admin/issuances?since=yesterday', tokens.ada!)).status).toBe(400);
  });

  it('metrics count per backend and dataset, never per user', async () => {
    const text = (await app.inject({ url: `${PREFIX}metrics`, headers: { authorization: `token ${tokens.ada}` } })).body;
    expect(text).toMatch(/hubside_data_gateway_issuances_total\{backend="s3-sts",dataset="home",kind="credentials",source="backend"[^}]*\} \d+/);
    expect(text).toMatch(/hubside_data_gateway_issuances_total\{[^}]*source="cache"[^}]*\} \d+/);
    expect(text).toMatch(/hubside_data_gateway_backend_calls_total\{backend="s3-sts",dataset="broken",outcome="error"[^}]*\} 1/);
    expect(text.split('\n').filter((l) => l.startsWith('hubside_data_gateway')).join('\n')).not.toMatch(/alice|bob|ada/);
  });
});

describe('formats that refresh by themselves', () => {
  it('GET api/credentials/{dataset}/aws is container-credentials JSON', async () => {
    const res = await call('GET', 'api/credentials/home/aws', tokens.alice!);
    expect(res.status).toBe(200);
    expect(Object.keys(res.body).sort()).toEqual(['AccessKeyId', 'Expiration', 'SecretAccessKey', 'Token']);
    expect((await call('GET', 'api/credentials/era5/aws', tokens.alice!)).status).toBe(400);
  });

  it('the CLI prints credential_process JSON and explains a missing token', async () => {
    const { stdout } = await run(process.execPath, [CLI, '--dataset', 'home', '--url', base], { env: { JUPYTERHUB_API_TOKEN: tokens.alice!, PATH: process.env.PATH! } });
    const out = JSON.parse(stdout) as Record<string, unknown>;
    expect(out).toMatchObject({ Version: 1, AccessKeyId: expect.any(String), SessionToken: expect.any(String), Expiration: expect.any(String) });
    const err = await run(process.execPath, [CLI, '--dataset', 'home', '--url', base], { env: { PATH: process.env.PATH! } }).catch((e: { stderr: string; code: number }) => e);
    expect(err).toMatchObject({ code: 1, stderr: expect.stringContaining('JUPYTERHUB_API_TOKEN') });
    const refused = await run(process.execPath, [CLI, '--dataset', 'climate', '--url', base], { env: { JUPYTERHUB_API_TOKEN: tokens.bob!, PATH: process.env.PATH! } }).catch((e: { stderr: string }) => e);
    expect(String((refused as { stderr: string }).stderr)).toContain('403');
  });

  const BOTO = String.raw`
import boto3, json, os, sys, time
s3 = boto3.session.Session().client('s3', endpoint_url=os.environ['ENDPOINT'], region_name='us-east-1')
keys, reads, deadline = set(), 0, time.time() + float(os.environ['SECONDS'])
while time.time() < deadline or reads == 0:
    body = s3.get_object(Bucket='hub-data', Key='home/alice/a.txt')['Body'].read().decode()
    assert body == 'mine', body
    keys.add(s3._request_signer._credentials.get_frozen_credentials().access_key)
    reads += 1
    time.sleep(0.5)
listed = [o['Key'] for o in s3.list_objects_v2(Bucket='hub-data', Prefix='home/alice/')['Contents']]
print(json.dumps({'reads': reads, 'keys': len(keys), 'listed': listed}))
`;

  async function boto(env: Record<string, string>, seconds: number) {
    const { stdout } = await run('/usr/bin/python3', ['-c', BOTO], {
      env: { PATH: process.env.PATH!, HOME: rgw.dir, ENDPOINT: rgw.endpoint, SECONDS: String(seconds), AWS_EC2_METADATA_DISABLED: 'true', ...env },
      timeout: 60_000,
    });
    return JSON.parse(stdout) as { reads: number; keys: number; listed: string[] };
  }

  it('boto3 reads through credential_process and refreshes across an expiry', async () => {
    const { writeFile } = await import('node:fs/promises');
    const configFile = `${rgw.dir}/aws-config`;
    await writeFile(configFile, `[default]\ncredential_process = ${process.execPath} ${CLI} --dataset short --url ${base}\n`);
    const out = await boto({ AWS_CONFIG_FILE: configFile, AWS_SHARED_CREDENTIALS_FILE: `${rgw.dir}/none`, JUPYTERHUB_API_TOKEN: tokens.alice! }, SHORT * 1.5);
    expect(out.listed).toContain('home/alice/a.txt');
    expect(out.keys).toBeGreaterThanOrEqual(2);
  });

  it('boto3 reads through the loopback relay and refreshes across an expiry', async () => {
    const relay = spawn(process.execPath, [CLI, 'serve', '--dataset', 'short', '--url', base], { env: { JUPYTERHUB_API_TOKEN: tokens.alice!, PATH: process.env.PATH! }, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(relay);
    let line = '';
    relay.stdout!.setEncoding('utf8').on('data', (d: string) => (line += d));
    const vars = await waitFor(async () => (line.includes('\n') ? (JSON.parse(line) as Record<string, string>) : undefined), { timeoutMs: 10_000, what: 'the relay prints its address' });
    expect(vars.AWS_CONTAINER_CREDENTIALS_FULL_URI).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/short$/);
    expect((await fetch(vars.AWS_CONTAINER_CREDENTIALS_FULL_URI!)).status).toBe(401);
    const out = await boto({ ...vars, AWS_CONFIG_FILE: `${rgw.dir}/none`, AWS_SHARED_CREDENTIALS_FILE: `${rgw.dir}/none` }, SHORT * 1.5);
    expect(out.reads).toBeGreaterThan(3);
    expect(out.keys).toBeGreaterThanOrEqual(2);
    relay.kill('SIGTERM');
  });
});

describe('datasets and env', () => {
  it('lists only what the user may access, with regions and egress warnings', async () => {
    const alice = await call('GET', 'api/datasets', tokens.alice!);
    const names = alice.body.datasets.map((d: { name: string }) => d.name);
    expect(names).toContain('climate');
    const bob = await call('GET', 'api/datasets', tokens.bob!);
    expect(bob.body.datasets.map((d: { name: string }) => d.name)).not.toContain('climate');
    const era5 = alice.body.datasets.find((d: { name: string }) => d.name === 'era5');
    expect(era5).toMatchObject({ region: 'europe-west4', sameRegion: false, warning: expect.stringContaining('egress') });
    expect(alice.body.datasets.find((d: { name: string }) => d.name === 'home')).toMatchObject({ sameRegion: true, prefixes: ['home/alice/'] });
    expect(alice.body.datasets.find((d: { name: string }) => d.name === 'home')).not.toHaveProperty('warning');
  });

  it('api/env gives bucket URLs and the credential_process config', async () => {
    const res = await call('GET', 'api/env', tokens.alice!);
    expect(res.body.env).toMatchObject({ SCRATCH_BUCKET: `s3://${BUCKET}/home/alice/`, HUBSIDE_CREDS_DATASET: 'home', AWS_ENDPOINT_URL_S3: rgw.endpoint });
    expect(res.body.env.HUBSIDE_AWS_CONFIG).toContain('credential_process = hubside-creds --dataset home');
  });
});
