/**
 * The contract every Hubside service keeps with JupyterHub, proven end to end: the real hub
 * starts all four services as managed services, routes to them through its proxy, and their
 * authentication behaves like JupyterHub's own HubAuth.
 */
import { request as httpRequest } from 'node:http';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, freePort, startHub } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const SERVICES = ['auth-bridge', 'profile-api', 'usage-collector', 'data-gateway'] as const;
const CLI = fileURLToPath(new URL('../packages/cli/bin/hubside.js', import.meta.url));

let hub: RunningHub;
let database: TestDatabase;
const ports: Record<string, number> = {};
const tokens: Record<string, string> = {};

function metricValue(text: string, name: string, labels: Record<string, string>): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.split(' ').at(-1));
  }
  return total;
}

/** A raw request straight to a service's own port, for headers a fetch client would refuse to send. */
function raw(port: number, path: string, headers: Record<string, string>): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    // agent: false — a fresh socket per request, so one test's refused connection can't leak into the next.
    const req = httpRequest({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type'] ?? '') }));
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  database = await createTestDatabase({ schemas: SERVICES.map((s) => s.replaceAll('-', '_')) });
  for (const name of SERVICES) ports[name] = await freePort();
  hub = await startHub({
    users: ['alice', 'bob', 'carol', 'mona'],
    groups: { physics: ['alice'] },
    roles: [
      // alice may use every service; bob none; carol only profile-api; mona reads metrics.
      { name: 'hubside-users', scopes: ['access:services'], users: ['alice'] },
      { name: 'profile-users', scopes: ['access:services!service=profile-api'], users: ['carol'] },
      { name: 'metrics-readers', scopes: ['read:metrics'], users: ['mona'] },
    ],
    services: SERVICES.map((name) => ({
      name,
      url: `http://127.0.0.1:${ports[name]}`,
      command: [process.execPath, CLI, name],
      oauth_no_confirm: true,
      environment: {
        HUBSIDE_DATA_DIR: database.dataDir,
        ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
        HUBSIDE_LOG_LEVEL: 'warn',
      },
    })),
  });
  tokens.alice = await hub.createToken('alice', { note: 'e2e' });
  tokens.bob = await hub.createToken('bob', { note: 'e2e' });
  tokens.carol = await hub.createToken('carol', { note: 'e2e' });
  tokens.mona = await hub.createToken('mona', { scopes: ['read:metrics'], note: 'e2e' });
}, 120_000);

afterAll(async () => {
  await hub?.stop();
  await database?.drop();
});

describe.each(SERVICES)('%s as a hub-managed service', (name) => {
  const path = `/services/${name}/`;

  it('answers health through the hub proxy without credentials', async () => {
    const res = await fetch(`${hub.url}${path}health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ok', service: name, hub: 'configured' });
  });

  it('accepts a user token that holds access to the service, through the proxy', async () => {
    const res = await fetch(`${hub.url}${path}api/whoami`, { headers: { authorization: `token ${tokens.alice}` } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { name: string; kind: string; groups: string[]; scopes: string[] };
    expect(body).toMatchObject({ kind: 'user', name: 'alice', admin: false, groups: ['physics'] });
    expect(body.scopes).toContain('access:services');
  });

  it('accepts Bearer as well as token', async () => {
    const res = await fetch(`${hub.url}${path}api/whoami`, { headers: { authorization: `Bearer ${tokens.alice}` } });
    expect(res.status).toBe(200);
  });

  it('refuses a valid token without access to the service with 403 JSON', async () => {
    const res = await fetch(`${hub.url}${path}api/whoami`, { headers: { authorization: `token ${tokens.bob}` } });
    expect(res.status).toBe(403);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ statusCode: 403, error: 'Forbidden', code: 'HUBSIDE_ERR_FORBIDDEN' });
    expect(String(body.message)).toContain(`access:services!service=${name}`);
  });

  it('refuses a bogus token with 401 JSON', async () => {
    const res = await fetch(`${hub.url}${path}api/whoami`, { headers: { authorization: 'token not-a-real-token-0123456789' } });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ statusCode: 401, error: 'Unauthorized', code: 'HUBSIDE_ERR_AUTH_INVALID_TOKEN' });
  });
});

describe('service-filtered access', () => {
  it('lets access:services!service=profile-api into profile-api only', async () => {
    const allowed = await fetch(`${hub.url}/services/profile-api/api/whoami`, { headers: { authorization: `token ${tokens.carol}` } });
    expect(allowed.status).toBe(200);
    const refused = await fetch(`${hub.url}/services/data-gateway/api/whoami`, { headers: { authorization: `token ${tokens.carol}` } });
    expect(refused.status).toBe(403);
  });
});

describe('hostile and malformed requests get 4xx JSON, never a 500', () => {
  const port = () => ports['usage-collector']!;
  const whoami = '/services/usage-collector/api/whoami';

  it.each([
    ['Basic YWxpY2U6cGFzcw==', /unsupported scheme "Basic"/],
    ['token', /missing token/],
    ['Bearer', /missing token/],
    ['token two words', /Malformed/],
    ['', /empty header/],
  ])('Authorization %j → 401', async (header, message) => {
    const res = await raw(port(), whoami, { authorization: header });
    expect(res.status).toBe(401);
    expect(res.type).toContain('application/json');
    const body = JSON.parse(res.body) as { code: string; message: string };
    expect(body.code).toBe('HUBSIDE_ERR_AUTH_MALFORMED');
    expect(body.message).toMatch(message);
  });

  it('a missing Authorization header is 401 with how to authenticate', async () => {
    const res = await raw(port(), whoami, {});
    expect(res.status).toBe(401);
    expect(JSON.parse(res.body)).toMatchObject({ code: 'HUBSIDE_ERR_AUTH_REQUIRED' });
  });

  it('huge headers get 431 JSON', async () => {
    const res = await raw(port(), whoami, { authorization: `token ${tokens.alice}`, 'x-padding': 'a'.repeat(64 * 1024) });
    expect(res.status).toBe(431);
    expect(JSON.parse(res.body)).toMatchObject({ statusCode: 431 });
  });

  it('an unknown route is 404 JSON, with or without credentials', async () => {
    const anon = await raw(port(), '/services/usage-collector/api/nope', {});
    expect(anon.status).toBe(404);
    expect(JSON.parse(anon.body)).toMatchObject({ statusCode: 404, error: 'Not Found', code: 'HUBSIDE_ERR_NOT_FOUND' });
    const authed = await raw(port(), '/elsewhere', { authorization: `token ${tokens.alice}` });
    expect(authed.status).toBe(404);
  });

  it('broken JSON sent to a GET-only route is a 4xx JSON, not a crash', async () => {
    const res = await fetch(`http://127.0.0.1:${port()}${whoami}`, {
      method: 'POST',
      headers: { authorization: `token ${tokens.alice}`, 'content-type': 'application/json' },
      body: '{"broken": ',
    });
    // Fastify parses the body before it finds no POST route, so either answer is right.
    expect([400, 404]).toContain(res.status);
    expect(await res.json()).toMatchObject({ statusCode: res.status });
  });
});

describe('token resolution', () => {
  it('100 concurrent requests with one new token cost exactly one hub call', async () => {
    const token = await hub.createToken('alice', { note: 'storm' });
    const metricsUrl = `${hub.url}/services/data-gateway/metrics`;
    const read = async () => {
      const res = await fetch(metricsUrl, { headers: { authorization: `token ${tokens.mona}` } });
      expect(res.status).toBe(200);
      return metricValue(await res.text(), 'hubside_hub_api_calls_total', { route: 'GET /user' });
    };
    const before = await read();
    const results = await Promise.all(
      Array.from({ length: 100 }, () =>
        fetch(`http://127.0.0.1:${ports['data-gateway']}/services/data-gateway/api/whoami`, {
          headers: { authorization: `token ${token}` },
        }).then((r) => r.status),
      ),
    );
    expect(results.every((s) => s === 200)).toBe(true);
    // mona's own metrics read resolved her token once, before the storm; it is cached since.
    expect((await read()) - before).toBe(1);
  });

  it('metrics need read:metrics', async () => {
    const res = await fetch(`${hub.url}/services/data-gateway/metrics`, { headers: { authorization: `token ${tokens.alice}` } });
    expect(res.status).toBe(403);
    expect(((await res.json()) as { message: string }).message).toContain('read:metrics');
  });
});

describe('browser login through the hub OAuth flow', () => {
  it('follows the redirects to an authenticated page and sets the cookie named after the client id', async () => {
    const browser = hub.browser();
    await browser.login('alice');
    const page = await browser.get(`${hub.url}/services/profile-api/`);
    expect(page.status).toBe(200);
    expect(page.body).toContain('Signed in as <strong id="user">alice</strong>');
    expect(page.redirects.some((u) => u.includes('/hub/api/oauth2/authorize'))).toBe(true);
    expect(page.redirects.some((u) => u.includes('/services/profile-api/oauth_callback'))).toBe(true);
    expect(Object.keys(browser.cookies(`${hub.url}/services/profile-api/`))).toContain('service-profile-api');

    const logout = await browser.get(`${hub.url}/services/profile-api/logout`);
    expect(logout.status).toBe(200);
    expect(browser.cookies(`${hub.url}/services/profile-api/`)['service-profile-api']).toBeUndefined();
  });

  it('a browser that is not logged in to the hub is sent to the hub login', async () => {
    const browser = hub.browser();
    const page = await browser.get(`${hub.url}/services/profile-api/`);
    expect(page.url).toContain('/hub/login');
  });

  it('refuses a callback whose state does not match', async () => {
    const browser = hub.browser();
    await browser.login('alice');
    const res = await browser.get(`${hub.url}/services/profile-api/oauth_callback?code=abc&state=forged`);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toMatchObject({ code: 'HUBSIDE_ERR_OAUTH_STATE' });
  });

  it('a user without access to the service cannot complete the login', async () => {
    const browser = hub.browser();
    await browser.login('bob');
    const page = await browser.get(`${hub.url}/services/profile-api/`);
    expect(page.status).toBe(403);
    expect(browser.cookies(`${hub.url}/services/profile-api/`)['service-profile-api']).toBeUndefined();
  });
});
