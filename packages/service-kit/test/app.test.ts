import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createServiceApp } from '../src/app.js';
import { resolveSettings } from '../src/config.js';
import { loggerOptions } from '../src/logging.js';
import type { FastifyInstance } from 'fastify';

const apps: FastifyInstance[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

async function app(opts: { logger?: pino.Logger } = {}) {
  const settings = resolveSettings('profile-api', {});
  const instance = await createServiceApp({ settings, logger: opts.logger ?? false, defaultMetrics: false });
  instance.post(
    `${settings.prefix}echo`,
    { config: { auth: false }, schema: { body: z.object({ name: z.string().min(1), count: z.number().int().max(10) }).strict() } },
    async (request) => request.body,
  );
  apps.push(instance);
  return instance;
}

describe('the shared error format', () => {
  it('answers bad JSON with 400 JSON', async () => {
    const res = await (await app()).inject({
      method: 'POST',
      url: '/services/profile-api/echo',
      headers: { 'content-type': 'application/json' },
      payload: '{"name": ',
    });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ statusCode: 400, error: 'Bad Request', code: 'FST_ERR_CTP_INVALID_JSON_BODY' });
  });

  it('names the invalid field', async () => {
    const res = await (await app()).inject({ method: 'POST', url: '/services/profile-api/echo', payload: { name: '', count: 11, extra: 1 } });
    expect(res.statusCode).toBe(400);
    const body = res.json<{ message: string; code: string }>();
    expect(body.code).toBe('HUBSIDE_ERR_VALIDATION');
    expect(body.message).toMatch(/body\.name: /);
    expect(body.message).toMatch(/body\.count: /);
    expect(body.message).toMatch(/extra/);
  });

  it('refuses unsupported media types and oversized bodies with 4xx JSON', async () => {
    const a = await app();
    const wrongType = await a.inject({ method: 'POST', url: '/services/profile-api/echo', headers: { 'content-type': 'application/x-nope' }, payload: 'x' });
    expect(wrongType.statusCode).toBe(415);
    expect(wrongType.json()).toMatchObject({ statusCode: 415 });
    const huge = await a.inject({
      method: 'POST',
      url: '/services/profile-api/echo',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ name: 'x'.repeat(2 * 1024 * 1024), count: 1 }),
    });
    expect(huge.statusCode).toBe(413);
    expect(huge.json()).toMatchObject({ statusCode: 413, error: 'Payload Too Large' });
  });

  it('answers unknown routes with 404 JSON', async () => {
    const res = await (await app()).inject({ method: 'GET', url: '/nowhere?x=1' });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual({ statusCode: 404, error: 'Not Found', message: 'Route GET /nowhere not found', code: 'HUBSIDE_ERR_NOT_FOUND' });
  });

  it('never leaks an internal error', async () => {
    const a = await app();
    a.get('/services/profile-api/boom', { config: { auth: false } }, async () => {
      throw new Error('database password is hunter2');
    });
    const res = await a.inject({ method: 'GET', url: '/services/profile-api/boom' });
    expect(res.statusCode).toBe(500);
    expect(res.body).not.toContain('hunter2');
    expect(res.json()).toMatchObject({ statusCode: 500, message: 'Internal Server Error' });
  });
});

describe('without a hub', () => {
  it('serves health, and says how to connect a hub on routes that need one', async () => {
    const a = await app();
    const health = await a.inject({ method: 'GET', url: '/services/profile-api/health' });
    expect(health.statusCode).toBe(200);
    expect(health.json()).toMatchObject({ status: 'ok', service: 'profile-api', hub: 'not configured' });
    const whoami = await a.inject({ method: 'GET', url: '/services/profile-api/api/whoami', headers: { authorization: 'token abc' } });
    expect(whoami.statusCode).toBe(503);
    expect(whoami.json<{ message: string }>().message).toMatch(/JUPYTERHUB_API_URL.*JUPYTERHUB_API_TOKEN/);
  });

  it('answers its home page with an HTML page that says how to connect a hub, whatever the service serves there', async () => {
    const settings = resolveSettings('usage-collector', {});
    // A service with its own UI at the prefix (like the dashboards) and no landing page of the kit's.
    const a = await createServiceApp({ settings, logger: false, defaultMetrics: false, landingPage: false });
    a.get(settings.prefix, { config: { auth: { browser: true } } }, async () => 'the service UI');
    apps.push(a);
    for (const url of ['/services/usage-collector/', '/services/usage-collector', '/services/usage-collector/?next=x']) {
      const res = await a.inject({ method: 'GET', url, headers: { accept: 'text/html' } });
      expect(res.statusCode, url).toBe(503);
      expect(res.headers['content-type']).toMatch(/^text\/html/);
      expect(res.headers['content-security-policy']).toContain("default-src 'none'");
      expect(res.body).toContain('<h1>Hubside usage-collector is running, without a hub</h1>');
      expect(res.body).toMatch(/npm start/);
      expect(res.body).toMatch(/JUPYTERHUB_API_URL=.*\n.*JUPYTERHUB_API_TOKEN=/s);
    }
    // Everything else stays JSON.
    const api = await a.inject({ method: 'GET', url: '/services/usage-collector/api/whoami', headers: { authorization: 'token abc' } });
    expect(api.statusCode).toBe(503);
    expect(api.json()).toMatchObject({ statusCode: 503 });
    const post = await a.inject({ method: 'POST', url: '/services/usage-collector/' });
    expect(post.headers['content-type']).toMatch(/json/);
  });

  it('keeps the service\'s own home page once a hub is configured', async () => {
    const settings = resolveSettings('usage-collector', { JUPYTERHUB_API_URL: 'http://127.0.0.1:9/hub/api', JUPYTERHUB_API_TOKEN: 'secret-token' });
    const a = await createServiceApp({ settings, logger: false, defaultMetrics: false, landingPage: false });
    a.get(settings.prefix, { config: { auth: false } }, async () => 'the service UI');
    apps.push(a);
    const res = await a.inject({ method: 'GET', url: '/services/usage-collector/' });
    expect(res.statusCode).toBe(200);
    expect(res.body).toBe('the service UI');
  });
});

describe('logging', () => {
  it('redacts credentials from request logs and logged objects', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const logger = pino(loggerOptions({ level: 'trace', service: 'profile-api' }), sink);
    const a = await app({ logger });
    a.get('/services/profile-api/log-me', { config: { auth: false } }, async (request) => {
      request.log.info({ token: 'tok-secret-1', config: { apiToken: 'tok-secret-2' }, db: { password: 'tok-secret-3' } }, 'object with secrets');
      return { ok: true };
    });
    await a.inject({
      method: 'GET',
      url: '/services/profile-api/log-me?token=tok-secret-4&code=tok-secret-5&page=2',
      headers: { authorization: 'token tok-secret-6', cookie: 'service-profile-api=tok-secret-7' },
    });
    await a.inject({ method: 'GET', url: '/services/profile-api/api/whoami', headers: { authorization: 'Bearer tok-secret-8' } });
    const all = lines.join('');
    expect(all).toContain('object with secrets');
    expect(all).toContain('page=2');
    for (let i = 1; i <= 8; i += 1) expect(all).not.toContain(`tok-secret-${i}`);
  });
});

describe('NUL characters', () => {
  it('refuses them in path parameters and queries with 400 JSON before any route code runs', async () => {
    const a = await app();
    let reached = 0;
    a.get('/services/profile-api/things/:name', { config: { auth: false } }, async (request) => {
      reached += 1;
      return request.params;
    });
    const inPath = await a.inject({ method: 'GET', url: '/services/profile-api/things/a%00b' });
    expect(inPath.statusCode).toBe(400);
    expect(inPath.json()).toMatchObject({ statusCode: 400, code: 'HUBSIDE_ERR_VALIDATION', message: 'params.name: must not contain NUL characters' });
    const inQuery = await a.inject({ method: 'GET', url: '/services/profile-api/things/ok?user=x%00' });
    expect(inQuery.statusCode).toBe(400);
    expect(reached).toBe(0);
    expect((await a.inject({ method: 'GET', url: '/services/profile-api/things/ok?user=x' })).statusCode).toBe(200);
  });
});

describe('failed upstream calls', () => {
  it('answer 504 when an upstream times out and 502 when it cannot be reached, never 500', async () => {
    const a = await app();
    a.get('/services/profile-api/slow', { config: { auth: false } }, async () => {
      await fetch('http://127.0.0.1:9/never', { signal: AbortSignal.timeout(1) }).catch(async (err: unknown) => {
        // A refused connection can win the race against 1 ms; make the timeout case deterministic.
        if ((err as Error).name !== 'TimeoutError') throw Object.assign(new Error('The operation was aborted due to timeout'), { name: 'TimeoutError' });
        throw err;
      });
    });
    a.get('/services/profile-api/down', { config: { auth: false } }, async () => fetch('http://127.0.0.1:9/refused'));
    const slow = await a.inject({ method: 'GET', url: '/services/profile-api/slow' });
    expect(slow.statusCode).toBe(504);
    expect(slow.json()).toMatchObject({ statusCode: 504, code: 'HUBSIDE_ERR_UPSTREAM_TIMEOUT' });
    const down = await a.inject({ method: 'GET', url: '/services/profile-api/down' });
    expect(down.statusCode).toBe(502);
    expect(down.json()).toMatchObject({ statusCode: 502, code: 'HUBSIDE_ERR_UPSTREAM_UNAVAILABLE' });
  });
});
