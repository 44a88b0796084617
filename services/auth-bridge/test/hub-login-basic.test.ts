/**
 * The same real JupyterHub chain as hub-login.test.ts, with the authenticator configured for
 * HTTP Basic client authentication (GenericOAuthenticator's `basic_auth = True`): the code and
 * refresh grants both carry the credentials in the header only.
 */
import { waitFor } from '@hubside/testing';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loginVia, startBridgedHub } from './fixtures/hub.js';
import type { BridgedHub } from './fixtures/hub.js';

let env: BridgedHub;

beforeAll(async () => {
  env = await startBridgedHub({ basicAuth: true });
}, 120_000);

afterAll(async () => {
  await env?.close();
});

it('logs in and refreshes with client_secret_basic', async () => {
  const { hub, unis } = env;
  unis.a.nextUser = 'arno';
  const page = await loginVia(hub.browser(), 'uni-a');
  expect(new URL(page.url).pathname).toBe('/hub/home');
  const user = await hub.api<{ name: string; admin: boolean; groups: string[] }>('GET', '/users/arno');
  // uni-a strips the domain (arno@lab.uni-a.edu, allowed by *.uni-a.edu); "students" maps through.
  expect(user.body).toMatchObject({ name: 'arno', admin: false, groups: ['students'] });
  expect(env.tokenRequests).toEqual([{ grantType: 'authorization_code', basic: true, secretInBody: false, data: 'None' }]);

  const token = await hub.createToken('arno');
  await waitFor(
    async () => {
      await hub.api('GET', '/user', undefined, token);
      return env.tokenRequests.some((r) => r.grantType === 'refresh_token');
    },
    { timeoutMs: 20_000, intervalMs: 300, what: 'the hub to refresh arno with the refresh_token grant' },
  );
  expect(env.tokenRequests.filter((r) => r.grantType === 'refresh_token').every((r) => r.basic && !r.secretInBody)).toBe(true);
});
