/**
 * docker/Dockerfile without a Docker engine: its stages name files that exist, and the
 * production stage's recipe (manifests + prebuilt dist/, `npm ci --omit=dev`, the entrypoint)
 * starts a service that answers {prefix}health.
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { waitFor } from '@hubside/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO, readText } from './tools.js';

const run = promisify(execFile);
const DOCKERFILE = readText(join(REPO, 'docker/Dockerfile'));
const WORKSPACES = (JSON.parse(readText(join(REPO, 'package.json'))) as { workspaces: string[] }).workspaces;

interface Instruction {
  stage: string;
  op: string;
  args: string[];
}

/** The Dockerfile's instructions, with line continuations joined and comments dropped. */
function instructions(): Instruction[] {
  const out: Instruction[] = [];
  let stage = '';
  const logical = DOCKERFILE.replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  for (const line of logical) {
    const [op, ...args] = line.split(/\s+/);
    const upper = op!.toUpperCase();
    if (upper === 'FROM') {
      const as = args.findIndex((a) => a.toUpperCase() === 'AS');
      stage = as >= 0 ? args[as + 1]! : 'final';
    }
    out.push({ stage, op: upper, args });
  }
  return out;
}

/** .dockerignore patterns as regular expressions (the subset of the syntax it uses). */
function ignored(path: string): boolean {
  const patterns = readText(join(REPO, '.dockerignore'))
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  return patterns.some((p) => {
    const re = p
      .replace(/[.+^${}()|[\]]/g, '\\$&')
      .replace(/\*\*\//g, '\0')
      .replace(/\*/g, '[^/]*')
      .replace(/\0/g, '(?:.*/)?');
    return new RegExp(`^${re}(?:/.*)?$`).test(path.replace(/\/$/, ''));
  });
}

describe('docker/Dockerfile', () => {
  const all = instructions();
  const copies = all.filter((i) => i.op === 'COPY');

  it('builds on node:24-slim in several stages and runs as a non-root user', () => {
    expect(DOCKERFILE).toMatch(/^ARG NODE_IMAGE=node:24-slim$/m);
    const froms = all.filter((i) => i.op === 'FROM').map((i) => i.args[0]);
    expect(froms.length).toBeGreaterThanOrEqual(3);
    for (const f of froms) expect(['${NODE_IMAGE}', 'deps']).toContain(f);
    const users = all.filter((i) => i.op === 'USER' && i.stage === 'final');
    expect(users).toHaveLength(1);
    expect(users[0]!.args[0]).toMatch(/^[1-9][0-9]*:[1-9][0-9]*$/);
    expect(all.some((i) => i.op === 'ARG' && i.args[0] === 'SERVICE' && i.stage === 'final')).toBe(true);
  });

  it('sets no secrets', () => {
    for (const i of all.filter((x) => x.op === 'ENV' || x.op === 'ARG')) {
      expect(i.args.join(' ')).not.toMatch(/TOKEN|SECRET|PASSWORD|DATABASE_URL|KEY=/i);
    }
  });

  it('copies only files that exist and that .dockerignore lets into the build context', () => {
    const fromContext = copies.filter((c) => !c.args.some((a) => a.startsWith('--from=')));
    expect(fromContext.length).toBeGreaterThan(10);
    for (const c of fromContext) {
      const sources = c.args.filter((a) => !a.startsWith('--')).slice(0, -1);
      for (const src of sources) {
        expect(existsSync(join(REPO, src)), `COPY ${src}`).toBe(true);
        expect(ignored(src), `COPY ${src} is excluded by .dockerignore`).toBe(false);
      }
    }
    // And the context leaves out what must never be in an image.
    for (const p of ['node_modules', '.git', 'packages/cli/dist', '.env', 'services/profile-api/test']) expect(ignored(p), p).toBe(true);
  });

  it('copies from stages that exist, the dist/ folder of every runtime workspace', () => {
    const stages = new Set(all.filter((i) => i.op === 'FROM').map((i) => i.stage));
    const dists = new Set<string>();
    for (const c of copies.filter((x) => x.args.some((a) => a.startsWith('--from=')))) {
      const from = c.args.find((a) => a.startsWith('--from='))!.slice('--from='.length);
      expect(stages.has(from), `stage ${from}`).toBe(true);
      const src = c.args.filter((a) => !a.startsWith('--'))[0]!;
      const m = /^\/src\/(.+)\/dist$/.exec(src);
      if (m) dists.add(m[1]!);
    }
    // Every workspace except the test harness ships its compiled code.
    expect([...dists].sort()).toEqual(WORKSPACES.filter((w) => w !== 'packages/testing').sort());
  });

  it('copies every workspace manifest before each npm ci (npm ci needs them all)', () => {
    for (const stage of ['deps', 'production']) {
      const copied = copies.filter((c) => c.stage === stage).flatMap((c) => c.args);
      for (const ws of WORKSPACES) expect(copied, `${stage}: ${ws}/package.json`).toContain(`${ws}/package.json`);
      expect(copied).toContain('package-lock.json');
    }
  });
});

describe('the production install', () => {
  let dir = '';
  let child: ChildProcess | null = null;

  afterAll(async () => {
    // Cleanup only: the test itself proves a graceful SIGTERM; this never waits unbounded.
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child!.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // Slow: a real `npm ci --omit=dev` of every runtime dependency (about 40 s on an idle 2-core
  // machine, from the npm cache); the timeout leaves room for a busy one.
  it('starts from a clean npm ci --omit=dev with prebuilt dist/ and answers {prefix}health', { timeout: 240_000 }, async () => {
    dir = mkdtempSync(join(tmpdir(), 'hubside-prod-'));
    const app = join(dir, 'app');
    // What the Dockerfile's `production` stage holds: manifests, then dist/ from `build`.
    for (const file of ['package.json', 'package-lock.json', ...WORKSPACES.map((w) => `${w}/package.json`)]) {
      mkdirSync(dirname(join(app, file)), { recursive: true });
      cpSync(join(REPO, file), join(app, file));
    }
    const install = async (offline: boolean) =>
      run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', ...(offline ? ['--offline'] : [])], {
        cwd: app,
        timeout: 180_000,
        maxBuffer: 16 * 1024 * 1024,
        env: { PATH: process.env.PATH, HOME: process.env.HOME, npm_config_update_notifier: 'false' },
      });
    await install(true).catch(() => install(false));
    // Dev-only packages stay out.
    expect(existsSync(join(app, 'node_modules/typescript'))).toBe(false);
    expect(existsSync(join(app, 'node_modules/vitest'))).toBe(false);
    for (const ws of WORKSPACES.filter((w) => w !== 'packages/testing')) {
      const dist = join(REPO, ws, 'dist');
      if (!existsSync(join(dist, 'index.js')) && !existsSync(join(dist, 'main.js'))) {
        throw new Error(`${ws}/dist is not built: run \`npx tsc -b\` first (npm test does)`);
      }
      cpSync(dist, join(app, ws, 'dist'), { recursive: true });
    }
    cpSync(join(REPO, 'packages/cli/bin'), join(app, 'packages/cli/bin'), { recursive: true });

    // The image's entrypoint, with only what the chart sets (no hub: health still answers).
    const data = join(dir, 'data');
    let output = '';
    child = spawn(join(REPO, 'docker/entrypoint.sh'), [], {
      cwd: app,
      env: {
        PATH: process.env.PATH,
        HUBSIDE_APP_DIR: app,
        HUBSIDE_SERVICE: 'profile-api',
        NODE_ENV: 'production',
        HUBSIDE_HOST: '127.0.0.1',
        HUBSIDE_PORT: '0',
        HUBSIDE_DATA_DIR: data,
        JUPYTERHUB_SERVICE_PREFIX: '/services/profile-api/',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    const exited = new AbortController();
    child.once('exit', (code) => exited.abort(new Error(`the service exited with ${code}:\n${output}`)));

    const url = await waitFor(async () => /"url":"(http:\/\/127\.0\.0\.1:\d+\/services\/profile-api\/)"/.exec(output)?.[1], {
      timeoutMs: 90_000,
      what: 'profile-api to log its URL',
      signal: exited.signal,
    }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\noutput:\n${output.slice(-2000)}`);
    });
    const health = await waitFor(
      async () => {
        const res = await fetch(`${url}health`);
        return res.ok ? res : undefined;
      },
      { timeoutMs: 20_000, what: 'profile-api health', signal: exited.signal },
    );
    expect(health.status).toBe(200);
    // Its embedded database lives where HUBSIDE_DATA_DIR says (the image's volume).
    expect(existsSync(data)).toBe(true);
    // The code resolved from the production install, not from the repository.
    const { stdout } = await run('node', ['-e', "console.log(import.meta.resolve('@hubside/profile-api'))", '--input-type=module'], { cwd: join(app, 'packages/cli') });
    expect(stdout.trim()).toBe(`file://${app}/services/profile-api/dist/index.js`);

    // Kubernetes sends SIGTERM and waits terminationGracePeriodSeconds (30 s) before SIGKILL.
    const stopped = new Promise<number | null>((r) => child!.once('exit', (code) => r(code)));
    child!.kill('SIGTERM');
    const code = await Promise.race([stopped, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000).unref())]);
    expect(code, `exit after SIGTERM; output:\n${output.slice(-2000)}`).toBe(0);
  });
});
