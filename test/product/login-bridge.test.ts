/**
 * `npm start`'s real login, without the hub's half: where the hub's Python has `oauthenticator`,
 * npm start logs people in through auth-bridge and the demo identity provider. This machine's hub
 * has no oauthenticator, so the test plays the hub's GenericOAuthenticator itself (the same
 * authorize, token and userinfo calls) against the real bridge, configured by the same function
 * npm start uses, and the real demo identity provider.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readYamlFile } from '@hubside/service-kit';
import { createTestBrowser, freePort, waitFor } from '@hubside/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDemoIdp } from '../../scripts/product/demo-idp.mjs';
import { REPO_ROOT, demoCommunity, oidcBridgeSection } from '../../scripts/product/product.mjs';

const HUB_CLIENT_SECRET = randomBytes(24).toString('hex');
let dir: string;
let bridge: ChildProcess;
let bridgeUrl: string;
let idp: { issuer: string; close(): Promise<void> };
let log = '';
const demo = demoCommunity(readYamlFile(join(REPO_ROOT, 'examples', 'community.yaml')));

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hubside-login-bridge-'));
  const [bridgePort, idpPort] = [await freePort(), await freePort()];
  // No proxy here: the bridge's public address is its own.
  bridgeUrl = `http://127.0.0.1:${bridgePort}`;
  const idpSecret = randomBytes(24).toString('hex');
  idp = await startDemoIdp({
    port: idpPort,
    people: demo.people,
    clientId: 'hubside-bridge',
    clientSecret: idpSecret,
    redirectUris: [`${bridgeUrl}/services/auth-bridge/callback/demo`],
  });
  const section = oidcBridgeSection(
    {},
    { hubUrl: bridgeUrl, idpUrl: idp.issuer, idpClientSecret: idpSecret, hubClientSecret: HUB_CLIENT_SECRET, communityName: demo.name },
  );
  const config = join(dir, 'community.yaml');
  await writeFile(config, JSON.stringify({ community: { name: demo.name }, 'auth-bridge': section }));
  bridge = spawn(process.execPath, [join(REPO_ROOT, 'packages/cli/bin/hubside.js'), 'auth-bridge'], {
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      JUPYTERHUB_SERVICE_URL: bridgeUrl,
      HUBSIDE_CONFIG: config,
      HUBSIDE_DATA_DIR: join(dir, 'data'),
      HUBSIDE_COOKIE_SECRET: randomBytes(32).toString('base64url'),
      HUBSIDE_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  bridge.stdout?.on('data', (d) => (log += d));
  bridge.stderr?.on('data', (d) => (log += d));
  await waitFor(
    async () => {
      if (bridge.exitCode !== null) throw new Error(`auth-bridge exited: ${log}`);
      const res = await fetch(`${bridgeUrl}/services/auth-bridge/health`).catch(() => undefined);
      await res?.body?.cancel();
      return res?.ok === true;
    },
    { timeoutMs: 120_000, what: 'auth-bridge to answer' },
  );
}, 150_000);

afterAll(async () => {
  bridge?.kill('SIGTERM');
  if (bridge && bridge.exitCode === null) await new Promise((r) => bridge.once('exit', r));
  await idp?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("npm start's login through auth-bridge and the demo identity provider", () => {
  it('logs a demo person in as the hub would, with their name and groups', async () => {
    const hubCallback = `${bridgeUrl}/hub/oauth_callback`;
    const browser = createTestBrowser({ stopAt: /\/hub\/oauth_callback\?/ });
    const authorize = new URL(`${bridgeUrl}/services/auth-bridge/oidc/auth`);
    authorize.search = new URLSearchParams({
      client_id: 'local-hub',
      redirect_uri: hubCallback,
      response_type: 'code',
      scope: 'openid profile email groups',
      state: 'hub-state-1',
    }).toString();
    // The bridge offers one IdP, so it goes straight there; the IdP's page lists the demo people.
    const page = await browser.get(authorize.href);
    expect(page.url.startsWith(idp.issuer), page.body.slice(0, 500)).toBe(true);
    for (const p of demo.people) expect(page.body).toContain(`value="${p.name}"`);
    const form = /action="([^"]+)"/.exec(page.body)![1]!;
    const back = await browser.post(new URL(form, idp.issuer).href, { person: demo.instructor });
    const redirected = new URL(back.url);
    expect(`${redirected.origin}${redirected.pathname}`).toBe(hubCallback);
    expect(redirected.searchParams.get('state')).toBe('hub-state-1');
    const code = redirected.searchParams.get('code');
    expect(code).toBeTruthy();

    // The hub's server-side half: code for tokens, then the userinfo GenericOAuthenticator reads.
    const token = await fetch(`${bridgeUrl}/services/auth-bridge/oidc/token`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`local-hub:${HUB_CLIENT_SECRET}`).toString('base64')}`,
      },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: code!, redirect_uri: hubCallback }),
    });
    const tokens = (await token.json()) as { access_token?: string };
    expect(token.status, JSON.stringify(tokens)).toBe(200);
    const me = await fetch(`${bridgeUrl}/services/auth-bridge/oidc/me`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    const claims = (await me.json()) as { username?: string; groups?: string[] };
    expect(me.status, JSON.stringify(claims)).toBe(200);
    expect(claims.username).toBe(demo.instructor);
    expect(claims.groups).toEqual(expect.arrayContaining([demo.instructorsGroup]));
  }, 60_000);

  it('refuses anyone who is not a demo person', async () => {
    const browser = createTestBrowser({ stopAt: /\/hub\/oauth_callback\?/ });
    const authorize = `${bridgeUrl}/services/auth-bridge/oidc/auth?${new URLSearchParams({
      client_id: 'local-hub',
      redirect_uri: `${bridgeUrl}/hub/oauth_callback`,
      response_type: 'code',
      scope: 'openid',
      state: 's2',
    })}`;
    const page = await browser.get(authorize);
    const form = /action="([^"]+)"/.exec(page.body)![1]!;
    const back = await browser.post(new URL(form, idp.issuer).href, { person: 'mallory' });
    expect(new URL(back.url).searchParams.get('code')).toBeNull();
  }, 60_000);
});
