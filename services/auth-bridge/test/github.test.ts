/** An OAuth2-only provider (GitHub-style): configured endpoints, userinfo mapping, org:team groups. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createTestBrowser, createTestDatabase, freePort } from '@hubside/testing';
import * as client from 'openid-client';
import { expect, it } from 'vitest';
import { configSchema } from '../src/app.js';
import { PREFIX, rpLogin, startBridge } from './fixtures/setup.js';

const RP = { clientId: 'hub', secret: 'hub-secret-0123456789abcdef', redirectUri: 'http://rp.invalid/hub/oauth_callback' };

it('logs in through a GitHub-style provider with a prefixed login and team groups', async () => {
  const seen: { body?: string; auth?: string | undefined } = {};
  // A small OAuth2 server that answers the way GitHub does.
  const gh = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/login/oauth/authorize') {
      const back = new URL(url.searchParams.get('redirect_uri')!);
      back.searchParams.set('code', 'gh-code-1');
      back.searchParams.set('state', url.searchParams.get('state')!);
      res.writeHead(302, { location: back.href }).end();
    } else if (url.pathname === '/login/oauth/access_token') {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.body = body;
        const ok = new URLSearchParams(body).get('code') === 'gh-code-1' && new URLSearchParams(body).get('code_verifier');
        res.writeHead(ok ? 200 : 400, { 'content-type': 'application/json' });
        res.end(JSON.stringify(ok ? { access_token: 'gho_token', token_type: 'bearer', scope: 'read:user' } : { error: 'bad_verification_code' }));
      });
    } else if (url.pathname === '/user') {
      seen.auth = req.headers.authorization;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: 583231, login: 'OctoCat', email: null, name: 'The Octocat' }));
    } else if (url.pathname === '/user/teams') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify([{ slug: 'course-staff', organization: { login: 'example-org' } }, { slug: 'other', organization: { login: 'elsewhere' } }]),
      );
    } else res.writeHead(404).end();
  });
  await new Promise<void>((r) => gh.listen(0, '127.0.0.1', r));
  const ghBase = `http://127.0.0.1:${(gh.address() as AddressInfo).port}`;
  const database = await createTestDatabase({ schemas: ['auth_bridge'] });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const config = configSchema.parse({
    publicUrl: base,
    upstreams: {
      github: {
        type: 'oauth2',
        displayName: 'GitHub',
        authorizationUrl: `${ghBase}/login/oauth/authorize`,
        tokenUrl: `${ghBase}/login/oauth/access_token`,
        userinfoUrl: `${ghBase}/user`,
        teamsUrl: `${ghBase}/user/teams`,
        clientId: 'gh-client',
        clientSecret: 'gh-secret',
        username: { claim: 'login', stripDomain: true, prefix: 'gh-' },
        groupClaims: [],
      },
    },
    hubs: { h: { clientId: RP.clientId, clientSecret: RP.secret, redirectUris: [RP.redirectUri], groupMap: { 'github:example-org:course-staff': 'instructors' } } },
  });
  const app = await startBridge({ port, config, dataDir: database.dataDir, databaseUrl: database.databaseUrl });
  try {
    const flow = await rpLogin(createTestBrowser(), `${base}${PREFIX}oidc`, RP);
    expect(flow.page.url.startsWith(RP.redirectUri)).toBe(true);
    const tokens = await client.authorizationCodeGrant(flow.config, new URL(flow.page.url), { pkceCodeVerifier: flow.verifier, expectedState: flow.state });
    const info = await client.fetchUserInfo(flow.config, tokens.access_token, tokens.claims()!.sub);
    expect(info).toMatchObject({ username: 'gh-octocat', groups: ['instructors'], name: 'The Octocat', idp: 'github' });
    // PKCE went upstream too, and userinfo was read with the access token.
    expect(new URLSearchParams(seen.body).get('code_verifier')).toBeTruthy();
    expect(seen.auth).toBe('Bearer gho_token');
  } finally {
    await app.close();
    gh.closeAllConnections();
    await new Promise<void>((r) => gh.close(() => r()));
    await database.drop();
  }
}, 60_000);
