/**
 * The hub goes away (connections refused) or hangs (its process frozen) under all four services.
 * Cached identities keep working until the cache TTL; after that, and for unknown tokens, the
 * services answer 503 with a message, never 500 and never a hang. The collector neither closes
 * nor duplicates sessions because of a poll that could not reach the hub.
 */
import { waitFor } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leakedLines, SERVICES, startStack } from '../security/stack.js';
import type { Stack } from '../security/stack.js';
import { startForwarder } from './forwarder.js';
import type { Forwarder } from './forwarder.js';

const TTL_S = 6;
const HUB_TIMEOUT_S = 1;

let stack: Stack;
let fwd: Forwarder;

beforeAll(async () => {
  stack = await startStack({
    env: { HUBSIDE_AUTH_CACHE_TTL: String(TTL_S), HUBSIDE_HUB_TIMEOUT: String(HUB_TIMEOUT_S) },
    hubApiUrl: async (hub) => {
      const api = new URL(hub.hubApiUrl);
      fwd = await startForwarder(Number(api.port));
      return `http://127.0.0.1:${fwd.port}${api.pathname}`;
    },
  });
}, 180_000);

afterAll(async () => {
  await stack?.close();
  await fwd?.close();
});

const whoami = (app: FastifyInstance, token: string) =>
  app.inject({ method: 'GET', url: `/services/${app.kit.settings.name}/api/whoami`, headers: { authorization: `token ${token}` } });

function expectHubUnavailable(res: Awaited<ReturnType<typeof whoami>>, where: string): void {
  expect(res.statusCode, `${where}: ${res.body.slice(0, 200)}`).toBe(503);
  const body = res.json<{ statusCode: number; error: string; message: string; code: string }>();
  expect(body).toMatchObject({ statusCode: 503, error: 'Service Unavailable', code: 'HUBSIDE_ERR_HUB_UNAVAILABLE' });
  expect(body.message).toMatch(/JupyterHub API is unavailable .*Try again shortly/);
  expect(res.headers['retry-after']).toBe('5');
}

describe('the hub is unreachable (connections refused)', () => {
  it('serves cached identities until the TTL, then answers 503 with a message, and recovers when the hub is back', async () => {
    const apps = SERVICES.map((s) => stack.apps[s]);
    const fresh = stack.remember(await stack.hub.createToken('bob', { note: 'never seen before the outage' }));
    for (const app of apps) expect((await whoami(app, stack.tokens.alice)).statusCode).toBe(200);
    const warmedAt = Date.now();

    await fwd.unplug();
    for (const app of apps) {
      const cached = await whoami(app, stack.tokens.alice);
      // Only meaningful while the cache entry is still young.
      expect(Date.now() - warmedAt).toBeLessThan(TTL_S * 1000);
      expect(cached.statusCode, app.kit.settings.name).toBe(200);
      const started = Date.now();
      expectHubUnavailable(await whoami(app, fresh), `${app.kit.settings.name}, unknown token`);
      // Refused connections fail fast: retries with backoff, not the per-attempt timeout.
      expect(Date.now() - started).toBeLessThan(5000);
    }

    // After the TTL the cached identity is no longer trusted: 503, not 500, not a stale 200 forever.
    for (const app of apps) {
      const res = await waitFor(async () => {
        const r = await whoami(app, stack.tokens.alice);
        return r.statusCode !== 200 ? r : undefined;
      }, { timeoutMs: (TTL_S + 10) * 1000, intervalMs: 250, what: 'the cached identity expires' });
      expect(Date.now() - warmedAt).toBeGreaterThanOrEqual(TTL_S * 1000 - 50);
      expectHubUnavailable(res, `${app.kit.settings.name}, expired cache`);
    }
    // Health stays up through the outage: the service is alive, only the hub is not.
    for (const app of apps) expect((await app.inject({ method: 'GET', url: `/services/${app.kit.settings.name}/health` })).statusCode).toBe(200);

    await fwd.replug();
    for (const app of apps) {
      await waitFor(async () => (await whoami(app, stack.tokens.alice)).statusCode === 200, { timeoutMs: 10_000, intervalMs: 100, what: 'the service sees the hub again' });
      expect((await whoami(app, fresh)).statusCode).toBe(200);
    }
  });
});

describe('the hub hangs (its process is frozen)', () => {
  it('answers 503 within the hub timeout, and a storm of new tokens cannot pile up sockets', async () => {
    const hubProcess = stack.hub.processes().find((p) => /jupyterhub(?!-singleuser)/.test(p.command) && !/configurable-http-proxy/.test(p.command) && p.pid !== stack.hub.pid);
    expect(hubProcess, 'the jupyterhub process').toBeDefined();
    const TOKENS = 60;
    const tokens = await Promise.all(Array.from({ length: TOKENS }, async (_, i) => stack.remember(await stack.hub.createToken('alice', { note: `frozen-${i}` }))));
    process.kill(hubProcess!.pid, 'SIGSTOP');
    try {
      // All four services at once, 180 requests each with 60 new tokens: one hub request per token,
      // through each service's bounded pool.
      const started = Date.now();
      const perService = await Promise.all(
        SERVICES.map(async (s) => {
          const answers = await Promise.all(Array.from({ length: TOKENS * 3 }, (_, i) => whoami(stack.apps[s], tokens[i % TOKENS]!)));
          return { s, answers, elapsed: Date.now() - started };
        }),
      );
      for (const { s, answers, elapsed } of perService) {
        for (const res of answers) expectHubUnavailable(res, `${s}, frozen hub`);
        // 4 attempts of HUB_TIMEOUT_S each plus backoff, pool queueing included: seconds, not minutes.
        expect(elapsed, s).toBeLessThan((HUB_TIMEOUT_S * 4 + 3) * 2 * 1000);
      }
      // Each pool holds at most 32 connections, however many requests waited.
      expect(fwd.open(), 'connections left open towards the frozen hub').toBeLessThanOrEqual(SERVICES.length * 32);
      // And the pools let go of them: idle connections close after the keep-alive timeout (10 s).
      await waitFor(async () => fwd.open() === 0, { timeoutMs: 20_000, intervalMs: 250, what: 'the pools close idle connections' });
    } finally {
      process.kill(hubProcess!.pid, 'SIGCONT');
    }
    await waitFor(async () => (await whoami(stack.apps['profile-api'], tokens[0]!)).statusCode === 200, { timeoutMs: 20_000, intervalMs: 200, what: 'the thawed hub answers' });
  }, 120_000);
});

describe('the collector across a hub outage', () => {
  it('keeps the running session open through failed polls, then reconciles without a duplicate or a gap', async () => {
    const app = stack.apps['usage-collector'];
    const poller = (app as unknown as { usagePoller: { pollOnce(): Promise<unknown> } }).usagePoller;
    const db = (app as unknown as { db: Kysely<unknown> }).db;
    const sessions = async () =>
      (await sql<{ id: string; stopped: Date | null }>`select id, stopped from sessions where user_name = 'bob'`.execute(db)).rows;

    await stack.hub.startServer('bob');
    await poller.pollOnce();
    const before = await sessions();
    expect(before).toHaveLength(1);
    expect(before[0]!.stopped).toBeNull();

    await fwd.unplug();
    try {
      await expect(poller.pollOnce()).rejects.toThrow();
      await expect(poller.pollOnce()).rejects.toThrow();
      // A poll that could not see the hub must not read as "every server stopped".
      expect(await sessions()).toEqual(before);
    } finally {
      await fwd.replug();
    }
    await poller.pollOnce();
    expect(await sessions()).toEqual(before);

    await stack.hub.stopServer('bob');
    await poller.pollOnce();
    const after = await sessions();
    expect(after).toHaveLength(1);
    expect(after[0]!.id).toBe(before[0]!.id);
    expect(after[0]!.stopped).not.toBeNull();
  });
});

describe('the logs of this run', () => {
  it('contain none of the tokens, cookies and secrets it used', () => {
    expect(stack.logLines.length, 'the services logged something').toBeGreaterThan(0);
    expect(leakedLines(stack)).toEqual([]);
  });
});
