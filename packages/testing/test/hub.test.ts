import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startHub, waitFor } from '@hubside/testing';
import type { RunningHub } from '@hubside/testing';

// A managed service as small as it gets: it answers every request with what the hub told it.
const ECHO_SERVICE = `
const http = require('node:http');
const bind = new URL(process.env.JUPYTERHUB_SERVICE_URL);
http
  .createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({
      pid: process.pid,
      path: req.url,
      prefix: process.env.JUPYTERHUB_SERVICE_PREFIX,
      hasApiToken: Boolean(process.env.JUPYTERHUB_API_TOKEN),
      apiUrl: process.env.JUPYTERHUB_API_URL,
      nodePath: process.env.NODE_PATH ?? null,
      extra: process.env.ECHO_EXTRA ?? null,
    }));
  })
  .listen(Number(bind.port), bind.hostname);
`;

const ECHO_TOKEN = randomBytes(24).toString('hex');

interface EchoReply {
  pid: number;
  path: string;
  prefix: string;
  hasApiToken: boolean;
  apiUrl: string;
  nodePath: string | null;
  extra: string | null;
}

interface UserModel {
  name: string;
  admin: boolean;
  groups: string[];
  servers: Record<string, { ready: boolean; state?: { pid?: number } }>;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('startHub: a real JupyterHub 3 for end-to-end tests', () => {
  let hub: RunningHub;
  // Every process the hub started during the file; stop() must leave none of them running.
  const seenPids = new Set<number>();
  const remember = (): void => {
    for (const p of hub.processes()) seenPids.add(p.pid);
  };

  beforeAll(async () => {
    const echoPort = await freePort();
    hub = await startHub({
      users: ['alice', 'bob'],
      admins: ['ana.lyst@uni.example'],
      groups: { 'course-101': ['alice', 'carol'] },
      services: [
        {
          name: 'echo',
          url: `http://127.0.0.1:${echoPort}`,
          command: [process.execPath, '-e', ECHO_SERVICE],
          environment: { ECHO_EXTRA: 'from-spec' },
          apiToken: ECHO_TOKEN,
          oauth_client_allowed_scopes: ['read:users:groups!user'],
        },
      ],
      // JupyterHub 3.0 lets no user log in to a service unless a role grants access to it.
      roles: [{ name: 'echo-users', scopes: ['access:services!service=echo'], users: ['alice'] }],
    });
    remember();
  });

  afterAll(async () => {
    await hub?.stop();
  });

  it('creates the users, admins and groups it was given before resolving', async () => {
    const alice = await hub.api<UserModel>('GET', '/users/alice');
    expect(alice.status).toBe(200);
    expect(alice.body.groups).toEqual(['course-101']);

    // Names with '@' and '.' are JupyterHub's own; the harness must escape them in URLs.
    const admin = await hub.api<UserModel>('GET', `/users/${encodeURIComponent('ana.lyst@uni.example')}`);
    expect(admin.status).toBe(200);
    expect(admin.body.admin).toBe(true);

    const group = await hub.api<{ users: string[] }>('GET', '/groups/course-101');
    expect(group.body.users.sort()).toEqual(['alice', 'carol']);

    await hub.addToGroup('course-101', ['bob']);
    await hub.createGroup('staff', ['dora']);
    const after = await hub.api<{ users: string[] }>('GET', '/groups/course-101');
    expect(after.body.users.sort()).toEqual(['alice', 'bob', 'carol']);
    expect((await hub.api<{ users: string[] }>('GET', '/groups/staff')).body.users).toEqual(['dora']);
  });

  it('issues tokens that identify their user with exactly the scopes asked for', async () => {
    const token = await hub.createToken('alice', { scopes: ['read:users:groups!user=alice'], note: 'harness test' });
    const who = await hub.api<{ name: string; kind: string; scopes: string[] }>('GET', '/user', undefined, token);
    expect(who.status).toBe(200);
    expect(who.body.name).toBe('alice');
    expect(who.body.kind).toBe('user');
    // JupyterHub 3.0 adds the scopes that identify the owner (name, groups) to every token.
    expect(who.body.scopes).toEqual(['read:users:groups!user=alice', 'read:users:name!user=alice']);

    // Without scopes a token inherits everything its owner holds.
    const full = await hub.createToken('alice');
    const fullWho = await hub.api<{ scopes: string[] }>('GET', '/user', undefined, full);
    expect(fullWho.body.scopes).toContain('access:servers!user=alice');

    // A user cannot be handed a scope it does not hold itself.
    await expect(hub.createToken('alice', { scopes: ['admin:users'] })).rejects.toThrow(/HTTP 400/);
  });

  it("starts a user's server with the simple spawner, reaches it through the proxy, and stops it", async () => {
    const token = await hub.createToken('alice');
    await hub.startServer('alice');
    const model = await hub.api<UserModel>('GET', '/users/alice');
    const serverPid = model.body.servers['']?.state?.pid;
    expect(serverPid).toBeTypeOf('number');
    remember();

    const status = await fetch(`${hub.url}/user/alice/api/status`, { headers: { authorization: `token ${token}` } });
    expect(status.status).toBe(200);
    expect(await status.json()).toHaveProperty('started');

    // Another user's token may not reach alice's server.
    const bobToken = await hub.createToken('bob');
    const denied = await fetch(`${hub.url}/user/alice/api/status`, {
      headers: { authorization: `token ${bobToken}` },
      redirect: 'manual',
    });
    expect(denied.status).toBe(403);

    await hub.stopServer('alice');
    expect((await hub.api<UserModel>('GET', '/users/alice')).body.servers).toEqual({});
    expect(isAlive(serverPid as number)).toBe(false);
  });

  it('logs in with the dummy authenticator and reaches /hub/home', async () => {
    const anonymous = hub.browser();
    const bounced = await anonymous.get('/hub/home');
    expect(new URL(bounced.url).pathname).toBe('/hub/login');
    expect(bounced.redirects[0]).toBe(`${hub.url}/hub/home`);

    const browser = hub.browser();
    // Any name may log in, not only the ones created at start.
    await browser.login('erin');
    expect(browser.cookies('/hub/')).toHaveProperty('jupyterhub-hub-login');
    const home = await browser.get('/hub/home');
    expect(home.status).toBe(200);
    expect(home.url).toBe(`${hub.url}/hub/home`);
    expect(home.redirects).toEqual([]);
    expect(home.body).toContain('erin');
  });

  it('runs a managed service that answers through the proxy at /services/<name>/', async () => {
    const res = await fetch(`${hub.url}/services/echo/hello?x=1`);
    expect(res.status).toBe(200);
    const echo = (await res.json()) as EchoReply;
    expect(echo.path).toBe('/services/echo/hello?x=1');
    expect(echo.prefix).toBe('/services/echo/');
    expect(echo.hasApiToken).toBe(true);
    expect(echo.apiUrl).toBe(hub.hubApiUrl);
    expect(echo.extra).toBe('from-spec');
    // Debian's node modules are for the proxy only.
    expect(echo.nodePath).toBeNull();
    expect(hub.processes().map((p) => p.pid)).toContain(echo.pid);
  });

  it("completes a service's OAuth flow in the browser helper, for users granted access only", async () => {
    // The hub's default redirect URI for a service is a path, not a URL.
    const redirectUri = '/services/echo/oauth_callback';
    const authorize = `/hub/api/oauth2/authorize?${new URLSearchParams({
      client_id: 'service-echo',
      redirect_uri: redirectUri,
      response_type: 'code',
      state: 'st4te',
    })}`;

    const alice = hub.browser();
    await alice.login('alice');
    const page = await alice.get(authorize);
    expect(page.status).toBe(200);
    // Not oauth_no_confirm: the hub asks first, and only takes the form back from its own page.
    const scopes = [...page.body.matchAll(/<input type="hidden" name="scopes" value="([^"]*)"/g)].map((m) => m[1] as string);
    expect(scopes).toContain('access:services!service=echo');
    const callback = await alice.post(page.url, { scopes });
    const landed = new URL(callback.url);
    expect(landed.pathname).toBe(redirectUri);
    expect(landed.searchParams.get('state')).toBe('st4te');
    expect((JSON.parse(callback.body) as EchoReply).path).toContain('code=');

    const exchange = await fetch(`${hub.hubApiUrl}/oauth2/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: landed.searchParams.get('code') ?? '',
        client_id: 'service-echo',
        client_secret: ECHO_TOKEN,
        redirect_uri: redirectUri,
      }),
    });
    expect(exchange.status).toBe(200);
    const { access_token: accessToken } = (await exchange.json()) as { access_token: string };
    const who = await hub.api<{ name: string; scopes: string[] }>('GET', '/user', undefined, accessToken);
    expect(who.body.name).toBe('alice');
    expect(who.body.scopes.sort()).toEqual([
      'access:services!service=echo',
      'read:users:groups!user=alice',
      'read:users:name!user=alice',
    ]);

    const bob = hub.browser();
    await bob.login('bob');
    expect((await bob.get(authorize)).status).toBe(403);
  });

  it('leaves no process and no temp dir behind after stop()', async () => {
    // A running named server too, so stop() has to take down a live single-user server.
    await hub.startServer('bob', { name: 'second' });
    remember();
    const commands = hub.processes().map((p) => p.command);
    expect(commands.some((c) => c.includes('jupyterhub-singleuser'))).toBe(true);
    expect(commands.some((c) => c.includes('configurable-http-proxy'))).toBe(true);
    expect(commands.some((c) => c.includes('JUPYTERHUB_SERVICE_URL'))).toBe(true);

    await hub.stop();
    const survivors = [...seenPids].filter(isAlive);
    expect(survivors).toEqual([]);
    expect(hub.processes()).toEqual([]);
    expect(existsSync(hub.dir)).toBe(false);
    await expect(fetch(`${hub.url}/hub/api/`)).rejects.toThrow();
  });
});

describe('waitFor', () => {
  it('resolves with the first value that is not undefined or false', async () => {
    let calls = 0;
    const value = await waitFor(async () => (++calls >= 3 ? calls : undefined), { timeoutMs: 2_000, intervalMs: 1, what: 'three calls' });
    expect(value).toBe(3);
  });

  it('names the condition and the last error when the deadline passes', async () => {
    await expect(
      waitFor(
        async () => {
          throw new Error('still refusing');
        },
        { timeoutMs: 100, intervalMs: 10, what: 'the moon' },
      ),
    ).rejects.toThrow(/waiting for the moon; last error: still refusing/);
  });
});
