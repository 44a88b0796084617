/**
 * charts/examples/jupyterhub.yaml in a real JupyterHub 3: its hub.services entries, its
 * hub.loadRoles and its hub.extraConfig, loading the repository's own hub/ snippets (the same
 * files z2jh mounts with hub.extraFiles, not copies), against the real services. The only
 * stand-in is `z2jh.get_config`, which in z2jh reads the chart values from the hub Secret.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { freePort, startHub } from '@hubside/testing';
import type { HubRole, HubServiceSpec, RunningHub } from '@hubside/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXAMPLES, REPO, SERVICES, readText } from './tools.js';

const z2jh = parse(readText(join(EXAMPLES, 'jupyterhub.yaml'))) as {
  hub: {
    services: Record<string, Record<string, unknown>>;
    loadRoles: Record<string, Omit<HubRole, 'name'>>;
    extraConfig: Record<string, string>;
  };
};
// auth-bridge is registered (its entry and role are checked by the hub) but not started: its
// example community section needs upstream IdPs' secrets.
const STARTED = ['profile-api', 'usage-collector', 'data-gateway'];
const BIN = join(REPO, 'packages/cli/bin/hubside.js');

let hub: RunningHub;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hubside-z2jh-'));
  const values: { hub: { baseUrl: string; services: Record<string, { url: string; apiToken: string }> } } = {
    hub: { baseUrl: '/', services: {} },
  };
  const services: HubServiceSpec[] = [];
  for (const name of SERVICES) {
    const entry = z2jh.hub.services[name]!;
    // z2jh generates each token and keeps it in the hub Secret; here the test makes it.
    const apiToken = randomBytes(24).toString('hex');
    const url = `http://127.0.0.1:${await freePort()}`;
    values.hub.services[name] = { url, apiToken };
    const { url: _inCluster, ...rest } = entry;
    services.push({
      ...(rest as Partial<HubServiceSpec>),
      name,
      url,
      apiToken,
      ...(STARTED.includes(name)
        ? {
            command: [process.execPath, BIN, name],
            environment: {
              PATH: process.env.PATH ?? '/usr/bin:/bin',
              HUBSIDE_CONFIG: join(REPO, 'examples/community.yaml'),
              HUBSIDE_DATA_DIR: join(dir, 'data'),
              HUBSIDE_LOG_LEVEL: 'warn',
            },
          }
        : {}),
    });
  }
  // z2jh's get_config, reading the values this test would have given the chart.
  const shim = join(dir, 'z2jh');
  writeFileSync(join(dir, 'values.json'), JSON.stringify(values));
  mkdirSync(shim);
  writeFileSync(
    join(shim, 'z2jh.py'),
    [
      'import json',
      `with open(${JSON.stringify(join(dir, 'values.json'))}, encoding="utf-8") as _f:`,
      '    _values = json.load(_f)',
      'def get_config(key, default=None):',
      '    value = _values',
      '    for level in key.split("."):',
      '        if not isinstance(value, dict) or level not in value:',
      '            return default',
      '        value = value[level]',
      '    return value',
      '',
    ].join('\n'),
  );
  const extraConfig = [
    'import os, sys',
    `sys.path.insert(0, ${JSON.stringify(shim)})`,
    // Where z2jh's hub.extraFiles would mount them; here, the repository's hub/ folder itself.
    `os.environ["HUBSIDE_SNIPPETS_DIR"] = ${JSON.stringify(join(REPO, 'hub'))}`,
    ...Object.values(z2jh.hub.extraConfig),
  ].join('\n');
  hub = await startHub({
    services,
    roles: Object.entries(z2jh.hub.loadRoles).map(([name, role]) => ({ name, ...role })),
    users: ['alice'],
    extraConfig,
    // Three services open their embedded databases before the hub is ready; slow on a busy machine.
    startTimeoutMs: 120_000,
  });
}, 150_000);

afterAll(async () => {
  await hub?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the z2jh example values in a real JupyterHub', () => {
  it("registers every service with the example's roles", async () => {
    for (const name of SERVICES) {
      const res = await hub.api<{ name: string; roles: string[] }>('GET', `/services/${encodeURIComponent(name)}`);
      expect(res.status).toBe(200);
      expect(res.body.roles).toContain(`hubside-${name}`);
    }
  });

  it('runs the hub/ snippets at spawn: profile overrides from profile-api, variables from data-gateway', async () => {
    await hub.startServer('alice', { timeoutMs: 45_000 });
    const user = await hub.api<{ servers: Record<string, { state: { pid?: number } }> }>('GET', '/users/alice');
    const pid = user.body.servers['']?.state.pid;
    expect(pid, 'the spawner state names the server process').toBeTypeOf('number');
    const environ = new Map(
      readFileSync(`/proc/${pid}/environ`, 'utf8')
        .split('\0')
        .filter(Boolean)
        .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as const),
    );
    // profile_list.py: the default profile's default image choice, resolved by profile-api.
    expect(environ.get('HUBSIDE_IMAGE')).toBe('quay.io/jupyter/scipy-notebook:2024-10-07');
    // data_gateway_env.py: the gateway answered the server's own token (the example's server role).
    expect(environ.get('HUBSIDE_GATEWAY_URL')).toMatch(/\/services\/data-gateway\/$/);
    await hub.stopServer('alice');
  });

  it('refuses a profile the user may not have, with profile-api\'s message (the server-side check)', async () => {
    // The example community's `gpu` profile is for the gpu-users group; alice is not in it.
    const res = await hub.api<{ message?: string }>('POST', '/users/alice/server', { profile: 'gpu' });
    expect(res.status).toBe(403);
    expect(res.body.message).toMatch(/profile "gpu" is not available/);
    const user = await hub.api<{ servers: Record<string, unknown> }>('GET', '/users/alice');
    expect(user.body.servers['']).toBeUndefined();
  });
});
