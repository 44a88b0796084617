/**
 * The upstream identity provider is slow (accepts, never answers) or down (refuses). A login
 * through the auth-bridge then ends on a clear 502 page within the upstream timeout (10 s), not a
 * hang or a 500, and the bridge does not keep sockets open to the dead IdP.
 */
import { createTestBrowser, createTestDatabase, freePort } from '@hubside/testing';
import type { TestDatabase } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRecorder } from '../security/stack.js';
import type { Recorder } from '../security/stack.js';
import { configSchema } from '../../services/auth-bridge/src/app.js';
import { PREFIX, startBridge } from '../../services/auth-bridge/test/fixtures/setup.js';

const UPSTREAM_TIMEOUT_S = 10;
const HUB = { clientId: 'hub', secret: 'idp-fault-hub-secret-0123456789', redirectUri: '' };

let database: TestDatabase;
let app: FastifyInstance;
let slowIdp: Recorder;
let base: string;

beforeAll(async () => {
  database = await createTestDatabase({ schemas: ['auth_bridge'] });
  slowIdp = await startRecorder(() => 'hang');
  const downPort = await freePort();
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  HUB.redirectUri = `${base}${PREFIX}health`;
  const config = configSchema.parse({
    publicUrl: base,
    upstreams: {
      slow: { displayName: 'Slow University', issuer: `${slowIdp.url}/slow`, clientId: 'bridge', clientSecret: 'idp-fault-upstream-secret-1', username: { claim: 'email', prefix: 'slow-' } },
      down: { displayName: 'Down University', issuer: `http://127.0.0.1:${downPort}/down`, clientId: 'bridge', clientSecret: 'idp-fault-upstream-secret-2', username: { claim: 'email', prefix: 'down-' } },
    },
    hubs: { hub: { displayName: 'Fault Hub', clientId: HUB.clientId, clientSecret: HUB.secret, redirectUris: [HUB.redirectUri] } },
  });
  app = await startBridge({ port, config, dataDir: database.dataDir, databaseUrl: database.databaseUrl });
}, 120_000);

afterAll(async () => {
  await app?.close();
  await slowIdp?.close();
  await database?.drop();
});

/** A hub's browser at the bridge's chooser, as after the hub redirected it to authorize. */
async function atChooser() {
  const rp = await client.discovery(new URL(`${base}${PREFIX}oidc`), HUB.clientId, undefined, client.ClientSecretPost(HUB.secret), { execute: [client.allowInsecureRequests] });
  const url = client.buildAuthorizationUrl(rp, {
    redirect_uri: HUB.redirectUri,
    scope: 'openid',
    state: client.randomState(),
    code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
    code_challenge_method: 'S256',
  });
  const browser = createTestBrowser();
  const page = await browser.get(url.href);
  expect(page.status).toBe(200);
  const uid = /\/interaction\/([^/?#]+)/.exec(page.url)?.[1];
  expect(uid, `chooser URL ${page.url}`).toBeDefined();
  return { browser, uid: uid! };
}

describe('an upstream IdP that never answers', () => {
  it('ends the login on a 502 page naming the IdP within the upstream timeout, and lets go of the socket', async () => {
    const { browser, uid } = await atChooser();
    const started = Date.now();
    const page = await browser.get(`${base}${PREFIX}interaction/${uid}/login/slow`);
    const elapsed = Date.now() - started;
    expect(page.status).toBe(502);
    expect(String(page.headers['content-type'])).toMatch(/text\/html/);
    expect(page.body).toContain('Slow University is unavailable');
    expect(elapsed).toBeGreaterThanOrEqual(UPSTREAM_TIMEOUT_S * 1000 - 500);
    expect(elapsed).toBeLessThan(UPSTREAM_TIMEOUT_S * 1000 + 5000);
    expect(slowIdp.requests.length, 'the bridge did ask the IdP').toBeGreaterThan(0);
    const deadline = Date.now() + 3000;
    while (slowIdp.connections() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(slowIdp.connections(), 'sockets still open to the IdP that timed out').toBe(0);
  }, 60_000);
});

describe('an upstream IdP that is down', () => {
  it('ends the login on a 502 page at once', async () => {
    const { browser, uid } = await atChooser();
    const started = Date.now();
    const page = await browser.get(`${base}${PREFIX}interaction/${uid}/login/down`);
    expect(page.status).toBe(502);
    expect(page.body).toContain('Down University is unavailable');
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
