/** Restarting the bridge loses no session or grant, on Postgres and on PGlite. */
import { createTestBrowser, createTestDatabase, freePort } from '@hubside/testing';
import * as client from 'openid-client';
import { describe, expect, it } from 'vitest';
import { migrations } from '../src/migrations/index.js';
import { PREFIX, bridgeConfig, rpLogin, secretsEnv, startBridge, startUniversities } from './fixtures/setup.js';

const RP = { clientId: 'hub', secret: 'hub-secret-0123456789abcdef', redirectUri: 'http://rp.invalid/hub/oauth_callback' };

describe.each(['pglite', 'postgres'] as const)('restart on %s', (engine) => {
  it('keeps the browser session, the refresh token, and cleans expired rows', async () => {
    const database = await createTestDatabase({ engine, schemas: ['auth_bridge'] });
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const unis = await startUniversities(base);
    const config = bridgeConfig(unis, { hub: { clientId: RP.clientId, clientSecret: RP.secret, redirectUris: [RP.redirectUri], idps: ['uni-a'] } }, base);
    const start = () => startBridge({ port, config, dataDir: database.dataDir, databaseUrl: database.databaseUrl, env: secretsEnv(unis) });
    let app = await start();
    try {
      const issuer = `${base}${PREFIX}oidc`;
      const browser = createTestBrowser();
      unis.a.nextUser = 'alice';
      const flow = await rpLogin(browser, issuer, RP);
      const tokens = await client.authorizationCodeGrant(flow.config, new URL(flow.page.url), { pkceCodeVerifier: flow.verifier, expectedState: flow.state });
      await app.close();
      app = await start();
      const refreshed = await client.refreshTokenGrant(flow.config, tokens.refresh_token!);
      const info = await client.fetchUserInfo(flow.config, refreshed.access_token, tokens.claims()!.sub);
      expect(info.username).toBe('alice');
      // The old access token is still good for userinfo too.
      expect((await client.fetchUserInfo(flow.config, tokens.access_token, tokens.claims()!.sub)).username).toBe('alice');
      // The session cookie still logs in, without going back to the university.
      const again = await rpLogin(browser, issuer, RP);
      expect(again.page.url.startsWith(RP.redirectUri)).toBe(true);
      expect(again.page.redirects.some((u) => u.startsWith(unis.a.issuer))).toBe(false);

      await app.db.updateTable('oidc_model').set({ expires_at: new Date(Date.now() - 1000) }).where('model', '=', 'AuthorizationCode').execute();
      expect(await app.bridge.cleanup()).toBeGreaterThan(0);
      const left = await app.db.selectFrom('oidc_model').select('id').where('model', '=', 'AuthorizationCode').execute();
      expect(left).toEqual([]);

      // An account stored before codes' groups were kept apart holds its code's group among its
      // own, where a revoke could not reach it: the migration takes it out.
      const id = tokens.claims()!.sub;
      await app.db.updateTable('account').set({ groups: JSON.stringify(['staff', 'workshop']) }).where('id', '=', id).execute();
      await app.db.insertInto('code_membership').values({ account_id: id, code_id: 'legacy', group_name: 'workshop', expires_at: new Date(Date.now() + 3600_000) }).execute();
      await migrations['2026-12-03T18-00-00_code-groups-apart']!.up(app.db);
      const row = await app.db.selectFrom('account').select('groups').where('id', '=', id).executeTakeFirstOrThrow();
      expect(row.groups).toEqual(['staff']);
    } finally {
      await app.close();
      await unis.close();
      await database.drop();
    }
  }, 60_000);
});
