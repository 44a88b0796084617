/**
 * PostgreSQL restarts for real in the middle of writes (our own throwaway cluster, never the
 * shared one). Services answer 503 while it is down, reconnect by themselves, and no profile
 * version is lost, doubled or half-written; client retries of an edit are idempotent; usage
 * sessions are neither lost nor duplicated.
 */
import { waitFor } from '@hubside/testing';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leakedLines, startStack } from '../security/stack.js';
import type { Stack } from '../security/stack.js';
import { startPgCluster } from './pg-cluster.js';
import type { PgCluster } from './pg-cluster.js';

let pg: PgCluster;
let stack: Stack;

beforeAll(async () => {
  pg = await startPgCluster();
  stack = await startStack({ databaseUrl: pg.url });
}, 180_000);

afterAll(async () => {
  await stack?.close();
  await pg?.destroy();
});

const PROFILES = '/services/profile-api/api/profiles';

function docFor(i: number) {
  return [{ slug: 'edit', display_name: `Edit ${i}`, description: `edit number ${i}`, default: true, kubespawner_override: { cpu_limit: 1 + i } }];
}

/**
 * A client that retries its edit with the same If-Match and document until it gets an answer that
 * is not 5xx, as any sensible HTTP client does. Returns every status it saw.
 */
async function editWithRetries(app: FastifyInstance, token: string, etag: string, i: number): Promise<{ final: LightMyRequestResponse; seen: number[] }> {
  const seen: number[] = [];
  const final = await waitFor(
    async () => {
      const res = await app.inject({
        method: 'PUT',
        url: PROFILES,
        headers: { authorization: `token ${token}`, 'if-match': etag },
        payload: { profiles: docFor(i), message: `edit ${i}` },
      });
      seen.push(res.statusCode);
      if (res.statusCode >= 500) {
        // Down means 503 in the error format with Retry-After, never a 500.
        expect(res.statusCode, res.body.slice(0, 300)).toBe(503);
        expect(res.headers['retry-after']).toBeDefined();
        expect(res.json()).toMatchObject({ statusCode: 503, code: expect.stringMatching(/UNAVAILABLE/) });
        return undefined;
      }
      return res;
    },
    { timeoutMs: 60_000, intervalMs: 100, what: `edit ${i} lands` },
  );
  return { final, seen };
}

describe('PostgreSQL restarts during profile edits', () => {
  it('answers 503 while down, then every acknowledged edit exists exactly once and whole', async () => {
    const app = stack.apps['profile-api'];
    const token = stack.tokens.root;
    const EDITS = 12;
    const get = () => app.inject({ method: 'GET', url: `${PROFILES}/document`, headers: { authorization: `token ${token}` } });
    let etag = String((await get()).headers.etag);
    const statuses: number[][] = [];
    let restart: Promise<void> | undefined;
    for (let i = 1; i <= EDITS; i += 1) {
      // Restart in the background while edits are going on; the edit loop doesn't wait for it.
      if (i === 4) restart = pg.restart();
      const { final, seen } = await editWithRetries(app, token, etag, i);
      statuses.push(seen);
      expect(final.statusCode, `edit ${i}: ${final.body.slice(0, 300)}`).toBeOneOf([200, 201]);
      etag = String(final.headers.etag);
    }
    await restart;

    // The outage was real: at least one edit saw the database down.
    expect(statuses.flat(), 'statuses seen by the edits').toContain(503);

    const versions = await app.inject({ method: 'GET', url: `${PROFILES}/versions?limit=100`, headers: { authorization: `token ${token}` } });
    expect(versions.statusCode).toBe(200);
    const db = (app as unknown as { db: Kysely<unknown> }).db;
    const rows = (await sql<{ id: number; parent_id: number | null; document: unknown; message: string }>`select * from profile_versions order by id`.execute(db)).rows;
    const edits = rows.filter((r) => /^edit \d+$/.test(r.message));
    // Exactly one version per edit, in order, each with its whole document.
    expect(edits.map((r) => r.message)).toEqual(Array.from({ length: EDITS }, (_, k) => `edit ${k + 1}`));
    for (const [k, r] of edits.entries()) {
      const doc = typeof r.document === 'string' ? JSON.parse(r.document) : r.document;
      expect(doc).toEqual(docFor(k + 1));
    }
    // The chain has no gaps: each version's parent is the one before it.
    for (let k = 1; k < rows.length; k += 1) expect(Number(rows[k]!.parent_id)).toBe(Number(rows[k - 1]!.id));
  });

  it('treats a retried edit that already landed as done, not as a conflict or a second version', async () => {
    const app = stack.apps['profile-api'];
    const token = stack.tokens.root;
    const doc = await app.inject({ method: 'GET', url: `${PROFILES}/document`, headers: { authorization: `token ${token}` } });
    const etag = String(doc.headers.etag);
    const put = () => app.inject({ method: 'PUT', url: PROFILES, headers: { authorization: `token ${token}`, 'if-match': etag }, payload: { profiles: docFor(99), message: 'retried' } });
    const first = await put();
    expect(first.statusCode).toBe(201);
    // The client never saw the answer (connection cut), so it sends the same edit again.
    const again = await put();
    expect(again.statusCode).toBe(200);
    expect(again.json()).toMatchObject({ replayed: true });
    expect(again.headers.etag).toBe(first.headers.etag);
    const db = (app as unknown as { db: Kysely<unknown> }).db;
    const count = (await sql<{ n: string }>`select count(*) as n from profile_versions where message = 'retried'`.execute(db)).rows[0]!.n;
    expect(Number(count)).toBe(1);
  });
});

describe('PostgreSQL restarts while the collector polls', () => {
  it('loses no session and duplicates none', async () => {
    const app = stack.apps['usage-collector'];
    const poller = (app as unknown as { usagePoller: { pollOnce(): Promise<unknown> } }).usagePoller;
    const db = (app as unknown as { db: Kysely<unknown> }).db;
    const sessions = async () => (await sql<{ id: string; stopped: Date | null }>`select id, stopped from sessions where user_name = 'alice'`.execute(db)).rows;

    await stack.hub.startServer('alice');
    await poller.pollOnce();
    const before = await sessions();
    expect(before).toHaveLength(1);

    // Polls keep going while the server restarts; some fail, none may damage the sessions.
    const restart = pg.restart();
    const outcomes: string[] = [];
    let done = false;
    void restart.finally(() => (done = true));
    for (let i = 0; i < 200 && !done; i += 1) {
      outcomes.push(await poller.pollOnce().then(() => 'ok', () => 'failed'));
    }
    await restart;
    await waitFor(async () => (await poller.pollOnce().then(() => true, () => false)), { timeoutMs: 30_000, intervalMs: 200, what: 'polls succeed again' });
    expect(await sessions()).toEqual(before);

    await stack.hub.stopServer('alice');
    await poller.pollOnce();
    const after = await sessions();
    expect(after).toHaveLength(1);
    expect(after[0]!.id).toBe(before[0]!.id);
    expect(after[0]!.stopped).not.toBeNull();
    // The restart did interrupt polls (else this test proved nothing about them).
    expect(outcomes.length).toBeGreaterThan(0);
  });

  it('answers API reads with 503 while the database is down, and recovers without a restart of the service', async () => {
    const app = stack.apps['usage-collector'];
    const read = () => app.inject({ method: 'GET', url: '/services/usage-collector/api/sessions', headers: { authorization: `token ${stack.tokens.root}` } });
    expect((await read()).statusCode).toBe(200);
    await pg.stop();
    try {
      const res = await read();
      expect(res.statusCode, res.body.slice(0, 300)).toBe(503);
      expect(res.json()).toMatchObject({ statusCode: 503, code: 'HUBSIDE_ERR_DATABASE_UNAVAILABLE' });
      expect(res.headers['retry-after']).toBe('5');
      expect((await app.inject({ method: 'GET', url: '/services/usage-collector/health' })).statusCode).toBe(200);
    } finally {
      await pg.start();
    }
    await waitFor(async () => (await read()).statusCode === 200, { timeoutMs: 30_000, intervalMs: 200, what: 'reads work again' });
  });
});

describe('the logs of this run', () => {
  it('contain none of the tokens, cookies and secrets it used', () => {
    expect(stack.logLines.length, 'the services logged something').toBeGreaterThan(0);
    expect(leakedLines(stack)).toEqual([]);
  });
});
