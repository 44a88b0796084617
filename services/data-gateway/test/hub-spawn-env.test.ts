/**
 * hub/data_gateway_env.py in a real JupyterHub: the hub runs the data-gateway as a managed
 * service (the `hubside` CLI, built sources) and applies the snippet as its pre-spawn hook. A
 * real single-user server (simple spawner) starts with exactly the variables the gateway's
 * `api/env` gives its user, its own token reaches the gateway (what hubside-creds needs), and
 * a gateway that hangs does not stop the spawn.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, freePort, startHub, waitFor } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const CLI = fileURLToPath(new URL('../../../packages/cli/bin/hubside.js', import.meta.url));
const HUB_DIR = fileURLToPath(new URL('../../../hub/', import.meta.url));
const SERVICE = 'data-gateway';

let hub: RunningHub;
let database: TestDatabase;
let dir: string;
let gatewayUrl: string;
const tokens: Record<string, string> = {};

/** The environment of a user's running single-user server, read from /proc. */
async function serverEnv(user: string): Promise<Record<string, string>> {
  const res = await hub.api<{ servers: Record<string, { state: { pid?: number } }> }>('GET', `/users/${user}`);
  const pid = res.body.servers['']?.state?.pid;
  if (!pid) throw new Error(`no pid for ${user}: ${JSON.stringify(res.body)}`);
  const env: Record<string, string> = {};
  for (const entry of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return env;
}

async function apiEnv(token: string): Promise<{ status: number; env: Record<string, string> }> {
  const res = await fetch(`${gatewayUrl}api/env`, { headers: { authorization: `token ${token}` } });
  return { status: res.status, env: res.ok ? ((await res.json()) as { env: Record<string, string> }).env : {} };
}

function gatewayPid(): number {
  const found = hub.processes().filter((p) => p.command.includes(CLI) && p.command.endsWith(` ${SERVICE}`));
  if (found.length !== 1) throw new Error(`expected one data-gateway process, found ${JSON.stringify(found)}`);
  return found[0]!.pid;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hubside-gw-spawn-'));
  database = await createTestDatabase({ schemas: ['data_gateway'] });
  const port = await freePort();
  gatewayUrl = `http://127.0.0.1:${port}/services/${SERVICE}/`;
  const s3 = { roleArn: 'arn:aws:iam:::role/hub-users' };
  // JSON is YAML. No dataset is asked for credentials here, so the endpoints need not answer.
  const community = {
    [SERVICE]: {
      hubRegion: 'us-east-1',
      datasets: {
        home: { provider: 's3-compatible', bucket: 'hub-data', endpoint: 'http://127.0.0.1:9', prefix: 'home/{username}/', access: 'read-write', envVar: 'SCRATCH_BUCKET', s3 },
        climate: { provider: 's3-compatible', bucket: 'hub-data', endpoint: 'http://127.0.0.1:9', prefix: 'groups/{group}/', groups: ['climate'], s3 },
        era5: { provider: 'gcs', bucket: 'era5-public', region: 'europe-west4', prefix: '' },
        // A community file that names a dangerous variable: the snippet must not apply it.
        sneaky: { provider: 's3-compatible', bucket: 'hub-data', endpoint: 'http://127.0.0.1:9', prefix: 'public/', envVar: 'LD_PRELOAD', s3 },
      },
    },
  };
  await writeFile(join(dir, 'community.yaml'), JSON.stringify(community));
  const glue = { hubDir: HUB_DIR, url: gatewayUrl, service: SERVICE };
  hub = await startHub({
    users: ['alice', 'bob'],
    groups: { climate: ['alice'] },
    // Users need access to the gateway: a server token's scopes are limited to its owner's.
    roles: [{ name: 'gateway-users', scopes: [`access:services!service=${SERVICE}`], users: ['alice', 'bob'] }],
    services: [
      {
        name: SERVICE,
        url: `http://127.0.0.1:${port}`,
        command: [process.execPath, CLI, SERVICE],
        environment: {
          HUBSIDE_CONFIG: join(dir, 'community.yaml'),
          HUBSIDE_DATA_DIR: database.dataDir,
          ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
          HUBSIDE_LOG_LEVEL: 'warn',
        },
      },
    ],
    // What an operator adds to jupyterhub_config.py, as hub/README-data-gateway.md says. Values
    // arrive as JSON, so nothing is pasted into Python source unquoted.
    extraConfig: `
import sys as _sys
_glue = json.loads(${JSON.stringify(JSON.stringify(glue))})
_sys.path.insert(0, _glue['hubDir'])
from data_gateway_env import data_gateway_pre_spawn_hook
c.Spawner.pre_spawn_hook = data_gateway_pre_spawn_hook
c.DataGatewayEnv.url = _glue['url']
c.JupyterHub.load_roles.append({
    'name': 'server',
    'scopes': ['users:activity!user', 'access:servers!user', 'access:services!service=' + _glue['service']],
})
`,
  });
  tokens.alice = await hub.createToken('alice', { note: 'spawn env' });
  tokens.bob = await hub.createToken('bob', { note: 'spawn env' });
}, 120_000);

afterAll(async () => {
  await hub?.stop();
  await database?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('data_gateway_env.py applies api/env at spawn', () => {
  it("alice's server starts with exactly the variables api/env gives alice", async () => {
    const expected = await apiEnv(tokens.alice!);
    expect(expected.status).toBe(200);
    expect(expected.env).toMatchObject({
      SCRATCH_BUCKET: 's3://hub-data/home/alice/',
      HUBSIDE_DATASET_CLIMATE: 's3://hub-data/groups/climate/',
      HUBSIDE_DATASET_ERA5: 'gs://era5-public/',
      HUBSIDE_GATEWAY_URL: gatewayUrl,
      HUBSIDE_CREDS_DATASET: 'home',
      AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9',
      AWS_DEFAULT_REGION: 'us-east-1',
      HUBSIDE_AWS_CONFIG: '[default]\ncredential_process = hubside-creds --dataset home\n',
      LD_PRELOAD: 's3://hub-data/public/',
    });
    await hub.startServer('alice', { timeoutMs: 60_000 });
    try {
      const env = await serverEnv('alice');
      const { LD_PRELOAD, ...applied } = expected.env;
      for (const [name, value] of Object.entries(applied)) expect(env[name], name).toBe(value);
      // The snippet takes only gateway-shaped names: a community file cannot set LD_PRELOAD.
      expect(env.LD_PRELOAD).toBeUndefined();
      expect(LD_PRELOAD).toBeDefined();
      expect(hub.logTail(400)).toMatch(/data-gateway: ignored variables not meant for a server: LD_PRELOAD/);
      // The server's own token reaches the gateway, as hubside-creds will use it.
      const own = await apiEnv(env.JUPYTERHUB_API_TOKEN!);
      expect(own.status).toBe(200);
      expect(own.env.SCRATCH_BUCKET).toBe('s3://hub-data/home/alice/');
    } finally {
      await hub.stopServer('alice');
    }
  }, 120_000);

  it("bob's server gets bob's prefixes and not alice's group dataset", async () => {
    await hub.startServer('bob', { timeoutMs: 60_000 });
    try {
      const env = await serverEnv('bob');
      expect(env.SCRATCH_BUCKET).toBe('s3://hub-data/home/bob/');
      expect(env.HUBSIDE_DATASET_CLIMATE).toBeUndefined();
      expect(env.HUBSIDE_CREDS_DATASET).toBe('home');
    } finally {
      await hub.stopServer('bob');
    }
  }, 120_000);

  it('a gateway that hangs delays the spawn by the 5 s timeout at most, then the server starts without its variables', async () => {
    const pid = gatewayPid();
    process.kill(pid, 'SIGSTOP');
    try {
      const started = Date.now();
      await hub.startServer('alice', { timeoutMs: 60_000 });
      const took = Date.now() - started;
      const env = await serverEnv('alice');
      expect(env.SCRATCH_BUCKET).toBeUndefined();
      expect(env.HUBSIDE_GATEWAY_URL).toBeUndefined();
      expect(env.JUPYTERHUB_API_TOKEN).toBeDefined();
      // The snippet's 5 s request timeout, not the hub's 30 s spawn timeout, ended the wait.
      expect(took).toBeGreaterThanOrEqual(4_500);
      expect(took).toBeLessThan(30_000);
      const log = hub.logTail(400);
      expect(log).toMatch(/data-gateway: .* answered HTTPTimeoutError; starting without its variables/);
      expect(log).not.toContain(env.JUPYTERHUB_API_TOKEN!);
    } finally {
      process.kill(pid, 'SIGCONT');
      await hub.stopServer('alice');
    }
    // Back up: the next spawn has the variables again.
    await waitFor(async () => (await apiEnv(tokens.alice!)).status === 200, { timeoutMs: 10_000, what: 'the gateway answers again' });
    await hub.startServer('alice', { timeoutMs: 60_000 });
    try {
      expect((await serverEnv('alice')).SCRATCH_BUCKET).toBe('s3://hub-data/home/alice/');
    } finally {
      await hub.stopServer('alice');
    }
  }, 120_000);
});
