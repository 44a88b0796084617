/**
 * The data-gateway's STS backend is slow (accepts, never answers) or down (refuses): credentials
 * requests answer 502 with a message that names the backend, within the configured timeout, and
 * timed-out calls do not leave sockets piling up on the backend.
 */
import { createTestDatabase, freePort } from '@hubside/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leakedLines, startRecorder, startStack } from '../security/stack.js';
import type { Recorder, Stack } from '../security/stack.js';

const TIMEOUT_S = 1;
let stack: Stack;
let hanging: Recorder;
let downPort: number;

beforeAll(async () => {
  hanging = await startRecorder(() => 'hang');
  downPort = await freePort();
  stack = await startStack({ stsUrl: hanging.url, gatewayTimeoutSeconds: TIMEOUT_S });
}, 180_000);

afterAll(async () => {
  await stack?.close();
  await hanging?.close();
});

const credentials = (token: string, dataset = 'home') =>
  stack.apps['data-gateway'].inject({
    method: 'POST',
    url: '/services/data-gateway/api/credentials',
    headers: { authorization: `token ${token}` },
    payload: { dataset, access: 'read' },
  });

describe('an STS that accepts connections and never answers', () => {
  it('answers 502 naming the backend within the timeout, and closes the sockets it gave up on', async () => {
    const users = [stack.tokens.alice, stack.tokens.bob, stack.tokens.root];
    for (let round = 0; round < 5; round += 1) {
      const started = Date.now();
      const answers = await Promise.all(users.map((t) => credentials(t)));
      const elapsed = Date.now() - started;
      for (const res of answers) {
        expect(res.statusCode, res.body.slice(0, 300)).toBe(502);
        expect(res.json()).toMatchObject({ statusCode: 502, error: 'Bad Gateway', code: 'HUBSIDE_GATEWAY_ERR_BACKEND' });
        expect(res.json<{ message: string }>().message).toMatch(/storage backend .* failed .*did not answer within/);
      }
      // The configured timeout, plus scheduling slack on a busy machine.
      expect(elapsed).toBeLessThan(TIMEOUT_S * 1000 + 2500);
    }
    expect(hanging.requests.length, 'the STS was really called').toBeGreaterThanOrEqual(3);
    // 15 calls gave up; had they kept their sockets, 15 would be open now.
    const deadline = Date.now() + 3000;
    while (hanging.connections() > 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(hanging.connections(), 'sockets still open to the hanging STS').toBeLessThanOrEqual(3);
  });
});

describe('an STS that is down', () => {
  it('answers 502 at once, not a hang and not a 500', async () => {
    const down = await startStackGatewayOnly(`http://127.0.0.1:${downPort}`);
    try {
      const started = Date.now();
      const res = await down.inject({
        method: 'POST',
        url: '/services/data-gateway/api/credentials',
        headers: { authorization: `token ${stack.tokens.alice}` },
        payload: { dataset: 'home', access: 'read' },
      });
      expect(res.statusCode, res.body.slice(0, 300)).toBe(502);
      expect(res.json()).toMatchObject({ code: 'HUBSIDE_GATEWAY_ERR_BACKEND' });
      expect(Date.now() - started).toBeLessThan(TIMEOUT_S * 1000 + 2500);
    } finally {
      await down.close();
    }
  });
});

/** A second gateway on the same hub, with its own database, whose datasets point at a closed port. */
async function startStackGatewayOnly(stsUrl: string) {
  const database = await createTestDatabase({ schemas: ['data_gateway'] });
  const { resolveSettings } = await import('@hubside/service-kit');
  const { buildApp, configSchema } = await import('../../services/data-gateway/src/app.js');
  const settings = resolveSettings('data-gateway', {
    JUPYTERHUB_API_URL: stack.hub.hubApiUrl,
    JUPYTERHUB_API_TOKEN: stack.hub.adminToken,
    HUBSIDE_DATA_DIR: database.dataDir,
    ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
  });
  const config = configSchema.parse({
    backendTimeoutSeconds: TIMEOUT_S,
    datasets: {
      home: {
        provider: 's3-compatible',
        bucket: 'hubside-data',
        endpoint: stsUrl,
        prefix: 'home/{username}/',
        s3: { roleArn: 'arn:aws:iam::000000000000:role/hubside', accessKeyIdEnv: 'GW_KEY', secretAccessKeyEnv: 'GW_SECRET' },
      },
    },
  });
  const app = await buildApp({ settings, config, logger: false, defaultMetrics: false }, { env: { GW_KEY: 'AKIDDOWN0000', GW_SECRET: 'down-secret-000000000000' } });
  app.addHook('onClose', async () => database.drop());
  return app;
}

describe('the logs of this run', () => {
  it('contain none of the tokens, cookies and secrets it used', () => {
    expect(stack.logLines.length, 'the services logged something').toBeGreaterThan(0);
    expect(leakedLines(stack)).toEqual([]);
  });
});
