/**
 * Azure user-delegation SAS against Azurite (https + basic OAuth on loopback, which Azurite
 * needs before it hands out a user delegation key). Azurite checks the token's claims, not its
 * signature, so a self-made token stands in for Entra ID here.
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ContainerClient } from '@azure/storage-blob';
import { freePort, waitFor } from '@hubside/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAzureBackend } from '../src/backends/azure.js';
import { datasetSchema } from '../src/config.js';
import type { Access } from '../src/grants.js';

const run = promisify(execFile);
const AZURITE = createRequire(import.meta.url).resolve('azurite/dist/src/blob/main.js');
let dir: string;
let azurite: ChildProcess;
let accountUrl: string;
let previousTls: string | undefined;

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hubside-azurite-'));
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
  const port = await freePort();
  azurite = spawn(process.execPath, [AZURITE, '--blobHost', '127.0.0.1', '--blobPort', String(port), '--oauth', 'basic', '--cert', join(dir, 'cert.pem'), '--key', join(dir, 'key.pem'), '--inMemoryPersistence', '--silent', '--disableTelemetry', '--skipApiVersionCheck'], { stdio: 'ignore' });
  // The self-signed certificate is trusted for this file's loopback Azurite only; restored after.
  previousTls = process.env.NODE_TLS_REJECT_UNAUTHORIZED;
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  accountUrl = `https://127.0.0.1:${port}/devstoreaccount1`;
  const now = Math.floor(Date.now() / 1000);
  const tid = 'ab1f708d-50f6-404c-a006-d71b2ac7a606';
  const token = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ aud: 'https://storage.azure.com', iss: `https://sts.windows.net/${tid}/`, nbf: now - 60, iat: now - 60, exp: now + 3600, oid: '00000000-0000-0000-0000-0000000000aa', tid })}.x`;
  await writeFile(join(dir, 'token'), token);
  // Azurite loads slowly on a busy machine; an Azurite that exits fails the wait at once.
  const exited = new AbortController();
  azurite.once('exit', (code) => exited.abort(new Error(`Azurite exited (code ${code}) before answering`)));
  await waitFor(async () => (await fetch(`${accountUrl}?comp=list`).catch(() => undefined))?.status !== undefined, {
    timeoutMs: 60_000,
    intervalMs: 100,
    what: 'Azurite answers',
    signal: exited.signal,
  });
  const setup = new ContainerClient(`${accountUrl}/data`, { getToken: async () => ({ token, expiresOnTimestamp: (now + 3600) * 1000 }) });
  await setup.create();
  await setup.getBlockBlobClient('shared/readme.txt').upload('hello', 5);
}, 90_000);

afterAll(async () => {
  if (previousTls === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
  else process.env.NODE_TLS_REJECT_UNAUTHORIZED = previousTls;
  if (azurite && azurite.exitCode === null) {
    const exited = new Promise((r) => azurite.once('exit', r));
    azurite.kill('SIGTERM');
    await exited;
  }
  await rm(dir, { recursive: true, force: true });
});

function dataset(access: Access, lifetime: number) {
  return datasetSchema.parse({ provider: 'azure', bucket: 'data', prefix: '', access, maxLifetimeSeconds: lifetime, region: 'westeurope', azure: { accountUrl, tokenFileEnv: 'AZ_TOKEN_FILE', sasVersion: '2021-10-04' } });
}

async function issue(access: Access, lifetime: number) {
  const backend = createAzureBackend({ AZ_TOKEN_FILE: join(dir, 'token') });
  return backend.issue({ datasetName: 'az', dataset: dataset(access, lifetime), grant: { dataset: 'az', access, prefixes: [''] }, username: 'alice', durationSeconds: lifetime, signal: AbortSignal.timeout(10_000) });
}

describe('Azure user-delegation SAS (Azurite)', () => {
  it('a read-write SAS writes, reads and lists the container', async () => {
    const issued = await issue('read-write', 600);
    expect(issued.credentials.sasToken).toMatch(/skoid=/); // a user-delegation SAS, not an account-key SAS
    const c = new ContainerClient(issued.credentials.containerSasUrl!);
    await c.getBlockBlobClient('home/alice/x.txt').upload('mine', 4);
    expect((await c.getBlobClient('home/alice/x.txt').downloadToBuffer()).toString()).toBe('mine');
    const names: string[] = [];
    for await (const b of c.listBlobsFlat()) names.push(b.name);
    expect(names).toContain('home/alice/x.txt');
  });

  it('a read SAS reads but refuses writes', async () => {
    const c = new ContainerClient((await issue('read', 600)).credentials.containerSasUrl!);
    expect((await c.getBlobClient('shared/readme.txt').downloadToBuffer()).toString()).toBe('hello');
    await expect(c.getBlockBlobClient('shared/evil.txt').upload('x', 1)).rejects.toMatchObject({ statusCode: 403 });
  });

  it('stops working after it expires', async () => {
    const issued = await issue('read', 2);
    const c = new ContainerClient(issued.credentials.containerSasUrl!, undefined, { retryOptions: { maxTries: 1 } });
    expect((await c.getBlobClient('shared/readme.txt').downloadToBuffer()).toString()).toBe('hello');
    await waitFor(async () => c.getBlobClient('shared/readme.txt').downloadToBuffer().then(() => false, (e: { statusCode?: number }) => e.statusCode === 403), { timeoutMs: 15_000, intervalMs: 250, what: 'the SAS expires' });
  });

  it('refuses Azure datasets with a prefix: a container SAS would widen the grant', () => {
    const r = datasetSchema.safeParse({ provider: 'azure', bucket: 'data', prefix: 'home/{username}/', azure: { accountUrl, tokenFileEnv: 'X' } });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toContain('cannot be limited to a prefix');
  });
});
