/**
 * `kill -9` of real service processes (started by the `hubside` CLI, as in production) while
 * they work, then a restart on the same database: nothing acknowledged is lost, nothing is
 * written twice. Profile edits are retried by the client as any client would; the collector is
 * killed in the middle of its polling, twice.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, freePort, startHub, waitFor } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const CLI = fileURLToPath(new URL('../../packages/cli/bin/hubside.js', import.meta.url));

let hub: RunningHub;
let database: TestDatabase;
let dir: string;
let rootToken: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  database = await createTestDatabase({ schemas: ['profile_api', 'usage_collector'] });
  hub = await startHub({ users: ['alice'], admins: ['root'], roles: [{ name: 'hubside-users', scopes: ['access:services'], users: ['alice', 'root'] }] });
  rootToken = await hub.createToken('root', { note: 'kill9' });
  dir = await mkdtemp(join(tmpdir(), 'hubside-kill9-'));
  await writeFile(
    join(dir, 'community.yaml'),
    'community:\n  name: kill9\nprofile-api:\n  profiles:\n    - {display_name: Start, slug: start, default: true}\n',
  );
}, 120_000);

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await hub?.stop();
  await database?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function startService(name: 'profile-api' | 'usage-collector', port: number, extra: Record<string, string> = {}): Promise<ChildProcess> {
  const child = spawn(process.execPath, [CLI, name], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      JUPYTERHUB_API_URL: hub.hubApiUrl,
      JUPYTERHUB_API_TOKEN: hub.adminToken,
      HUBSIDE_PORT: String(port),
      HUBSIDE_CONFIG: join(dir, 'community.yaml'),
      HUBSIDE_DATA_DIR: database.dataDir,
      HUBSIDE_LOG_LEVEL: 'warn',
      HUBSIDE_RATE_LIMIT_USER: '0',
      ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
      ...extra,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}: ${stderr.slice(-500)}`);
      const res = await fetch(`http://127.0.0.1:${port}/services/${name}/health`);
      return res.ok;
    },
    { timeoutMs: 90_000, intervalMs: 200, what: `${name} answers health` },
  );
  return child;
}

async function kill9(child: ChildProcess): Promise<void> {
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGKILL');
  await exited;
}

const doc = (i: number) => [{ display_name: `Edit ${i}`, slug: 'start', default: true, description: `edit ${i}` }];

describe('kill -9 of profile-api during a stream of edits', () => {
  it('keeps every acknowledged edit exactly once; retried edits replay instead of duplicating', async () => {
    const port = await freePort();
    let child = await startService('profile-api', port);
    const base = `http://127.0.0.1:${port}/services/profile-api/api/profiles`;
    const auth = { authorization: `token ${rootToken}` };
    const EDITS = 10;
    let etag = (await fetch(`${base}/document`, { headers: auth })).headers.get('etag')!;
    let kills = 0;
    for (let i = 1; i <= EDITS; i += 1) {
      // Kill the process right as edits 3 and 7 are sent, so one may land without its answer.
      const put = () => fetch(base, { method: 'PUT', headers: { ...auth, 'content-type': 'application/json', 'if-match': etag }, body: JSON.stringify({ profiles: doc(i), message: `edit ${i}` }) });
      let answer: Response | undefined;
      if (i === 3 || i === 7) {
        const pending = put().catch(() => undefined);
        await kill9(child);
        kills += 1;
        answer = await pending;
        child = await startService('profile-api', port);
        if (answer && answer.status >= 500) answer = undefined;
      }
      // Retry with the same If-Match and document until the service answers, as a client would.
      answer ??= await waitFor(async () => {
        const res = await put().catch(() => undefined);
        return res && res.status < 500 ? res : undefined;
      }, { timeoutMs: 60_000, intervalMs: 200, what: `edit ${i} answered` });
      expect([200, 201], `edit ${i}: ${answer.status}`).toContain(answer.status);
      if (answer.status === 200) expect(await answer.json()).toMatchObject({ replayed: true });
      etag = answer.headers.get('etag')!;
    }
    expect(kills).toBe(2);

    // What the database holds, read back through the (restarted, then killed) service's own API.
    const res = await fetch(`${base}/versions?limit=500`, { headers: auth });
    expect(res.status).toBe(200);
    const versions = ((await res.json()) as { versions: Array<{ id: number; message: string; parent_id: number | null }> }).versions.sort((a, b) => a.id - b.id);
    const edits = versions.filter((v) => /^edit \d+$/.test(v.message));
    expect(edits.map((v) => v.message)).toEqual(Array.from({ length: EDITS }, (_, k) => `edit ${k + 1}`));
    for (let k = 1; k < versions.length; k += 1) expect(versions[k]!.parent_id).toBe(versions[k - 1]!.id);
    for (const [k, v] of edits.entries()) {
      const one = await fetch(`${base}/versions/${v.id}`, { headers: auth });
      expect(((await one.json()) as { profiles: unknown }).profiles).toEqual(doc(k + 1));
    }
    await kill9(child);
  }, 240_000);
});

describe('kill -9 of the usage collector while it polls', () => {
  it('never duplicates or loses the running session across two kills', async () => {
    const port = await freePort();
    await hub.startServer('alice');
    const env = { HUBSIDE_POLL_INTERVAL: '0.3' };
    let child = await startService('usage-collector', port, env);
    const sessions = async () => {
      const res = await fetch(`http://127.0.0.1:${port}/services/usage-collector/api/sessions?user=alice`, { headers: { authorization: `token ${rootToken}` } });
      expect(res.status).toBe(200);
      return ((await res.json()) as { sessions: Array<{ user: string; started: string; stopped: string | null }> }).sessions;
    };
    const first = await waitFor(async () => {
      const s = await sessions();
      return s.length > 0 ? s : undefined;
    }, { timeoutMs: 30_000, intervalMs: 200, what: 'the collector records alice' });
    expect(first).toHaveLength(1);
    for (let k = 0; k < 2; k += 1) {
      // Polls run every 300 ms, so a kill 0-300 ms in lands in or between polls.
      await new Promise((r) => setTimeout(r, 150 + k * 70));
      await kill9(child);
      child = await startService('usage-collector', port, env);
    }
    // A few polls after the last restart.
    await new Promise((r) => setTimeout(r, 1500));
    const after = await sessions();
    expect(after).toHaveLength(1);
    expect(after[0]!.started).toBe(first[0]!.started);
    expect(after[0]!.stopped ?? null).toBeNull();

    await hub.stopServer('alice');
    const closed = await waitFor(async () => {
      const s = await sessions();
      return s.length === 1 && s[0]!.stopped ? s : undefined;
    }, { timeoutMs: 30_000, intervalMs: 300, what: 'the collector closes the session' });
    expect(closed[0]!.started).toBe(first[0]!.started);
    await kill9(child);
  }, 240_000);
});
