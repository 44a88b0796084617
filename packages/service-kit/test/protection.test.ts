/**
 * Back-pressure, per-user rate limits and slow-client timeouts, as every service gets them from
 * createServiceApp, against a real JupyterHub (the limiter keys on the hub identity).
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { startHub } from '@hubside/testing';
import type { RunningHub } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServiceApp } from '../src/app.js';
import { resolveSettings } from '../src/config.js';

let hub: RunningHub;
const tokens: Record<string, string> = {};
const apps: FastifyInstance[] = [];

beforeAll(async () => {
  hub = await startHub({
    users: ['alice', 'bob'],
    roles: [{ name: 'hubside-users', scopes: ['access:services'], users: ['alice', 'bob'] }],
  });
  tokens.alice = await hub.createToken('alice', { note: 'protection' });
  tokens.bob = await hub.createToken('bob', { note: 'protection' });
}, 120_000);

afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await hub?.stop();
});

async function build(env: Record<string, string>): Promise<FastifyInstance> {
  const settings = resolveSettings('profile-api', {
    JUPYTERHUB_API_URL: hub.hubApiUrl,
    JUPYTERHUB_API_TOKEN: hub.adminToken,
    ...env,
  });
  const app = await createServiceApp({ settings, logger: false, defaultMetrics: false });
  app.post(`${settings.prefix}api/echo`, async (request) => ({ got: request.body }));
  apps.push(app);
  return app;
}

const whoami = (app: FastifyInstance, token?: string) =>
  app.inject({ method: 'GET', url: '/services/profile-api/api/whoami', headers: token ? { authorization: `token ${token}` } : {} });

describe('rate limits', () => {
  it('limits each hub user separately, answers 429 in the error format with Retry-After, and keeps health open', async () => {
    const app = await build({ HUBSIDE_RATE_LIMIT_USER: '5', HUBSIDE_RATE_LIMIT_ANONYMOUS: '1000' });
    for (let i = 0; i < 5; i += 1) expect((await whoami(app, tokens.alice)).statusCode).toBe(200);
    const limited = await whoami(app, tokens.alice);
    expect(limited.statusCode).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect(Number(limited.headers['retry-after'])).toBeLessThanOrEqual(60);
    expect(limited.json()).toMatchObject({ statusCode: 429, error: 'Too Many Requests', code: 'HUBSIDE_ERR_RATE_LIMITED' });
    expect(limited.json<{ message: string }>().message).toMatch(/limit is 5 a minute/);
    // Bob's budget is his own, even from the same address.
    expect((await whoami(app, tokens.bob)).statusCode).toBe(200);
    // Liveness is never limited.
    for (let i = 0; i < 10; i += 1) {
      expect((await app.inject({ method: 'GET', url: '/services/profile-api/health' })).statusCode).toBe(200);
    }
  });

  it('counts a user across addresses, so rotating X-Forwarded-For does not escape the limit', async () => {
    const app = await build({ HUBSIDE_RATE_LIMIT_USER: '3' });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i += 1) {
      const res = await app.inject({
        method: 'GET',
        url: '/services/profile-api/api/whoami',
        headers: { authorization: `token ${tokens.alice}`, 'x-forwarded-for': `10.1.2.${i}` },
        remoteAddress: '127.0.0.1',
      });
      statuses.push(res.statusCode);
    }
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
  });

  it('limits unauthenticated callers per address', async () => {
    const app = await build({ HUBSIDE_RATE_LIMIT_ANONYMOUS: '2' });
    app.get('/services/profile-api/public', { config: { auth: false } }, async () => ({ ok: true }));
    const from = (addr: string) => app.inject({ method: 'GET', url: '/services/profile-api/public', remoteAddress: addr });
    expect((await from('192.0.2.1')).statusCode).toBe(200);
    expect((await from('192.0.2.1')).statusCode).toBe(200);
    const third = await from('192.0.2.1');
    expect(third.statusCode).toBe(429);
    expect(third.json()).toMatchObject({ code: 'HUBSIDE_ERR_RATE_LIMITED' });
    expect((await from('192.0.2.2')).statusCode).toBe(200);
  });

  it('0 turns a limit off', async () => {
    const app = await build({ HUBSIDE_RATE_LIMIT_USER: '0' });
    for (let i = 0; i < 30; i += 1) expect((await whoami(app, tokens.alice)).statusCode).toBe(200);
  });

  it('has defaults that let a class of 500 through the hub at once (the hub calls as one service)', () => {
    const s = resolveSettings('profile-api', {});
    expect(s.protection.serviceRequestsPerMinute).toBeGreaterThanOrEqual(500 * 10);
    expect(s.protection.userRequestsPerMinute).toBeGreaterThanOrEqual(600);
    expect(() => resolveSettings('profile-api', { HUBSIDE_RATE_LIMIT_USER: '-1' })).toThrow(/HUBSIDE_RATE_LIMIT_USER/);
  });
});

describe('back-pressure', () => {
  it('sheds requests with 503 and Retry-After while the event loop lags, keeps health up, and recovers', async () => {
    const app = await build({ HUBSIDE_MAX_EVENT_LOOP_DELAY: '40' });
    await app.ready();
    expect((await whoami(app, tokens.alice)).statusCode).toBe(200);
    // Block the loop in slices so the delay histogram sees it on its next sample.
    const shed = await (async () => {
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline) {
        const until = Date.now() + 150;
        while (Date.now() < until) {
          // busy: this is the overload
        }
        await new Promise((r) => setImmediate(r));
        const res = await whoami(app, tokens.alice);
        if (res.statusCode === 503) return res;
      }
      return undefined;
    })();
    expect(shed, 'the service never shed load while its event loop was blocked').toBeDefined();
    expect(shed!.headers['retry-after']).toBe('5');
    expect(shed!.json()).toMatchObject({ statusCode: 503, error: 'Service Unavailable', code: 'HUBSIDE_ERR_OVERLOADED' });
    expect((await app.inject({ method: 'GET', url: '/services/profile-api/health' })).statusCode).toBe(200);
    // Once the loop is idle again (the sampler runs every 500 ms), requests are served.
    const deadline = Date.now() + 10_000;
    let status = 0;
    while (Date.now() < deadline && status !== 200) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await whoami(app, tokens.alice)).statusCode;
    }
    expect(status).toBe(200);
  });
});

describe('back-pressure without false alarms', () => {
  it('does not shed after single blocks shorter than the limit', async () => {
    // The default 1 s limit. Each 600 ms block outlasts the 500 ms sampling tick, which is when
    // under-pressure can find no delay sample at all and reports an infinite delay; one such
    // block is a pause, not an overload, and requests after it must be served.
    const app = await build({});
    await app.ready();
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) {
      const until = Date.now() + 600;
      while (Date.now() < until) {
        // busy, but once
      }
      await new Promise((r) => setImmediate(r));
      statuses.push((await whoami(app, tokens.alice)).statusCode);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(statuses).toEqual(Array(8).fill(200));
  });
});

describe('slow and oversized requests on a real socket', () => {
  let app: FastifyInstance;
  let port: number;

  beforeAll(async () => {
    app = await build({ HUBSIDE_REQUEST_TIMEOUT: '1' });
    await app.listen({ host: '127.0.0.1', port: 0 });
    port = (app.server.address() as { port: number }).port;
  });

  function closed(socket: Socket): Promise<{ ms: number; data: string }> {
    const started = Date.now();
    let data = '';
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => (data += c));
    return new Promise((resolve) => socket.on('close', () => resolve({ ms: Date.now() - started, data })));
  }

  it('cuts off a slowloris body that trickles in, within the request timeout', async () => {
    const socket = connect(port, '127.0.0.1');
    const done = closed(socket);
    socket.write(
      `POST /services/profile-api/api/echo HTTP/1.1\r\nHost: x\r\nAuthorization: token ${tokens.alice}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"a":',
    );
    // One byte every 200 ms would keep a naive server busy for hours.
    const drip = setInterval(() => {
      if (!socket.destroyed) socket.write('1');
    }, 200);
    const { ms, data } = await done;
    clearInterval(drip);
    // 1 s timeout, checked every 250 ms; generous bound for a loaded machine.
    expect(ms).toBeLessThan(5000);
    if (data) expect(data).toMatch(/^HTTP\/1\.1 408/);
  });

  it('cuts off headers that never finish', async () => {
    const socket = connect(port, '127.0.0.1');
    const done = closed(socket);
    socket.write('GET /services/profile-api/health HTTP/1.1\r\nHost: x\r\n');
    const drip = setInterval(() => {
      if (!socket.destroyed) socket.write('X-Slow: 1\r\n');
    }, 200);
    const { ms } = await done;
    clearInterval(drip);
    expect(ms).toBeLessThan(5000);
  });

  it('refuses oversized headers with 431 and oversized bodies with 413', async () => {
    const big = await fetch(`http://127.0.0.1:${port}/services/profile-api/health`, { headers: { 'x-big': 'a'.repeat(20_000) } });
    expect(big.status).toBe(431);
    const body = await fetch(`http://127.0.0.1:${port}/services/profile-api/api/echo`, {
      method: 'POST',
      headers: { authorization: `token ${tokens.alice}`, 'content-type': 'application/json' },
      body: JSON.stringify({ a: 'x'.repeat(2 * 1024 * 1024) }),
    });
    expect(body.status).toBe(413);
    expect(await body.json()).toMatchObject({ statusCode: 413 });
  });
});
