// bench/start: how long `npm start` takes, from the moment it is launched to the hub's login page
// and every service's health answering through the hub's proxy.
//
//   node bench/start/index.mjs [--quick]
//
// It runs `npm start` itself (the build check, the launcher, the hub, the four services side by
// side), on free ports and in a fresh state directory: a cold start (first run: databases created,
// sample usage seeded) and then warm starts (the state kept). The reference is JupyterHub alone
// (the same jupyterhub, a bare config with the dummy authenticator) to its login page, on the same
// machine at the same time, so the ratio says what Hubside adds. The goal is 20 s on 2 cores.

import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SERVICES, findJupyterhub, freePort } from '../../scripts/product/product.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..', '..');
const GOAL_MS = 20_000;
const TIMEOUT_MS = 180_000;

export const name = 'start';

async function answers(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000), redirect: 'manual' });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

async function freePorts() {
  const [pub, proxyApi, hub, ...svc] = await Promise.all(Array.from({ length: 3 + SERVICES.length }, () => freePort()));
  return { public: pub, proxyApi, hub, services: Object.fromEntries(SERVICES.map((n, i) => [n, svc[i]])) };
}

const TICK = 100; // USER_HZ on Linux

/** CPU seconds used so far by `pid` and all its descendants (the reaped ones included, through cutime/cstime). */
function treeCpuSeconds(pid) {
  const stat = new Map();
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const f = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');
      stat.set(Number(p), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) });
    } catch {
      // Gone meanwhile.
    }
  }
  let total = 0;
  const walk = (p) => {
    total += stat.get(p)?.ticks ?? 0;
    for (const [child, s] of stat) if (s.ppid === p) walk(child);
  };
  walk(pid);
  return total / TICK;
}

/** Launch a command in its own process group; resolve the ms until every URL answered, then stop it with SIGINT (Ctrl-C). */
async function timeToAnswer(command, args, env, urls, cwd) {
  const started = Date.now();
  const child = spawn(command, args, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  let exited = false;
  child.once('exit', () => (exited = true));
  const firstAnswer = {};
  try {
    while (Object.keys(firstAnswer).length < urls.length) {
      if (exited) throw new Error(`${command} ${args.join(' ')} exited before answering:\n${output.slice(-2000)}`);
      if (Date.now() - started > TIMEOUT_MS) throw new Error(`no answer within ${TIMEOUT_MS} ms from ${urls.filter((u) => !(u in firstAnswer)).join(', ')}`);
      await Promise.all(
        urls.filter((u) => !(u in firstAnswer)).map(async (u) => {
          if (await answers(u)) firstAnswer[u] ??= Date.now() - started;
        }),
      );
      await new Promise((r) => setTimeout(r, 50));
    }
    return { totalMs: Math.max(...Object.values(firstAnswer)), firstAnswer, cpuSeconds: treeCpuSeconds(child.pid) };
  } finally {
    if (!exited) {
      try {
        process.kill(-child.pid, 'SIGINT');
      } catch {
        // Already gone.
      }
      const gone = new Promise((r) => child.once('exit', r));
      const late = await Promise.race([gone.then(() => false), new Promise((r) => setTimeout(r, 20_000, true))]);
      if (late) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
        await gone;
      }
    }
  }
}

async function npmStart(stateDir) {
  const ports = await freePorts();
  const url = `http://127.0.0.1:${ports.public}`;
  const env = { ...process.env, HUBSIDE_PRODUCT_PORTS: JSON.stringify(ports), HUBSIDE_PRODUCT_STATE_DIR: stateDir };
  const urls = [`${url}/hub/login`, ...SERVICES.map((s) => `${url}/services/${s}/health`)];
  const { totalMs, firstAnswer, cpuSeconds } = await timeToAnswer('npm', ['start', '--silent'], env, urls, REPO);
  return { totalMs, cpuSeconds, hubMs: firstAnswer[urls[0]], services: Object.fromEntries(SERVICES.map((s, i) => [s, firstAnswer[urls[i + 1]]])) };
}

async function bareHub(jupyterhub, dir) {
  const ports = await freePorts();
  const config = join(dir, 'bare_config.py');
  await writeFile(
    config,
    [
      'c = get_config()  # noqa',
      `c.JupyterHub.bind_url = "http://127.0.0.1:${ports.public}/"`,
      `c.JupyterHub.hub_bind_url = "http://127.0.0.1:${ports.hub}"`,
      `c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:${ports.proxyApi}"`,
      `c.JupyterHub.db_url = "sqlite:///${join(dir, 'bare.sqlite')}"`,
      `c.JupyterHub.cookie_secret_file = "${join(dir, 'bare_cookie_secret')}"`,
      `c.JupyterHub.pid_file = "${join(dir, 'bare.pid')}"`,
      `c.ConfigurableHTTPProxy.pid_file = "${join(dir, 'bare-proxy.pid')}"`,
      'c.JupyterHub.authenticator_class = "dummy"',
      '',
    ].join('\n'),
  );
  const env = { ...process.env, NODE_PATH: '/usr/share/nodejs' };
  for (const n of ['PYTHONPATH', 'PYTHONHOME', 'NODE_OPTIONS']) delete env[n];
  const { totalMs, cpuSeconds } = await timeToAnswer(jupyterhub, ['-f', config], env, [`http://127.0.0.1:${ports.public}/hub/login`], dir);
  return { totalMs, cpuSeconds };
}

const s = (ms) => (ms / 1000).toFixed(1);

export async function run(opts = {}) {
  const jupyterhub = findJupyterhub();
  if (!jupyterhub) return { ok: false, failures: ['jupyterhub is not on PATH: npm start would start the services alone'] };
  const warmRuns = opts.quick ? 1 : 3;
  const dir = await mkdtemp(join(os.tmpdir(), 'hubside-bench-start-'));
  const failures = [];
  const results = { machine: `${os.cpus()[0]?.model ?? 'cpu'} x ${os.cpus().length}`, loadavg: os.loadavg(), goalMs: GOAL_MS, runs: [] };
  try {
    const stateDir = join(dir, 'state');
    const bare = [];
    for (let i = 0; i <= warmRuns; i += 1) {
      const kind = i === 0 ? 'cold' : 'warm';
      const r = await npmStart(stateDir);
      const ref = await bareHub(jupyterhub, dir);
      bare.push(ref.totalMs);
      results.runs.push({ kind, ...r, bareHubMs: ref.totalMs, bareHubCpuSeconds: ref.cpuSeconds, loadavg: os.loadavg()[0] });
      process.stdout.write(
        `${kind.padEnd(5)} npm start: ${s(r.totalMs)} s to everything (hub login ${s(r.hubMs)} s; ${SERVICES.map((n) => `${n} ${s(r.services[n])} s`).join(', ')}), ` +
          `${r.cpuSeconds.toFixed(1)} CPU s; JupyterHub alone: ${s(ref.totalMs)} s, ${ref.cpuSeconds.toFixed(1)} CPU s; ` +
          `ratio ${(r.totalMs / ref.totalMs).toFixed(2)} (wall), ${(r.cpuSeconds / ref.cpuSeconds).toFixed(2)} (CPU); load ${os.loadavg()[0].toFixed(1)}\n`,
      );
    }
    const warm = results.runs.filter((r) => r.kind === 'warm').map((r) => r.totalMs).sort((a, b) => a - b);
    const cold = results.runs[0].totalMs;
    const warmCpu = results.runs.filter((r) => r.kind === 'warm').map((r) => r.cpuSeconds).sort((a, b) => a - b);
    const median = warm[Math.floor(warm.length / 2)];
    const warmCpuMedian = warmCpu[Math.floor(warmCpu.length / 2)];
    results.summary = { coldMs: cold, coldCpuSeconds: results.runs[0].cpuSeconds, warmMedianMs: median, warmCpuMedianSeconds: warmCpuMedian, bareHubMedianMs: bare.sort((a, b) => a - b)[Math.floor(bare.length / 2)] };
    process.stdout.write(
      `\n${results.machine}, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}\n` +
        `npm start -> login page and every service's health: cold ${s(cold)} s, warm median ${s(median)} s ` +
        `(goal ${s(GOAL_MS)} s); JupyterHub alone ${s(results.summary.bareHubMedianMs)} s\n` +
        `CPU to get there: cold ${results.runs[0].cpuSeconds.toFixed(1)} s, warm ${warmCpuMedian.toFixed(1)} s ` +
        `(the wall time on ${os.cpus().length} otherwise idle cores is at least CPU / cores)\n`,
    );
    if (cold > GOAL_MS) failures.push(`cold start took ${s(cold)} s, over the ${s(GOAL_MS)} s goal`);
    if (median > GOAL_MS) failures.push(`warm start took ${s(median)} s, over the ${s(GOAL_MS)} s goal`);
  } catch (err) {
    failures.push(err instanceof Error ? err.message : String(err));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const outDir = resolve(opts.resultsDir ?? join(REPO, 'bench', 'results'));
  await mkdir(outDir, { recursive: true });
  const file = join(outDir, `start-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
  return { ok: failures.length === 0, failures, file };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, 'results-dir': { type: 'string' } }, strict: true });
  const outcome = await run({ quick: values.quick, resultsDir: values['results-dir'] });
  for (const f of outcome.failures) process.stderr.write(`FAILED: ${f}\n`);
  process.exitCode = outcome.ok ? 0 : 1;
}
