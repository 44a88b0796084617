/**
 * `kill -9` of the auth-bridge (started by the `hubside` CLI, as in production) with logins
 * completed, logins waiting at the university, a login racing the kill and a university callback
 * cut off by it; then a restart on the same database, upstream oidc-provider universities as in
 * the bridge's own tests, the hub's side played by openid-client as a hub's authenticator would.
 *
 * Completed logins keep working (refresh, userinfo, the old access token), no account is created
 * twice, and a login the kill interrupted either resumes or ends on a clear error page, and a
 * fresh attempt succeeds.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestBrowser, createTestDatabase, freePort, waitFor } from '@hubside/testing';
import type { TestBrowser, TestDatabase } from '@hubside/testing';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configSchema } from '../../services/auth-bridge/src/app.js';
import { PREFIX, rpLogin, startBridge, startUniversities } from '../../services/auth-bridge/test/fixtures/setup.js';
import type { Universities } from '../../services/auth-bridge/test/fixtures/setup.js';
import { cliServices } from './cli-service.js';

const HUB_A = { clientId: 'hub-a', secret: 'kill9-hub-a-secret-0123456789', redirectUri: 'http://hub-a.invalid/hub/oauth_callback' };
const HUB_B = { clientId: 'hub-b', secret: 'kill9-hub-b-secret-0123456789', redirectUri: 'http://hub-b.invalid/hub/oauth_callback' };

let database: TestDatabase;
let unis: Universities;
let dir: string;
let port: number;
let base: string;
let rawConfig: Record<string, unknown>;
const services = cliServices();

beforeAll(async () => {
  database = await createTestDatabase({ schemas: ['auth_bridge'] });
  port = await freePort();
  base = `http://127.0.0.1:${port}`;
  unis = await startUniversities(base);
  const upstream = (uni: 'a' | 'b', username: Record<string, unknown>) => ({
    displayName: `University ${uni.toUpperCase()}`,
    issuer: unis[uni].issuer,
    clientId: unis[uni].clientId,
    clientSecretEnv: `UNI_${uni.toUpperCase()}_SECRET`,
    scopes: ['openid', 'email', 'profile', 'groups'],
    username,
  });
  rawConfig = {
    publicUrl: base,
    upstreams: { 'uni-a': upstream('a', { claim: 'email', stripDomain: true }), 'uni-b': upstream('b', { claim: 'email' }) },
    // One IdP per hub: the bridge sends the browser straight to the university.
    hubs: {
      'hub-a': { clientId: HUB_A.clientId, clientSecret: HUB_A.secret, redirectUris: [HUB_A.redirectUri], idps: ['uni-a'] },
      'hub-b': { clientId: HUB_B.clientId, clientSecret: HUB_B.secret, redirectUris: [HUB_B.redirectUri], idps: ['uni-b'] },
    },
  };
  configSchema.parse(rawConfig);
  dir = await mkdtemp(join(tmpdir(), 'hubside-kill9-bridge-'));
  // JSON is YAML: the file the CLI reads, with the bridge's section as the tests' fixtures build it.
  await writeFile(join(dir, 'community.yaml'), JSON.stringify({ community: { name: 'kill9-bridge' }, 'auth-bridge': rawConfig }));
}, 120_000);

afterAll(async () => {
  await services.killAll();
  await unis?.close();
  await database?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const startCli = () =>
  services.start('auth-bridge', port, {
    HUBSIDE_CONFIG: join(dir, 'community.yaml'),
    HUBSIDE_DATA_DIR: database.dataDir,
    HUBSIDE_LOG_LEVEL: 'warn',
    HUBSIDE_RATE_LIMIT_USER: '0',
    UNI_A_SECRET: unis.a.clientSecret,
    UNI_B_SECRET: unis.b.clientSecret,
    ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
  });

const issuer = () => `${base}${PREFIX}oidc`;
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A whole login, from the hub's redirect to tokens in the hub's hands. */
async function fullLogin(hub: typeof HUB_A, browser: TestBrowser = createTestBrowser()) {
  const flow = await rpLogin(browser, issuer(), hub);
  expect(flow.page.url.startsWith(hub.redirectUri), `ended at ${flow.page.url} (${flow.page.status}): ${flow.page.body.slice(0, 300)}`).toBe(true);
  const tokens = await client.authorizationCodeGrant(flow.config, new URL(flow.page.url), { pkceCodeVerifier: flow.verifier, expectedState: flow.state });
  return { flow, tokens, browser };
}

describe('kill -9 of the auth-bridge around logins', () => {
  it('keeps completed logins, duplicates no account, and lets interrupted logins end cleanly and retry', async () => {
    let child = await startCli();

    // Completed: alice and arno at University A.
    unis.a.nextUser = 'alice';
    const alice = await fullLogin(HUB_A);
    unis.a.nextUser = 'arno';
    const arno = await fullLogin(HUB_A);

    // In progress: carol (University B) waits at her university's login.
    unis.b.nextUser = 'carol';
    const carolBrowser = createTestBrowser();
    const carol = await rpLogin(carolBrowser, issuer(), HUB_B, { stopAt: new RegExp(`^${escape(unis.b.issuer)}`) });
    expect(carol.page.url.startsWith(unis.b.issuer), carol.page.url).toBe(true);

    // Cut off: bob (University B) is back from his university; his browser is about to deliver
    // the callback to the bridge.
    const bobBrowser = createTestBrowser();
    unis.b.nextUser = 'bob';
    const bob = await rpLogin(bobBrowser, issuer(), HUB_B, { stopAt: new RegExp(`^${escape(`${base}${PREFIX}callback/uni-b`)}`) });
    expect(bob.page.url).toContain(`${PREFIX}callback/uni-b?`);

    // Load while the kill lands: userinfo calls with alice's token, refresh grants with arno's
    // refresh token (a hub refreshing its users' auth state), and bob's callback.
    let stop = false;
    const deadline = Date.now() + 30_000;
    let infos = 0;
    let refreshes = 0;
    const loop = async (call: () => Promise<unknown>, done: () => void) => {
      while (!stop && Date.now() < deadline) await call().then(done, () => new Promise((r) => setTimeout(r, 50)));
    };
    const load = Promise.all([
      loop(() => client.fetchUserInfo(alice.flow.config, alice.tokens.access_token, alice.tokens.claims()!.sub), () => (infos += 1)),
      loop(() => client.refreshTokenGrant(arno.flow.config, arno.tokens.refresh_token!), () => (refreshes += 1)),
    ]);
    await waitFor(async () => infos >= 5 && refreshes >= 3, { timeoutMs: 15_000, intervalMs: 10, what: 'userinfo and refresh load' });
    bobBrowser.stopAt = new RegExp(`^${escape(HUB_B.redirectUri)}`);
    const bobCallback = bobBrowser.get(bob.page.url).then((page) => page, () => undefined);
    await services.kill9(child);
    const bobFirst = await bobCallback;
    child = await startCli();
    const [infosAtRestart, refreshesAtRestart] = [infos, refreshes];
    await waitFor(async () => infos >= infosAtRestart + 5 && refreshes >= refreshesAtRestart + 3, { timeoutMs: 15_000, intervalMs: 10, what: 'userinfo and refresh answer again after the restart' });
    stop = true;
    await load;

    // Completed logins survive: refresh works, userinfo answers with the new and the old token.
    for (const [who, done] of [['alice', alice], ['arno', arno]] as const) {
      const refreshed = await client.refreshTokenGrant(done.flow.config, done.tokens.refresh_token!);
      const sub = done.tokens.claims()!.sub;
      expect((await client.fetchUserInfo(done.flow.config, refreshed.access_token, sub)).username).toBe(who);
      expect((await client.fetchUserInfo(done.flow.config, done.tokens.access_token, sub)).username).toBe(who);
    }

    // Bob's callback: if the kill swallowed its answer, the browser sends it again. The bridge
    // either finishes the login or explains, on a page, that the login must start over.
    let bobDone = bobFirst?.url.startsWith(HUB_B.redirectUri) ? bobFirst : undefined;
    if (!bobDone) {
      const again = await bobBrowser.get(bob.page.url);
      if (again.url.startsWith(HUB_B.redirectUri)) bobDone = again;
      else expectCleanRefusal(again);
    }
    const outcomes = [`bob's callback at the kill: ${bobFirst ? `${bobFirst.status} ${bobFirst.url.startsWith(HUB_B.redirectUri) ? 'login done' : 'refused'}` : 'connection lost'}`];
    if (bobDone) {
      const tokens = await client.authorizationCodeGrant(bob.config, new URL(bobDone.url), { pkceCodeVerifier: bob.verifier, expectedState: bob.state });
      expect((await client.fetchUserInfo(bob.config, tokens.access_token, tokens.claims()!.sub)).username).toBe('bob@uni-b.edu');
      // The same callback once more, as a browser that never saw the answer sends it: the
      // university's code is spent, so the bridge explains instead of logging in twice.
      const replay = await bobBrowser.get(bob.page.url);
      expectCleanRefusal(replay);
      outcomes.push(`bob's callback replayed: ${replay.status}`);
    }
    // A fresh attempt succeeds either way (through the same browser, as the person would retry).
    unis.b.nextUser = 'bob';
    const bobRetry = await fullLogin(HUB_B, bobBrowser);
    expect((await client.fetchUserInfo(bobRetry.flow.config, bobRetry.tokens.access_token, bobRetry.tokens.claims()!.sub)).username).toBe('bob@uni-b.edu');

    // Carol's login, waiting at her university through the kill, goes on (or ends cleanly and retries).
    carolBrowser.stopAt = new RegExp(`^${escape(HUB_B.redirectUri)}`);
    unis.b.nextUser = 'carol';
    const carolOn = await carolBrowser.get(carol.page.url);
    outcomes.push(`carol, at her university through the kill: ${carolOn.status} ${carolOn.url.startsWith(HUB_B.redirectUri) ? 'login done' : 'refused'}`);
    if (carolOn.url.startsWith(HUB_B.redirectUri)) {
      const tokens = await client.authorizationCodeGrant(carol.config, new URL(carolOn.url), { pkceCodeVerifier: carol.verifier, expectedState: carol.state });
      expect((await client.fetchUserInfo(carol.config, tokens.access_token, tokens.claims()!.sub)).username).toBe('carol@elsewhere.org');
    } else {
      expectCleanRefusal(carolOn);
      await fullLogin(HUB_B, carolBrowser);
    }

    // Alice logs in again after the restart: the same account, not a new one.
    unis.a.nextUser = 'alice';
    const aliceAgain = await fullLogin(HUB_A);
    expect(aliceAgain.tokens.claims()!.sub).toBe(alice.tokens.claims()!.sub);
    await services.kill9(child);

    // What the database holds, read by a bridge on the same database once the CLI process is gone.
    const app = await startBridge({
      port: await freePort(),
      config: configSchema.parse(rawConfig),
      dataDir: database.dataDir,
      databaseUrl: database.databaseUrl,
      env: { UNI_A_SECRET: unis.a.clientSecret, UNI_B_SECRET: unis.b.clientSecret },
    });
    try {
      const accounts = await app.db.selectFrom('account').select(['hub', 'idp', 'username', 'upstream_sub']).orderBy('username').execute();
      console.info(`kill9-bridge: ${outcomes.join('; ')}; userinfo answers ${infosAtRestart} before, ${infos - infosAtRestart} after; refresh grants ${refreshesAtRestart} before, ${refreshes - refreshesAtRestart} after`);
      expect(accounts.map((a) => `${a.hub}/${a.username}`)).toEqual(['hub-a/alice', 'hub-a/arno', 'hub-b/bob@uni-b.edu', 'hub-b/carol@elsewhere.org']);
    } finally {
      await app.close();
    }

    // Whatever the bridge processes logged holds no token or secret of this run.
    const secrets = [HUB_A.secret, HUB_B.secret, unis.a.clientSecret, unis.b.clientSecret];
    for (const done of [alice, arno, bobRetry, aliceAgain]) secrets.push(done.tokens.access_token, done.tokens.refresh_token!, done.tokens.id_token!);
    const logs = services.logs.join('');
    expect(secrets.filter((secret) => logs.includes(secret))).toEqual([]);
  }, 120_000);
});

/** A login that cannot go on ends on an HTML page that says what happened and what to do. */
function expectCleanRefusal(page: { status: number; headers: Record<string, unknown>; body: string; url: string }) {
  expect(page.status, `${page.url}: ${page.body.slice(0, 300)}`).toBeGreaterThanOrEqual(400);
  expect(page.status, `${page.url}: ${page.body.slice(0, 300)}`).toBeLessThan(500);
  expect(String(page.headers['content-type'])).toMatch(/text\/html/);
  expect(page.body).toMatch(/log in again/);
}
