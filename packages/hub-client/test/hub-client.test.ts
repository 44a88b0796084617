/** The REST client against a real JupyterHub: every method, pagination, and failure handling. */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { freePort, startHub, waitFor } from '@hubside/testing';
import type { RunningHub } from '@hubside/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HubApiError, HubUnavailableError } from '../src/errors.js';
import { HubClient } from '../src/hub-client.js';
import type { HubCallEvent } from '../src/hub-client.js';

let hub: RunningHub;
let client: HubClient;
const events: HubCallEvent[] = [];
const serviceToken = randomBytes(24).toString('hex');

// Names as JupyterHub allows them: unicode, @, dots.
const ODD_NAME = 'zoë.o@example.org';

beforeAll(async () => {
  hub = await startHub({
    users: ['ada', 'bo', 'cy', 'di', 'ed', ODD_NAME],
    groups: { 'course-101': ['ada', 'bo', 'cy'], 'research.lab': ['di', ODD_NAME] },
    services: [{ name: 'client-under-test', apiToken: serviceToken }],
    roles: [
      {
        name: 'client-under-test',
        // What usage-collector and profile-api hold in a real deployment.
        scopes: ['list:users', 'read:users', 'read:groups', 'list:groups', 'admin:servers', 'tokens', 'read:roles:users'],
        services: ['client-under-test'],
      },
    ],
  });
  client = new HubClient({ apiUrl: hub.hubApiUrl, token: serviceToken, observe: (e) => events.push(e) });
}, 60_000);

afterAll(async () => {
  await client?.close();
  await hub?.stop();
});

describe('HubClient against a real hub', () => {
  it('identifies a user token, with its groups and expanded scopes', async () => {
    const token = await hub.createToken(ODD_NAME, { note: 'identify' });
    const owner = await client.identify(token);
    expect(owner).toMatchObject({ kind: 'user', name: ODD_NAME, groups: ['research.lab'] });
    expect(owner?.scopes).toContain(`read:users:name!user=${ODD_NAME}`);
  });

  it('identifies a service token as a service', async () => {
    const owner = await client.identify(serviceToken);
    expect(owner).toMatchObject({ kind: 'service', name: 'client-under-test' });
  });

  it('returns null for a token the hub does not know', async () => {
    expect(await client.identify('definitely-not-a-token')).toBeNull();
  });

  it('follows pagination across every page', async () => {
    const before = events.filter((e) => e.route === 'GET /users').length;
    const names: string[] = [];
    for await (const user of client.listUsers({ pageSize: 2 })) names.push(user.name);
    expect(names.sort()).toEqual(['ada', 'bo', 'cy', 'di', 'ed', ODD_NAME].sort());
    // 6 users at 2 per page: 3 pages, and the third says there is no next one.
    expect(events.filter((e) => e.route === 'GET /users').length - before).toBe(3);
  });

  it('filters users by server state', async () => {
    await hub.startServer('cy');
    try {
      const active: string[] = [];
      for await (const user of client.listUsers({ state: 'active', pageSize: 1 })) active.push(user.name);
      expect(active).toEqual(['cy']);
    } finally {
      await hub.stopServer('cy');
    }
  });

  it('lists groups with their members', async () => {
    const groups = new Map<string, string[]>();
    for await (const g of client.listGroups({ pageSize: 1 })) groups.set(g.name, [...g.users].sort());
    expect(groups.get('course-101')).toEqual(['ada', 'bo', 'cy']);
    expect(groups.get('research.lab')).toEqual([ODD_NAME, 'di'].sort());
    expect((await client.getGroup('course-101'))?.users.sort()).toEqual(['ada', 'bo', 'cy']);
    expect(await client.getGroup('no-such-group')).toBeNull();
  });

  it('gets a user by a name that needs escaping, and null for an unknown one', async () => {
    expect(await client.getUser(ODD_NAME)).toMatchObject({ name: ODD_NAME, groups: ['research.lab'] });
    expect(await client.getUser('nobody-here')).toBeNull();
  });

  it('starts a server with user_options and stops it', async () => {
    const started = await client.startServer('ada', { userOptions: { profile: 'small', image: 'python' } });
    expect([201, 202]).toContain(started.status);
    const user = await waitFor(async () => {
      const u = await client.getUser('ada');
      return u?.servers?.['']?.ready ? u : undefined;
    }, { timeoutMs: 30_000, intervalMs: 100, what: "ada's server to be ready" });
    expect(user?.servers?.['']?.user_options).toEqual({ profile: 'small', image: 'python' });
    const stopped = await client.stopServer('ada');
    expect([202, 204]).toContain(stopped.status);
  });

  it('starts and removes a named server', async () => {
    await client.startServer('bo', { serverName: 'gpu', userOptions: { profile: 'gpu' } });
    const user = await waitFor(async () => {
      const u = await client.getUser('bo');
      return u?.servers?.gpu?.ready ? u : undefined;
    }, { timeoutMs: 30_000, intervalMs: 100, what: "bo's gpu server to be ready" });
    expect(user.servers?.gpu?.user_options).toEqual({ profile: 'gpu' });
    await client.stopServer('bo', { serverName: 'gpu', remove: true });
    await waitFor(async () => !(await client.getUser('bo'))?.servers?.gpu, { timeoutMs: 30_000, intervalMs: 100, what: "bo's gpu server to be removed" });
    expect((await client.getUser('bo'))?.servers?.gpu).toBeUndefined();
  });

  it('reports the hub refusing a request as HubApiError with its message', async () => {
    const err = await client.startServer('nobody-here').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubApiError);
    expect((err as HubApiError).status).toBe(404);
  });

  it('creates a token with the requested scopes that identifies its user', async () => {
    const created = await client.createToken('ed', { scopes: ['read:users:name!user=ed'], note: 'from hub-client', expiresIn: 600 });
    expect(created.token).toMatch(/\S{16,}/);
    const owner = await client.identify(created.token);
    expect(owner).toMatchObject({ kind: 'user', name: 'ed' });
    expect(owner?.scopes).not.toContain('access:servers!user=ed');
  });

  it('labels hub calls with route templates, never user names', () => {
    expect(events.length).toBeGreaterThan(0);
    for (const e of events) expect(e.route).not.toContain(ODD_NAME);
    expect(new Set(events.map((e) => e.route))).toContain('GET /users/{name}');
  });
});

describe('HubClient when the hub misbehaves', () => {
  it('retries connection errors a bounded number of times, then reports the hub unavailable', async () => {
    const port = await freePort(); // nothing listens here
    const seen: HubCallEvent[] = [];
    const down = new HubClient({ apiUrl: `http://127.0.0.1:${port}/hub/api`, token: 'x'.repeat(16), retries: 2, retryBaseMs: 5, observe: (e) => seen.push(e) });
    try {
      const err = await down.identify('some-token').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(HubUnavailableError);
      expect((err as Error).message).toMatch(/ECONNREFUSED/);
      expect(seen.map((e) => e.attempt)).toEqual([0, 1, 2]);
    } finally {
      await down.close();
    }
  });

  it('times out a hub that accepts connections but never answers', async () => {
    const sockets: Socket[] = [];
    const silent: Server = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const { port } = silent.address() as { port: number };
    const slow = new HubClient({ apiUrl: `http://127.0.0.1:${port}/hub/api`, token: 'x'.repeat(16), timeoutMs: 200, retries: 1, retryBaseMs: 5 });
    const started = Date.now();
    try {
      const err = await slow.identify('t').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(HubUnavailableError);
      expect((err as Error).message).toMatch(/timed out after 200 ms/);
      // Two attempts of 200 ms each, plus a short backoff: bounded, not a hang.
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      await slow.close();
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  });

  it('retries a 5xx on reads and succeeds when the hub recovers', async () => {
    let calls = 0;
    const flaky = createServer((socket) => {
      socket.once('data', () => {
        calls += 1;
        const body = calls === 1 ? '{"message":"oops"}' : JSON.stringify({ kind: 'user', name: 'ok', admin: false, groups: [], scopes: [] });
        const status = calls === 1 ? '502 Bad Gateway' : '200 OK';
        socket.end(`HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      });
    });
    await new Promise<void>((r) => flaky.listen(0, '127.0.0.1', r));
    const { port } = flaky.address() as { port: number };
    const c = new HubClient({ apiUrl: `http://127.0.0.1:${port}/hub/api`, token: 'x'.repeat(16), retryBaseMs: 5 });
    try {
      expect(await c.identify('t')).toMatchObject({ name: 'ok' });
      expect(calls).toBe(2);
    } finally {
      await c.close();
      await new Promise((r) => flaky.close(r));
    }
  });

  it('never repeats a POST after the hub answered 5xx', async () => {
    let calls = 0;
    const failing = createServer((socket) => {
      socket.once('data', () => {
        calls += 1;
        socket.end('HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      });
    });
    await new Promise<void>((r) => failing.listen(0, '127.0.0.1', r));
    const { port } = failing.address() as { port: number };
    const c = new HubClient({ apiUrl: `http://127.0.0.1:${port}/hub/api`, token: 'x'.repeat(16), retryBaseMs: 5 });
    try {
      await expect(c.startServer('ada')).rejects.toBeInstanceOf(HubUnavailableError);
      expect(calls).toBe(1);
    } finally {
      await c.close();
      await new Promise((r) => failing.close(r));
    }
  });
});
