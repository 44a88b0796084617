/** The `hubside` command as an operator runs it: real processes, real hub, real databases. */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, startHub, waitFor } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../bin/hubside.js', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../../../examples/community.yaml', import.meta.url));
const ISSUE_14 = fileURLToPath(new URL('./fixtures/issue-14-community.yaml', import.meta.url));
const SERVICES = ['auth-bridge', 'profile-api', 'usage-collector', 'data-gateway'];

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, HUBSIDE_LOG_LEVEL: 'warn' };
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

function run(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`hubside ${args.join(' ')} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function yamlFile(text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'hubside-cli-')), 'community.yaml');
  writeFileSync(file, text);
  return file;
}

describe('hubside check-config', () => {
  it('accepts the example community', async () => {
    const r = await run(['check-config', EXAMPLE], cleanEnv());
    expect(r.stdout).toContain('OK');
    // Every group it names is declared, so every reference was checked.
    expect(r.stdout).not.toContain('note:');
    expect(r.code).toBe(0);
  });

  it('refuses a file whose sections disagree, naming each reference (issue 14: it said OK)', async () => {
    const r = await run(['check-config', ISSUE_14], cleanEnv());
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('5 problems');
    expect(r.stderr).toMatch(/usage-collector\.currency: "EUR" is not the community's currency \(community\.currency is "USD", the default\)/);
    for (const field of ['rateCards[0].profileHour.small', 'rateCards[0].profileHour.large', 'profiles.small', 'profiles.large']) {
      const slug = field.split('.').at(-1)!;
      expect(r.stderr).toContain(`  - usage-collector.${field}: no profile "${slug}" in profile-api.profiles (there are: datascience, gpu)\n`);
    }
    expect(r.stdout).not.toContain('OK');
  });

  it('reports a YAML syntax error once, with its line and column', async () => {
    const r = await run(['check-config', yamlFile('community:\n  name: x\nprofile-api:\n  profiles: [a, b\nusage-collector: {}\n')], cleanEnv());
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/: 1 problem\n  - \(yaml\) line 5, column 1: [^\n]+\n$/);
  });

  it('prints every problem with its field, and exits non-zero', async () => {
    const file = yamlFile('community:\n  name: ""\nprofile-api:\n  colour: blue\ndata-gateway:\n  nope: 1\n');
    const r = await run(['check-config', file], cleanEnv());
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('3 problems');
    expect(r.stderr).toMatch(/community\.name: must not be empty/);
    expect(r.stderr).toMatch(/profile-api: .*colour/);
    expect(r.stderr).toMatch(/data-gateway: .*nope/);
  });

  it('names an unknown section', async () => {
    const r = await run(['check-config', yamlFile('profile_api: {}\n')], cleanEnv());
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/profile_api/);
  });

  it('needs exactly one file', async () => {
    expect((await run(['check-config'], cleanEnv())).code).toBe(64);
  });
});

describe('hubside <service> refuses bad configuration before it starts', () => {
  it('names the field and exits non-zero', async () => {
    const r = await run(['profile-api'], cleanEnv({ HUBSIDE_CONFIG: yamlFile('profile-api: {colour: 1}\n'), HUBSIDE_PORT: '0' }));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/profile-api: .*colour/);
  });

  it('names a bad environment variable', async () => {
    const r = await run(['usage-collector'], cleanEnv({ JUPYTERHUB_API_URL: 'not a url', JUPYTERHUB_API_TOKEN: 'abcdefgh12345678' }));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/JUPYTERHUB_API_URL: must be an http\(s\) URL/);
  });

  it('explains unknown commands', async () => {
    const r = await run(['serve-everything'], cleanEnv());
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/Unknown command "serve-everything"/);
    expect(r.stderr).toMatch(/check-config FILE/);
  });
});

describe('hubside migrate', () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database?.drop();
  });

  it('migrates every service in its own schema, once', { timeout: 120_000 }, async () => {
    const env = cleanEnv({ HUBSIDE_DATA_DIR: database.dataDir, DATABASE_URL: database.databaseUrl });
    const first = await run(['migrate'], env);
    expect(first.code).toBe(0);
    // Each service reports its own migrations (or none), on the engine in use.
    for (const name of SERVICES) {
      expect(first.stdout).toMatch(new RegExp(`^${name}: (applied .+|up to date) \\(${database.kind}\\)$`, 'm'));
    }
    // A second run has nothing left to do.
    const again = await run(['migrate'], env);
    expect(again.code).toBe(0);
    for (const name of SERVICES) expect(again.stdout).toMatch(new RegExp(`^${name}: up to date \\(${database.kind}\\)$`, 'm'));
  });

  it('refuses unknown service names', async () => {
    const r = await run(['migrate', 'profile-api', 'billing'], cleanEnv({ HUBSIDE_DATA_DIR: database.dataDir }));
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/Unknown service: billing/);
  });
});

describe('hubside start', () => {
  let hub: RunningHub;
  let database: TestDatabase;
  let child: ChildProcess | undefined;
  const serviceToken = 'hubside-start-test-token-0123456789';

  beforeAll(async () => {
    database = await createTestDatabase({ schemas: SERVICES.map((s) => s.replaceAll('-', '_')) });
    hub = await startHub({
      users: ['alice'],
      services: [{ name: 'hubside', apiToken: serviceToken }],
      roles: [{ name: 'everything-for-alice', scopes: ['access:services'], users: ['alice'] }],
    });
  }, 60_000);

  afterAll(async () => {
    child?.kill('SIGKILL');
    await hub?.stop();
    await database?.drop();
  });

  it('starts all four, prints their URLs, serves the hub\'s users, and stops cleanly on SIGTERM', { timeout: 60_000 }, async () => {
    const started = Date.now();
    child = spawn(process.execPath, [BIN, 'start', '--config', EXAMPLE], {
      env: cleanEnv({
        HUBSIDE_PORT_BASE: '0',
        HUBSIDE_DATA_DIR: database.dataDir,
        DATABASE_URL: database.databaseUrl,
        JUPYTERHUB_API_URL: hub.hubApiUrl,
        JUPYTERHUB_API_TOKEN: serviceToken,
      }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve) => child!.on('exit', (code) => resolve(code)));

    const urls = await waitFor(
      async () => {
        const found = SERVICES.map((name) => new RegExp(`${name}\\s+(http://\\S+/services/${name}/)`).exec(stdout)?.[1]);
        return found.every(Boolean) ? (found as string[]) : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100, what: `hubside start to print four URLs (stderr: ${stderr.slice(0, 500)})` },
    );
    for (const url of urls) {
      const health = await fetch(`${url}health`);
      expect(health.status).toBe(200);
    }
    // The issue's promise: four health endpoints within 30 s of a start.
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(stdout).toContain(`using the hub at ${hub.hubApiUrl}`);

    const token = await hub.createToken('alice');
    for (const url of urls) {
      const whoami = await fetch(`${url}api/whoami`, { headers: { authorization: `token ${token}` } });
      expect(whoami.status).toBe(200);
      expect(await whoami.json()).toMatchObject({ name: 'alice' });
    }

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    child = undefined;
    await expect(fetch(`${urls[0]}health`)).rejects.toThrow();
  });
});

describe('tracing from the standard OTEL_* environment', () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase({ schemas: ['profile_api'] });
  });
  afterAll(async () => {
    await database?.drop();
  });

  it('exports a span per request, with credentials redacted from the URL', { timeout: 90_000 }, async () => {
    const child = spawn(process.execPath, [BIN, 'profile-api'], {
      env: cleanEnv({
        OTEL_TRACES_EXPORTER: 'console',
        HUBSIDE_PORT: '0',
        HUBSIDE_DATA_DIR: database.dataDir,
        DATABASE_URL: database.databaseUrl,
        HUBSIDE_LOG_LEVEL: 'info',
      }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const url = await waitFor(async () => /"url":"(http:\/\/[^"]+\/services\/profile-api\/)"/.exec(stdout)?.[1], {
        timeoutMs: 60_000,
        intervalMs: 100,
        what: 'profile-api to log its URL',
      });
      const res = await fetch(`${url}api/whoami?token=secret-in-the-url&page=2`);
      expect(res.status).toBe(503); // no hub configured
      await waitFor(async () => stdout.includes('@opentelemetry/instrumentation-http'), { timeoutMs: 10_000, intervalMs: 50, what: 'a span on stdout' });
      expect(stdout).toContain('/services/profile-api/api/whoami?token=[redacted]&page=2');
      expect(stdout).not.toContain('secret-in-the-url');
    } finally {
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  });
});
