/**
 * The whole login chain without a hub: a hub-side relying party (openid-client) → the bridge →
 * two real oidc-provider universities → the bridge → the relying party. Proves the provider
 * endpoints, username and group rules, refusals, restart persistence and key rotation.
 */
import { createTestBrowser, createTestDatabase, freePort, waitFor } from '@hubside/testing';
import type { TestBrowser, TestDatabase } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { PREFIX, bridgeConfig, rpLogin, secretsEnv, startBridge, startUniversities } from './fixtures/setup.js';
import type { Universities } from './fixtures/setup.js';

const RP = { clientId: 'course-hub', secret: 'course-secret-0123456789abcdef', redirectUri: 'http://rp.invalid/hub/oauth_callback' };
const STRICT = { clientId: 'strict-hub', secret: 'strict-secret-0123456789abcdef', redirectUri: 'http://rp-strict.invalid/hub/oauth_callback' };

let database: TestDatabase;
let unis: Universities;
let app: FastifyInstance;
let port: number;
let base: string;
let issuer: string;
let config: ReturnType<typeof bridgeConfig>;
// Lifetimes unlike the defaults and unlike each other, so each row's expiry shows which one applied.
const TTL = { accessToken: 1200, idToken: 1500, interaction: 700, refreshToken: 2 * 86400, session: 3 * 86400, grant: 4 * 86400, upstreamClaims: 3600 };
// What oidc-provider prints (NOTICEs about defaults it had to use), collected over the whole file.
const printed: string[] = [];

async function restart(): Promise<void> {
  await app.close();
  app = await startBridge({ port, config, dataDir: database.dataDir, databaseUrl: database.databaseUrl, env: secretsEnv(unis) });
}

beforeAll(async () => {
  for (const level of ['info', 'warn', 'log'] as const) {
    const original = console[level].bind(console);
    vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
      printed.push(args.map(String).join(' '));
      original(...args);
    });
  }
  database = await createTestDatabase({ schemas: ['auth_bridge'] });
  port = await freePort();
  base = `http://127.0.0.1:${port}`;
  issuer = `${base}${PREFIX}oidc`;
  unis = await startUniversities(base);
  config = bridgeConfig(
    unis,
    {
      course: {
        displayName: 'Course Hub',
        clientId: RP.clientId,
        clientSecret: RP.secret,
        redirectUris: [RP.redirectUri],
        postLogoutRedirectUris: ['http://rp.invalid/hub/logout'],
        allowedDomains: ['uni-a.edu', '*.uni-a.edu', 'uni-b.edu'],
        groupMap: { 'uni-a:physics-staff': 'instructors', faculty: 'instructors', students: 'students' },
        adminGroups: ['instructors'],
      },
      strict: { clientId: STRICT.clientId, clientSecret: STRICT.secret, redirectUris: [STRICT.redirectUri], requirePkce: true, idps: ['uni-a'] },
    },
    base,
    { ttl: TTL, cleanupIntervalSeconds: 1, loginLogDays: 30 },
  );
  app = await startBridge({ port, config, dataDir: database.dataDir, databaseUrl: database.databaseUrl, env: secretsEnv(unis) });
});

afterAll(async () => {
  vi.restoreAllMocks();
  await app?.close();
  await unis?.close();
  await database?.drop();
});

async function login(user: { uni: 'a' | 'b'; name: string }, opts: { basic?: boolean; extra?: Record<string, string>; browser?: TestBrowser } = {}) {
  const browser = opts.browser ?? createTestBrowser();
  unis[user.uni].nextUser = user.name;
  const flow = await rpLogin(browser, issuer, RP, { ...opts, extra: { idp_hint: `uni-${user.uni}`, ...opts.extra } });
  return { browser, ...flow };
}

async function redeem(flow: Awaited<ReturnType<typeof login>>) {
  expect(flow.page.url.startsWith(RP.redirectUri)).toBe(true);
  const tokens = await client.authorizationCodeGrant(flow.config, new URL(flow.page.url), { pkceCodeVerifier: flow.verifier, expectedState: flow.state });
  const info = await client.fetchUserInfo(flow.config, tokens.access_token, tokens.claims()!.sub);
  return { tokens, info };
}

describe('the OpenID Provider towards hubs', () => {
  it('publishes discovery and JWKS under the public issuer', async () => {
    const res = await fetch(`${issuer}/.well-known/openid-configuration`);
    expect(res.status).toBe(200);
    const meta = (await res.json()) as Record<string, unknown>;
    expect(meta.issuer).toBe(issuer);
    expect(meta.authorization_endpoint).toBe(`${issuer}/auth`);
    expect(meta.token_endpoint).toBe(`${issuer}/token`);
    expect(meta.userinfo_endpoint).toBe(`${issuer}/me`);
    expect(meta.end_session_endpoint).toBe(`${issuer}/session/end`);
    expect(meta.code_challenge_methods_supported).toEqual(['S256']);
    expect(meta.token_endpoint_auth_methods_supported).toEqual(expect.arrayContaining(['client_secret_basic', 'client_secret_post']));
    const jwks = (await (await fetch(String(meta.jwks_uri))).json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys.length).toBeGreaterThanOrEqual(1);
    expect(jwks.keys.every((k) => k.d === undefined)).toBe(true);
  });

  it('logs in a University A user with a stripped username and mapped groups (client_secret_basic)', async () => {
    const flow = await login({ uni: 'a', name: 'alice' }, { basic: true });
    const { tokens, info } = await redeem(flow);
    expect(tokens.token_type.toLowerCase()).toBe('bearer');
    expect(tokens.refresh_token).toBeTruthy();
    expect(info).toMatchObject({ username: 'alice', groups: ['instructors'], email: 'alice@uni-a.edu', name: 'Alice Anders', idp: 'uni-a', admin: true });
    // Userinfo is plain JSON read with a Bearer header, as GenericOAuthenticator does it.
    const raw = await fetch(`${issuer}/me`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    expect(raw.headers.get('content-type')).toContain('application/json');
  });

  it('logs in a University B user through the chooser, keeping the address (client_secret_post)', async () => {
    const browser = createTestBrowser();
    unis.b.nextUser = 'bob';
    const flow = await rpLogin(browser, issuer, RP);
    expect(flow.page.status).toBe(200);
    expect(flow.page.body).toContain('University A');
    expect(flow.page.body).toContain('University B');
    const link = /href="([^"]*\/login\/uni-b)"/.exec(flow.page.body)![1]!;
    const after = await browser.get(new URL(link.replaceAll('&amp;', '&'), base).href);
    const { info } = await redeem({ ...flow, page: after, browser });
    expect(info).toMatchObject({ username: 'bob@uni-b.edu', groups: ['instructors'], idp: 'uni-b' });
  });

  it('refreshes with the refresh_token grant', async () => {
    const { tokens } = await redeem(await login({ uni: 'a', name: 'arno' }));
    const refreshed = await client.refreshTokenGrant((await login({ uni: 'a', name: 'arno' })).config, tokens.refresh_token!);
    expect(refreshed.access_token).toBeTruthy();
    expect(refreshed.token_type.toLowerCase()).toBe('bearer');
  });

  it('requires PKCE S256 for a hub configured so', async () => {
    const browser = createTestBrowser();
    browser.stopAt = /^http:\/\/rp-strict\.invalid/;
    const url = new URL(`${issuer}/auth`);
    url.search = new URLSearchParams({ client_id: STRICT.clientId, redirect_uri: STRICT.redirectUri, response_type: 'code', scope: 'openid', state: 'x' }).toString();
    const page = await browser.get(url.href);
    expect(new URL(page.url).searchParams.get('error')).toBe('invalid_request');
    expect(new URL(page.url).searchParams.get('error_description')).toMatch(/PKCE/);
  });

  it('ends the session on RP-initiated logout', async () => {
    const flow = await login({ uni: 'a', name: 'alice' });
    const { tokens } = await redeem(flow);
    flow.browser.stopAt = /^http:\/\/rp\.invalid/;
    const url = client.buildEndSessionUrl(flow.config, { id_token_hint: tokens.id_token!, post_logout_redirect_uri: 'http://rp.invalid/hub/logout' });
    const confirm = await flow.browser.get(url.href);
    expect(confirm.status).toBe(200);
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(confirm.body)![1]!;
    const done = await flow.browser.post(`${issuer}/session/end/confirm`, { xsrf, logout: 'yes' });
    expect(done.url).toBe('http://rp.invalid/hub/logout');
    // The session is gone: the next authorization has to go upstream again.
    const again = await rpLogin(flow.browser, issuer, RP, { extra: { idp_hint: 'uni-a' } });
    expect(again.page.redirects.some((u) => u.startsWith(`${base}${PREFIX}callback/uni-a`))).toBe(true);
  });
});

describe('refusals, each with a clear page and no account', () => {
  async function accounts(): Promise<string[]> {
    return (await app.db.selectFrom('account').select('username').execute()).map((r: { username: string }) => r.username);
  }
  /** Accounts and browser sessions, to show a refusal left nothing behind. */
  async function footprint(): Promise<{ accounts: number; sessions: number }> {
    const [a, s] = await Promise.all([
      app.db.selectFrom('account').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow(),
      app.db.selectFrom('oidc_model').select((eb) => eb.fn.countAll<number>().as('n')).where('model', '=', 'Session').executeTakeFirstOrThrow(),
    ]);
    return { accounts: Number(a.n), sessions: Number(s.n) };
  }

  it('refuses a user whose domain the IdP does not speak for', async () => {
    const flow = await login({ uni: 'b', name: 'carol' });
    expect(flow.page.status).toBe(403);
    expect(flow.page.body).toContain('Your domain is not allowed');
    expect(flow.page.body).toContain('elsewhere.org');
    expect(await accounts()).not.toContain('carol@elsewhere.org');
  });

  it('refuses a University A user with a University B address (no impersonation)', async () => {
    const flow = await login({ uni: 'a', name: 'mallory' });
    expect(flow.page.status).toBe(403);
    expect(flow.page.body).toContain('University A may only sign in addresses at uni-a.edu');
    expect(await accounts()).not.toContain('mallory');
  });

  it('refuses a code from IdP A sent to IdP B\u2019s callback', async () => {
    const browser = createTestBrowser();
    unis.a.nextUser = 'alice';
    const flow = await rpLogin(browser, issuer, RP, { extra: { idp_hint: 'uni-a' }, stopAt: /\/callback\/uni-a\?/ });
    const cb = new URL(flow.page.url);
    expect(cb.pathname).toBe(`${PREFIX}callback/uni-a`);
    browser.stopAt = undefined;
    const before = await footprint();
    const page = await browser.get(`${base}${PREFIX}callback/uni-b${cb.search}`);
    expect(page.status).toBe(400);
    expect(page.body).toContain('started with University A');
    // Nothing reached the hub: the browser stayed on the bridge's refusal page.
    expect(page.url).not.toContain('rp.invalid');
    expect(await footprint()).toEqual(before);
  });

  it('refuses a replayed callback (state and code are good for one try)', async () => {
    const browser = createTestBrowser();
    unis.a.nextUser = 'alice';
    const flow = await rpLogin(browser, issuer, RP, { extra: { idp_hint: 'uni-a' }, stopAt: /\/callback\/uni-a\?/ });
    const cb = flow.page.url;
    expect(cb).toContain('/callback/uni-a?');
    browser.stopAt = /^http:\/\/rp\.invalid/;
    const first = await browser.get(cb);
    expect(first.url.startsWith(RP.redirectUri)).toBe(true);
    const replay = await browser.get(cb);
    expect(replay.status).toBe(400);
    expect(replay.body).toContain('state mismatch');
  });

  it('refuses a code from IdP A presented with IdP B\u2019s own state (RFC 9207 iss check)', async () => {
    const browser = createTestBrowser();
    unis.a.nextUser = 'alice';
    unis.b.nextUser = 'bob';
    const fromA = await rpLogin(browser, issuer, RP, { extra: { idp_hint: 'uni-a' }, stopAt: /\/callback\/uni-a\?/ });
    const other = createTestBrowser();
    const fromB = await rpLogin(other, issuer, RP, { extra: { idp_hint: 'uni-b' }, stopAt: /\/callback\/uni-b\?/ });
    const a = new URL(fromA.page.url);
    const b = new URL(fromB.page.url);
    const mixed = new URLSearchParams({ code: a.searchParams.get('code')!, state: b.searchParams.get('state')!, iss: a.searchParams.get('iss')! });
    other.stopAt = undefined;
    const page = await other.get(`${base}${PREFIX}callback/uni-b?${mixed}`);
    expect(page.status).toBe(400);
    expect(page.body).toContain('did not come from University B');
  });

  it('refuses a state that matches no login', async () => {
    const before = await footprint();
    const page = await createTestBrowser().get(`${base}${PREFIX}callback/uni-a?code=abc&state=forged&iss=${encodeURIComponent(unis.a.issuer)}`);
    expect(page.status).toBe(400);
    expect(page.body).toContain('state mismatch');
    expect(await footprint()).toEqual(before);
  });

  it('refuses a used upstream code brought back with a fresh login of its own', async () => {
    unis.a.nextUser = 'alice';
    const first = createTestBrowser();
    const used = await rpLogin(first, issuer, RP, { extra: { idp_hint: 'uni-a' }, stopAt: /\/callback\/uni-a\?/ });
    first.stopAt = /^http:\/\/rp\.invalid/;
    expect((await first.get(used.page.url)).url.startsWith(RP.redirectUri)).toBe(true);
    // A new login in another browser gets its own state; the old code is swapped in.
    const second = createTestBrowser();
    const fresh = await rpLogin(second, issuer, RP, { extra: { idp_hint: 'uni-a' }, stopAt: /\/callback\/uni-a\?/ });
    const replay = new URL(fresh.page.url);
    replay.searchParams.set('code', new URL(used.page.url).searchParams.get('code')!);
    const before = await footprint();
    second.stopAt = /^http:\/\/rp\.invalid/;
    const page = await second.get(replay.href);
    expect(page.status).toBe(400);
    expect(page.body).toContain('no longer accepts this login code');
    expect(page.url.startsWith(RP.redirectUri)).toBe(false);
    expect(await footprint()).toEqual(before);
    const last = await app.db.selectFrom('login_event').select(['outcome', 'reason']).orderBy('id', 'desc').executeTakeFirstOrThrow();
    expect(last).toEqual({ outcome: 'refused', reason: 'invalid_grant' });
  });

  it('refuses a replayed authorization code at the token endpoint, and revokes what the first use issued', async () => {
    const flow = await login({ uni: 'a', name: 'alice' });
    const { tokens } = await redeem(flow);
    const again = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: new URL(flow.page.url).searchParams.get('code')!,
        redirect_uri: RP.redirectUri,
        code_verifier: flow.verifier,
        client_id: RP.clientId,
        client_secret: RP.secret,
      }),
    });
    expect(again.status).toBe(400);
    expect(((await again.json()) as { error: string }).error).toBe('invalid_grant');
    // RFC 6749 section 4.1.2: tokens issued from a replayed code should be revoked.
    const me = await fetch(`${issuer}/me`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    expect(me.status).toBe(401);
    await expect(client.refreshTokenGrant(flow.config, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  it('refuses a redirect_uri the hub did not register', async () => {
    const url = new URL(`${issuer}/auth`);
    url.search = new URLSearchParams({ client_id: RP.clientId, redirect_uri: 'http://evil.invalid/cb', response_type: 'code', scope: 'openid' }).toString();
    const before = await footprint();
    const page = await createTestBrowser().get(url.href);
    expect(page.status).toBe(400);
    expect(page.body).toContain('redirect_uri');
    expect(page.redirects).toEqual([]);
    expect(await footprint()).toEqual(before);
  });
});

describe('persistence and keys', () => {
  it('keeps sessions and grants across a restart', async () => {
    const first = await login({ uni: 'a', name: 'alice' });
    const { tokens } = await redeem(first);
    await restart();
    // The refresh token still works...
    const refreshed = await client.refreshTokenGrant(first.config, tokens.refresh_token!);
    expect(refreshed.access_token).toBeTruthy();
    // ...and the browser session still logs in without asking the university.
    unis.a.nextUser = undefined;
    const again = await rpLogin(first.browser, issuer, RP, { extra: { idp_hint: 'uni-a' } });
    const { info } = await redeem({ ...again, browser: first.browser });
    expect(info.username).toBe('alice');
  });

  it('trusts what the institution said for ttl.upstreamClaims only: then userinfo and refresh refuse, and a login asks the institution again', async () => {
    const first = await login({ uni: 'a', name: 'alice' });
    const { tokens } = await redeem(first);
    const sub = tokens.claims()!.sub;
    // Two hours after the login (upstreamClaims is an hour here).
    await app.db.updateTable('account').set({ updated_at: new Date(Date.now() - 2 * 3600_000) }).where('id', '=', sub).execute();
    await expect(client.fetchUserInfo(first.config, tokens.access_token, sub)).rejects.toMatchObject({ status: 401 });
    await expect(client.refreshTokenGrant(first.config, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    // The bridge session is alive, yet the next login goes to the university for fresh claims.
    unis.a.nextUser = 'alice';
    const again = await rpLogin(first.browser, issuer, RP, { extra: { idp_hint: 'uni-a' } });
    expect(again.page.redirects.some((u) => u.startsWith(unis.a.issuer))).toBe(true);
    const { info } = await redeem({ ...again, browser: first.browser });
    expect(info).toMatchObject({ username: 'alice', groups: ['instructors'], admin: true });
    // Within the hour, a session logs in again without asking.
    unis.a.nextUser = undefined;
    const third = await rpLogin(first.browser, issuer, RP, { extra: { idp_hint: 'uni-a' } });
    expect(third.page.redirects.some((u) => u.startsWith(unis.a.issuer))).toBe(false);
    expect((await redeem({ ...third, browser: first.browser })).info.username).toBe('alice');
  });

  it('rotates keys without ending sessions', async () => {
    const first = await login({ uni: 'a', name: 'alice' });
    const { tokens } = await redeem(first);
    const before = (await (await fetch(`${issuer}/jwks`)).json()) as { keys: { kid: string }[] };
    const kid = await app.bridge.rotateKeys();
    const after = (await (await fetch(`${issuer}/jwks`)).json()) as { keys: { kid: string }[] };
    expect(after.keys[0]!.kid).toBe(kid);
    expect(after.keys.map((k) => k.kid)).toEqual(expect.arrayContaining(before.keys.map((k) => k.kid)));
    const refreshed = await client.refreshTokenGrant(first.config, tokens.refresh_token!);
    expect(refreshed.claims()!.sub).toBe(tokens.claims()!.sub);
    unis.a.nextUser = undefined;
    const again = await rpLogin(first.browser, issuer, RP, { extra: { idp_hint: 'uni-a' } });
    const { tokens: newTokens } = await redeem({ ...again, browser: first.browser });
    const header = JSON.parse(Buffer.from(newTokens.id_token!.split('.')[0]!, 'base64url').toString()) as { kid: string };
    expect(header.kid).toBe(kid);
  });
});

describe('key rotation by age', () => {
  it('rotates a signing key older than keyRotationDays at start-up, and sessions and tokens carry on', async () => {
    const first = await login({ uni: 'a', name: 'alice' });
    const { tokens } = await redeem(first);
    const before = (await (await fetch(`${issuer}/jwks`)).json()) as { keys: { kid: string }[] };
    // The active key was made 91 days ago (the default limit is 90).
    await app.db
      .updateTable('signing_key')
      .set({ created_at: new Date(Date.now() - 91 * 86_400_000) })
      .where('kind', '=', 'signing')
      .where('retired_at', 'is', null)
      .execute();
    await restart();
    const after = (await (await fetch(`${issuer}/jwks`)).json()) as { keys: { kid: string }[] };
    expect(after.keys[0]!.kid).not.toBe(before.keys[0]!.kid);
    expect(after.keys.map((k) => k.kid)).toContain(before.keys[0]!.kid);
    // The old key stays published (what it signed still verifies), the refresh token still works,
    // and the browser session logs in without the university.
    expect((await client.refreshTokenGrant(first.config, tokens.refresh_token!)).claims()!.sub).toBe(tokens.claims()!.sub);
    unis.a.nextUser = undefined;
    const again = await rpLogin(first.browser, issuer, RP, { extra: { idp_hint: 'uni-a' } });
    const { tokens: newTokens } = await redeem({ ...again, browser: first.browser });
    const header = JSON.parse(Buffer.from(newTokens.id_token!.split('.')[0]!, 'base64url').toString()) as { kid: string };
    expect(header.kid).toBe(after.keys[0]!.kid);
  });
});

describe('lifetimes and cleanup', () => {
  const secondsLeft = (at: Date | string) => (new Date(at).getTime() - Date.now()) / 1000;
  const near = (actual: number, expected: number) => expect(Math.abs(actual - expected), `${actual} s vs ${expected} s`).toBeLessThan(120);

  it('stores tokens, sessions and grants with the configured lifetimes', async () => {
    const { tokens } = await redeem(await login({ uni: 'a', name: 'arno' }));
    expect(tokens.expires_in).toBe(TTL.accessToken);
    const claims = tokens.claims()!;
    expect(claims.exp - claims.iat).toBe(TTL.idToken);
    const rows = await app.db.selectFrom('oidc_model').select(['model', 'expires_at']).where('account_id', '=', claims.sub).execute();
    const latest = (model: string) =>
      rows.filter((r) => r.model === model).map((r) => secondsLeft(r.expires_at!)).sort((x, y) => y - x)[0] ?? Number.NaN;
    // Every row the login left has an expiry, so the cleanup will remove it in time.
    expect(rows.filter((r) => r.expires_at === null)).toEqual([]);
    near(latest('AccessToken'), TTL.accessToken);
    near(latest('RefreshToken'), TTL.refreshToken);
    near(latest('Session'), TTL.session);
    near(latest('Grant'), TTL.grant);
  });

  it('gives a login in progress, and its pending upstream login, the interaction lifetime', async () => {
    const browser = createTestBrowser({ stopAt: new RegExp(`^${unis.a.issuer}`) });
    const flow = await rpLogin(browser, issuer, RP, { extra: { idp_hint: 'uni-a' }, stopAt: new RegExp(`^${unis.a.issuer}`) });
    const state = new URL(flow.page.url).searchParams.get('state')!;
    const uid = /\/interaction\/([^/?\s]+)/.exec(flow.page.redirects.join(' '))![1]!;
    const pending = await app.db.selectFrom('upstream_login').select('expires_at').where('state', '=', state).executeTakeFirstOrThrow();
    near(secondsLeft(pending.expires_at), TTL.interaction);
    const interaction = await app.db.selectFrom('oidc_model').select('expires_at').where('model', '=', 'Interaction').where('id', '=', uid).executeTakeFirstOrThrow();
    near(secondsLeft(interaction.expires_at!), TTL.interaction);
  });

  it('deletes expired rows on its own, and keeps live ones working', async () => {
    const first = await login({ uni: 'a', name: 'alice' });
    const { tokens } = await redeem(first);
    const past = new Date(Date.now() - 1000);
    const account = tokens.claims()!.sub;
    // An abandoned login, a code membership past its code's expiry, an old login-log entry.
    const abandoned = await rpLogin(createTestBrowser(), issuer, RP, { extra: { idp_hint: 'uni-a' }, stopAt: new RegExp(`^${unis.a.issuer}`) });
    const state = new URL(abandoned.page.url).searchParams.get('state')!;
    await app.db.updateTable('upstream_login').set({ expires_at: past }).where('state', '=', state).execute();
    await app.db.updateTable('oidc_model').set({ expires_at: past }).where('model', '=', 'Interaction').execute();
    await app.db.insertInto('code_membership').values({ account_id: account, code_id: 'old-code', group_name: 'old-workshop', expires_at: past }).execute();
    await app.db.insertInto('login_event').values({ at: new Date(Date.now() - 31 * 86_400_000), hub: 'course', idp: 'uni-a', username: 'ancient', outcome: 'success', reason: null }).execute();
    // No call to cleanup(): the timer (cleanupIntervalSeconds: 1) does it.
    await waitFor(
      async () => {
        const [logins, interactions, memberships, events] = await Promise.all([
          app.db.selectFrom('upstream_login').select('state').where('state', '=', state).execute(),
          app.db.selectFrom('oidc_model').select('id').where('model', '=', 'Interaction').execute(),
          app.db.selectFrom('code_membership').select('code_id').where('code_id', '=', 'old-code').execute(),
          app.db.selectFrom('login_event').select('id').where('username', '=', 'ancient').execute(),
        ]);
        return logins.length + interactions.length + memberships.length + events.length === 0;
      },
      { timeoutMs: 15_000, intervalMs: 200, what: 'the periodic cleanup to delete the expired rows' },
    );
    // What had not expired is untouched: the refresh token and recent log entries still work.
    expect((await client.refreshTokenGrant(first.config, tokens.refresh_token!)).access_token).toBeTruthy();
    expect((await app.db.selectFrom('login_event').select('id').where('outcome', '=', 'success').execute()).length).toBeGreaterThan(0);
  });

  it('never made oidc-provider fall back to a default lifetime (no NOTICE printed)', () => {
    const fromProvider = printed.filter((line) => line.includes('oidc-provider'));
    expect(fromProvider.filter((line) => line.includes('NOTICE'))).toEqual([]);
    // Its engine check on Node 20 is the only thing it may say.
    expect(fromProvider.filter((line) => !line.includes('Unsupported runtime'))).toEqual([]);
  });
});
