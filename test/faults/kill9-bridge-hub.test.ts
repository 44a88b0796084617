/**
 * `kill -9` of the auth-bridge (started by the `hubside` CLI) behind a REAL JupyterHub that logs
 * users in through it (the GenericOAuthenticator-like fixture, auth state on, refreshed every
 * second), with oidc-provider universities upstream. After the restart on the same database the
 * hub refreshes a user who logged in before the kill with the refresh token it kept, and a login
 * that was waiting at the bridge's chooser goes on (or ends on a clear page and is retried).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase, freePort, startHub, waitFor } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_ID, bridgeAuthenticatorConfig, loginVia } from '../../services/auth-bridge/test/fixtures/hub.js';
import { PREFIX, startUniversities } from '../../services/auth-bridge/test/fixtures/setup.js';
import type { Universities } from '../../services/auth-bridge/test/fixtures/setup.js';
import { cliServices } from './cli-service.js';

const clientSecret = randomBytes(24).toString('hex');
const serviceToken = randomBytes(32).toString('hex');

let database: TestDatabase;
let hub: RunningHub;
let unis: Universities;
let dir: string;
let bridgePort: number;
const services = cliServices();

beforeAll(async () => {
  database = await createTestDatabase({ schemas: ['auth_bridge'] });
  bridgePort = await freePort();
  // The hub keeps auth state (the bridge's refresh token) encrypted with this key.
  process.env.JUPYTERHUB_CRYPT_KEY = randomBytes(32).toString('hex');
  hub = await startHub({
    admins: ['root-admin'],
    users: ['root-admin'],
    services: [{ name: 'auth-bridge', url: `http://127.0.0.1:${bridgePort}`, apiToken: serviceToken }],
    extraConfig: bridgeAuthenticatorConfig({ clientSecret }),
  });
  unis = await startUniversities(hub.url);
  // Disjoint domains, so the two universities can never yield the same username.
  const upstream = (uni: 'a' | 'b', username: Record<string, unknown>, domains: string[]) => ({
    displayName: `University ${uni.toUpperCase()}`,
    issuer: unis[uni].issuer,
    clientId: unis[uni].clientId,
    clientSecretEnv: `UNI_${uni.toUpperCase()}_SECRET`,
    scopes: ['openid', 'email', 'profile', 'groups'],
    username,
    domains,
  });
  const config = {
    publicUrl: hub.url,
    upstreams: {
      'uni-a': upstream('a', { claim: 'email', stripDomain: true }, ['uni-a.edu', '*.uni-a.edu']),
      'uni-b': upstream('b', { claim: 'email' }, ['uni-b.edu']),
    },
    hubs: {
      community: {
        displayName: 'Community Hub',
        clientId: CLIENT_ID,
        clientSecretEnv: 'COMMUNITY_HUB_SECRET',
        redirectUris: [`${hub.url}/hub/oauth_callback`],
        loginUrl: `${hub.url}/hub/oauth_login`,
        requirePkce: true,
      },
    },
  };
  dir = await mkdtemp(join(tmpdir(), 'hubside-kill9-bridge-hub-'));
  await writeFile(join(dir, 'community.yaml'), JSON.stringify({ community: { name: 'kill9-bridge-hub' }, 'auth-bridge': config }));
}, 120_000);

afterAll(async () => {
  await services.killAll();
  await hub?.stop();
  await unis?.close();
  await database?.drop();
  delete process.env.JUPYTERHUB_CRYPT_KEY;
  if (dir) await rm(dir, { recursive: true, force: true });
});

const startCli = () =>
  services.start('auth-bridge', bridgePort, {
    JUPYTERHUB_API_URL: hub.hubApiUrl,
    JUPYTERHUB_API_TOKEN: serviceToken,
    HUBSIDE_CONFIG: join(dir, 'community.yaml'),
    HUBSIDE_DATA_DIR: database.dataDir,
    HUBSIDE_LOG_LEVEL: 'warn',
    HUBSIDE_RATE_LIMIT_USER: '0',
    UNI_A_SECRET: unis.a.clientSecret,
    UNI_B_SECRET: unis.b.clientSecret,
    COMMUNITY_HUB_SECRET: clientSecret,
    ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
  });

const refreshesOf = (user: string) => hub.logTail(100_000).split(`bridge refresh_token grant ok for ${user}`).length - 1;

describe('kill -9 of the auth-bridge behind a real JupyterHub', () => {
  it('lets the hub refresh a user logged in before the kill, and a login waiting at the chooser finish', async () => {
    let child = await startCli();
    unis.a.nextUser = 'alice';
    const alice = hub.browser();
    const home = await loginVia(alice, 'uni-a');
    expect(home.status, home.body.slice(0, 300)).toBe(200);
    expect(new URL(home.url).pathname).toBe('/hub/home');
    const aliceToken = await hub.createToken('alice');

    // bob's login is waiting at the bridge's chooser when the bridge dies.
    const bob = hub.browser();
    const chooser = await bob.get('/hub/oauth_login?next=%2Fhub%2Fhome');
    expect(chooser.url).toContain(`${PREFIX}interaction/`);
    const link = /href="([^"]*\/login\/uni-b)"/.exec(chooser.body)?.[1];
    expect(link, 'the chooser offers uni-b').toBeDefined();

    await services.kill9(child);
    child = await startCli();

    // The hub refreshes alice (auth_refresh_age = 1 s) through the restarted bridge, with the
    // refresh token it got before the kill, and she stays logged in.
    const before = refreshesOf('alice');
    await waitFor(
      async () => {
        const me = await hub.api<{ name: string }>('GET', '/user', undefined, aliceToken);
        return me.status === 200 && me.body.name === 'alice' && refreshesOf('alice') > before;
      },
      { timeoutMs: 20_000, intervalMs: 300, what: 'the hub to refresh alice through the restarted bridge' },
    );
    const again = await alice.get('/hub/home');
    expect(again.status).toBe(200);
    expect(new URL(again.url).pathname).toBe('/hub/home');

    // bob picks his university on the chooser the dead bridge served.
    unis.b.nextUser = 'bob';
    const picked = await bob.get(new URL(link!.replaceAll('&amp;', '&'), chooser.url).href);
    let outcome = `${picked.status} at ${new URL(picked.url).pathname}`;
    if (new URL(picked.url).pathname !== '/hub/home') {
      // The login could not go on: a clear page, then a fresh attempt works.
      expect(picked.status, picked.body.slice(0, 300)).toBeGreaterThanOrEqual(400);
      expect(picked.status, picked.body.slice(0, 300)).toBeLessThan(500);
      expect(picked.body).toMatch(/log in again/);
      const retry = await loginVia(bob, 'uni-b');
      expect(retry.status, retry.body.slice(0, 300)).toBe(200);
      outcome += `, retried: ${retry.status} at ${new URL(retry.url).pathname}`;
    }
    expect((await hub.api('GET', `/users/${encodeURIComponent('bob@uni-b.edu')}`)).status).toBe(200);
    console.info(`kill9-bridge-hub: bob's login from the chooser across the kill: ${outcome}`);

    const logs = services.logs.join('');
    expect([clientSecret, serviceToken, unis.a.clientSecret, unis.b.clientSecret, aliceToken].filter((s) => logs.includes(s))).toEqual([]);
    await services.kill9(child);
  }, 120_000);
});
