// bench/hub-auth: Hubside's authenticated route against JupyterHub's own Python HubAuthenticated
// handler, side by side, against one real JupyterHub. See bench/README.md for how to read it.
//
//   node bench/hub-auth/index.mjs [--quick] [--cpu-prof DIR]
//
// One hub runs three managed services:
//   profile-api      ours: `hubside profile-api` (Fastify; hub-client's cached, coalescing HubAuth)
//   reference        JupyterHub's HubAuthenticated as documented: @web.authenticated and the
//                    synchronous get_current_user() (HubAuth answers on its background thread)
//   reference-async  the same handler, resolving the user with HubAuth's async API
//                    (`await hub_auth.get_user(handler, sync=False)`, JupyterHub >= 2.4)
// and every measurement hits each service directly on its bind URL, so the proxy's cost does not
// blur the comparison (one short extra run goes through the proxy and is printed separately).

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { freePort, startHub, waitFor } from '@hubside/testing';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..', '..');
const HUBSIDE_BIN = join(REPO, 'packages', 'cli', 'bin', 'hubside.js');
const REFERENCE_PY = join(HERE, 'reference-whoami.py');
const PYTHON = '/usr/bin/python3';
const JUPYTERHUB = '/usr/bin/jupyterhub';
const SELF_HANDLER = 'jupyterhub.apihandlers.users.SelfAPIHandler';

export const name = 'hub-auth';

/** The one logging policy applied to every service under test. */
const LOGGING = {
  summary:
    'both sides log warnings and errors only: ours HUBSIDE_LOG_LEVEL=warn (pino), the reference ' +
    'Python logging and tornado.access at WARNING; a successful request writes no log line on either side',
  hubside: { HUBSIDE_LOG_LEVEL: 'warn' },
  reference: { REFERENCE_LOG_LEVEL: 'WARNING' },
};

const SETTINGS = {
  full: { warmSeconds: 10, warmupSeconds: 2, rounds: 3, connections: 50, proxySeconds: 5, stormTokens: 500, oneTokenRequests: 500, stormRounds: 3, users: 10 },
  quick: { warmSeconds: 3, warmupSeconds: 1, rounds: 1, connections: 50, proxySeconds: 2, stormTokens: 100, oneTokenRequests: 100, stormRounds: 1, users: 5 },
};

const TOKEN_BATCH = 16;
const STORM_REQUEST_TIMEOUT_MS = 60_000;
const SERVICE_START_TIMEOUT_MS = 90_000;

// ---------------------------------------------------------------------------------------------
// small helpers

function percentile(sorted, q) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
}

const fmt = {
  int: (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a'),
  ms: (n) => (!Number.isFinite(n) ? 'n/a' : n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2)),
  ratio: (n) => (!Number.isFinite(n) ? 'n/a' : n >= 10 ? `${n.toFixed(1)}x` : `${n.toFixed(2)}x`),
};

function table(headers, rows) {
  const cells = [headers, ...rows].map((r) => r.map((c) => String(c)));
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

/** Prometheus text -> [{ name, labels, value }] (enough of the format for counters and histograms). */
function parsePrometheus(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU seconds (user + system, all threads) a process has used so far. */
function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Machine-wide CPU seconds spent busy (all cores), from /proc/stat. */
function machineBusySeconds() {
  try {
    const [, ...fields] = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0].trim().split(/\s+/);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = fields.map(Number);
    return (user + nice + system + irq + softirq + steal) / CLK_TCK;
  } catch {
    return NaN;
  }
}

function environOf(pid) {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

function versionOf(file, args) {
  try {
    return execFileSync(file, args, { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } }).trim();
  } catch (err) {
    return `unknown (${err.message.split('\n')[0]})`;
  }
}

function machine() {
  const cpus = os.cpus();
  const pythonInfo = versionOf(PYTHON, ['-c', 'import sys, tornado; print(sys.version.split()[0], tornado.version)']).split(' ');
  let autocannonVersion = 'unknown';
  try {
    autocannonVersion = JSON.parse(readFileSync(join(REPO, 'node_modules', 'autocannon', 'package.json'), 'utf8')).version;
  } catch {
    // Reported as unknown.
  }
  return {
    hostname: os.hostname(),
    cpuModel: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    jupyterhub: versionOf(JUPYTERHUB, ['--version']),
    python: pythonInfo[0],
    tornado: pythonInfo[1],
    autocannon: autocannonVersion,
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP for the storms: node:http with a keep-alive agent whose sockets are opened beforehand

function httpGet(url, { agent, token, timeoutMs = STORM_REQUEST_TIMEOUT_MS }) {
  const started = performance.now();
  return new Promise((resolvePromise) => {
    let settled = false;
    const done = (result) => {
      if (settled) return;
      settled = true;
      resolvePromise({ ...result, ms: performance.now() - started, endedAt: performance.now() });
    };
    const req = http.get(url, { agent, headers: token ? { authorization: `token ${token}` } : {}, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => done({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (err) => done({ status: 0, error: err.message }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => done({ status: 0, error: err.message }));
  });
}

function countSockets(group) {
  return Object.values(group).reduce((n, list) => n + list.length, 0);
}

/**
 * A keep-alive agent holding `count` open connections to the service. Issuing every request in
 * one tick makes the agent open one socket per request; the storm then reuses them, so what it
 * times is authentication, not TCP accept backlogs.
 */
async function connectedAgent(healthUrl, count) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: count, maxFreeSockets: count, scheduling: 'fifo', keepAliveMsecs: 60_000 });
  const results = await Promise.all(Array.from({ length: count }, () => httpGet(healthUrl, { agent, timeoutMs: 30_000 })));
  const bad = results.filter((r) => r.status !== 200);
  if (bad.length > 0) {
    agent.destroy();
    throw new Error(`opening ${count} connections to ${healthUrl}: ${bad.length} failed (first: ${bad[0].status} ${bad[0].error ?? bad[0].body})`);
  }
  return { agent, sockets: countSockets(agent.freeSockets) };
}

// ---------------------------------------------------------------------------------------------
// measurements

async function hubMetrics(hub) {
  const res = await fetch(hub.hubApiUrl.replace(/\/api$/, '/metrics'), {
    headers: { authorization: `token ${hub.adminToken}` },
    signal: AbortSignal.timeout(15_000),
  });
  if (res.status !== 200) throw new Error(`GET /hub/metrics answered ${res.status}`);
  return parsePrometheus(await res.text());
}

/** How many GET /hub/api/user requests the hub has answered (any status), from its own metrics. */
async function hubUserCalls(hub) {
  const samples = await hubMetrics(hub);
  const selfSamples = samples.filter(
    (s) => s.name === 'jupyterhub_request_duration_seconds_count' && s.labels.handler === SELF_HANDLER && s.labels.method === 'GET',
  );
  const byCode = {};
  for (const s of selfSamples) byCode[s.labels.code] = (byCode[s.labels.code] ?? 0) + s.value;
  return { total: selfSamples.reduce((n, s) => n + s.value, 0), byCode, seen: selfSamples.length > 0 };
}

async function oursMetrics(base) {
  const res = await fetch(`${base}metrics`, { signal: AbortSignal.timeout(15_000) });
  if (res.status !== 200) throw new Error(`GET ${base}metrics answered ${res.status}`);
  const samples = parsePrometheus(await res.text());
  const hubCalls = samples
    .filter((s) => s.name === 'hubside_hub_api_calls_total' && s.labels.route === 'GET /user')
    .reduce((n, s) => n + s.value, 0);
  const cache = {};
  for (const s of samples.filter((x) => x.name === 'hubside_auth_cache_total')) cache[s.labels.result] = (cache[s.labels.result] ?? 0) + s.value;
  return { hubCalls, cache };
}

function diffCounts(after, before) {
  const out = {};
  for (const k of new Set([...Object.keys(after), ...Object.keys(before)])) {
    const d = (after[k] ?? 0) - (before[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

function autocannonRun({ url, token, connections, seconds }) {
  return new Promise((resolvePromise, reject) => {
    const times = [];
    const instance = autocannon(
      { url, connections, duration: seconds, headers: { authorization: `token ${token}` }, timeout: 10 },
      (err, result) => {
        if (err) reject(err);
        else {
          times.sort((a, b) => a - b);
          resolvePromise({ result, times });
        }
      },
    );
    // autocannon's histogram has 1 ms resolution; keep the raw timings for sub-millisecond percentiles.
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) times.push(responseTime);
    });
  });
}

/**
 * A closed-loop load generator on node:http: `connections` workers, each sending its next request
 * when the last one is answered, until the deadline. Used through the proxy, which answers
 * `Connection: close`: autocannon reconnects after every response there, and its latency
 * figures then contradict its own throughput, so they cannot be used.
 */
async function closedLoopRun({ url, token, connections, seconds }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const times = [];
  const statuses = {};
  const connectionHeaders = new Set();
  let errors = 0;
  const started = performance.now();
  const deadline = started + seconds * 1000;
  const one = () =>
    new Promise((resolvePromise) => {
      const t = performance.now();
      const req = http.get(url, { agent, headers: { authorization: `token ${token}` }, timeout: 10_000 }, (res) => {
        connectionHeaders.add(String(res.headers.connection ?? '(none)'));
        res.resume();
        res.on('end', () => {
          statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
          if (res.statusCode >= 200 && res.statusCode < 300) times.push(performance.now() - t);
          resolvePromise();
        });
        res.on('error', () => {
          errors += 1;
          resolvePromise();
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', () => {
        errors += 1;
        resolvePromise();
      });
    });
  try {
    await Promise.all(
      Array.from({ length: connections }, async () => {
        while (performance.now() < deadline) await one();
      }),
    );
  } finally {
    agent.destroy();
  }
  const elapsed = (performance.now() - started) / 1000;
  times.sort((a, b) => a - b);
  const total = Object.values(statuses).reduce((a, b) => a + b, 0);
  const ok = times.length;
  return {
    url,
    seconds: elapsed,
    connections,
    requestsPerSecond: total / elapsed,
    requestsTotal: total,
    ok2xx: ok,
    non2xx: total - ok,
    errors,
    timeouts: 0,
    statuses,
    connectionHeader: [...connectionHeaders].join(','),
    preciseLatencyMs: { p50: percentile(times, 0.5), p90: percentile(times, 0.9), p99: percentile(times, 0.99), max: times.at(-1) },
  };
}

async function warmRun(svc, { token, connections, seconds, url = svc.whoamiUrl, hub }) {
  const hubBefore = hub ? await hubUserCalls(hub) : undefined;
  const cpuBefore = cpuSeconds(svc.pid);
  const hubCpuBefore = hub ? cpuSeconds(hub.hubProcessPid) : 0;
  const machineBefore = machineBusySeconds();
  const clientBefore = process.cpuUsage();
  // CLOCK_MONOTONIC in microseconds: the clock V8 stamps .cpuprofile samples with, so
  // profile-summary.mjs can cut exactly these seconds out of a --cpu-prof profile.
  const monotonicStartUs = Number(process.hrtime.bigint() / 1000n);
  const { result, times } = await autocannonRun({ url, token, connections, seconds });
  const monotonicEndUs = Number(process.hrtime.bigint() / 1000n);
  const client = process.cpuUsage(clientBefore);
  const cpu = cpuSeconds(svc.pid) - cpuBefore;
  const hubCpu = hub ? cpuSeconds(hub.hubProcessPid) - hubCpuBefore : 0;
  const machineBusy = machineBusySeconds() - machineBefore;
  const hubAfter = hub ? await hubUserCalls(hub) : undefined;
  const total = result['2xx'] + result.non2xx;
  return {
    service: svc.name,
    url,
    seconds: result.duration,
    connections,
    requestsPerSecond: result.requests.average,
    requestsTotal: total,
    ok2xx: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    latencyMs: { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, max: result.latency.max, mean: result.latency.mean },
    preciseLatencyMs: { p50: percentile(times, 0.5), p90: percentile(times, 0.9), p99: percentile(times, 0.99), max: times.at(-1) },
    serviceCpuSeconds: cpu,
    serviceCpuMicrosPerRequest: total > 0 ? (cpu * 1e6) / total : NaN,
    loadGeneratorCpuSeconds: (client.user + client.system) / 1e6,
    // Whatever else ran meanwhile (other processes on a shared machine): busy CPU that was neither
    // the service, the load generator nor the hub.
    otherCpuSeconds: machineBusy - cpu - (client.user + client.system) / 1e6 - hubCpu,
    hubUserCalls: hubBefore && hubAfter ? hubAfter.total - hubBefore.total : undefined,
    monotonicUs: [monotonicStartUs, monotonicEndUs],
  };
}

async function storm(svc, hub, tokens, label) {
  const { agent, sockets } = await connectedAgent(svc.healthUrl, tokens.length);
  try {
    const hubBefore = await hubUserCalls(hub);
    const oursBefore = svc.own ? await oursMetrics(svc.base) : undefined;
    const cpuBefore = { service: cpuSeconds(svc.pid), hub: cpuSeconds(hub.hubProcessPid) };
    const t0 = performance.now();
    const results = await Promise.all(tokens.map((token) => httpGet(svc.whoamiUrl, { agent, token })));
    const wallMs = Math.max(...results.map((r) => r.endedAt)) - t0;
    const cpu = { service: cpuSeconds(svc.pid) - cpuBefore.service, hub: cpuSeconds(hub.hubProcessPid) - cpuBefore.hub };
    const hubAfter = await hubUserCalls(hub);
    const oursAfter = svc.own ? await oursMetrics(svc.base) : undefined;
    const latencies = results.map((r) => r.ms).sort((a, b) => a - b);
    const statuses = {};
    for (const r of results) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    const wrongUser = results.filter((r) => r.status === 200 && !tokenOwnerMatches(r.body, tokens.owners)).length;
    const firstError = results.find((r) => r.status !== 200);
    return {
      kind: label,
      service: svc.name,
      requests: tokens.length,
      distinctTokens: new Set(tokens).size,
      preOpenedConnections: sockets,
      succeeded: statuses[200] ?? 0,
      statuses,
      wrongUser,
      firstError: firstError ? `${firstError.status} ${firstError.error ?? firstError.body.slice(0, 200)}` : undefined,
      wallMs,
      latencyMs: { p50: percentile(latencies, 0.5), p90: percentile(latencies, 0.9), p99: percentile(latencies, 0.99), max: latencies.at(-1) },
      hubUserCalls: hubAfter.total - hubBefore.total,
      hubUserCallsByCode: diffCounts(hubAfter.byCode, hubBefore.byCode),
      ownHubCalls: oursAfter ? oursAfter.hubCalls - oursBefore.hubCalls : undefined,
      ownCache: oursAfter ? diffCounts(oursAfter.cache, oursBefore.cache) : undefined,
      serviceCpuSeconds: cpu.service,
      hubCpuSeconds: cpu.hub,
    };
  } finally {
    agent.destroy();
  }
}

function tokenOwnerMatches(body, owners) {
  if (!owners) return true;
  try {
    return owners.has(JSON.parse(body).name);
  } catch {
    return false;
  }
}

async function createTokens(hub, users, count, note) {
  const tokens = new Array(count);
  for (let start = 0; start < count; start += TOKEN_BATCH) {
    const batch = [];
    for (let i = start; i < Math.min(count, start + TOKEN_BATCH); i += 1) {
      batch.push(hub.createToken(users[i % users.length], { note: `${note} ${i}` }).then((t) => (tokens[i] = t)));
    }
    await Promise.all(batch);
  }
  tokens.owners = new Set(users);
  return tokens;
}

// ---------------------------------------------------------------------------------------------
// the benchmark

function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    options: { quick: { type: 'boolean', default: false }, 'cpu-prof': { type: 'string' }, 'results-dir': { type: 'string' } },
    strict: true,
  });
  return { quick: values.quick, cpuProf: values['cpu-prof'], resultsDir: values['results-dir'] };
}

/**
 * Run the benchmark. Resolves with `{ ok, failures, results, file }`; `ok` is false when a check
 * failed (errors under warm load, a wrong identity, our one-token storm costing more than one
 * hub call, our own hub-call count disagreeing with the hub's).
 */
export async function run(opts = {}) {
  const mode = opts.quick ? 'quick' : 'full';
  const cfg = { ...SETTINGS[mode], ...(opts.settings ?? {}) };
  const log = opts.log ?? ((line = '') => process.stdout.write(`${line}\n`));
  const failures = [];
  const check = (condition, message) => {
    if (!condition) failures.push(message);
    return condition;
  };
  const startedAt = new Date();
  const host = machine();

  const dataDir = await mkdtemp(join(os.tmpdir(), 'hubside-bench-data-'));
  const cpuProfDir = opts.cpuProf ? resolve(opts.cpuProf) : undefined;
  if (cpuProfDir) await mkdir(cpuProfDir, { recursive: true });
  const [oursPort, refPort, refAsyncPort] = [await freePort(), await freePort(), await freePort()];
  const users = Array.from({ length: cfg.users }, (_, i) => `bench-user-${i}`);

  const specs = [
    {
      key: 'ours',
      name: 'profile-api',
      label: 'ours (profile-api, Node)',
      own: true,
      url: `http://127.0.0.1:${oursPort}`,
      // Node refuses --cpu-prof in NODE_OPTIONS, so it goes on the command line.
      command: [process.execPath, ...(cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : []), HUBSIDE_BIN, 'profile-api'],
      environment: {
        HUBSIDE_DATA_DIR: dataDir,
        HUBSIDE_METRICS_PUBLIC: 'true',
        // One token at full speed measures the cost of a request, not a real user: no per-user limit.
        HUBSIDE_RATE_LIMIT_USER: '0',
        ...LOGGING.hubside,
      },
      health: 'health',
    },
    {
      key: 'reference',
      name: 'reference',
      label: 'reference (HubAuthenticated)',
      url: `http://127.0.0.1:${refPort}`,
      command: [PYTHON, REFERENCE_PY],
      environment: { REFERENCE_AUTH_MODE: 'sync', ...LOGGING.reference },
      health: 'health',
    },
    {
      key: 'referenceAsync',
      name: 'reference-async',
      label: 'reference-async (get_user async)',
      url: `http://127.0.0.1:${refAsyncPort}`,
      command: [PYTHON, REFERENCE_PY],
      environment: { REFERENCE_AUTH_MODE: 'async', ...LOGGING.reference },
      health: 'health',
    },
  ];

  const results = { benchmark: name, mode, startedAt: startedAt.toISOString(), machine: host, settings: cfg, logging: LOGGING.summary };
  log(`# hub-auth (${mode}): Hubside's hub authentication vs JupyterHub's HubAuthenticated, one real hub`);
  log(`machine: ${host.hostname}, ${host.cpuModel}, ${host.cores} cores, ${host.memoryGiB} GiB, ${host.os}`);
  log(`software: Node ${host.node}, JupyterHub ${host.jupyterhub} (Python ${host.python}, tornado ${host.tornado}), autocannon ${host.autocannon} (load generator, in this process)`);
  log(`logging: ${LOGGING.summary}`);
  results.loadAverage = { before: os.loadavg() };
  log(`load average before start: ${results.loadAverage.before.map((x) => x.toFixed(2)).join(' ')}`);
  log(`services: ${specs.map((s) => `${s.name} ${s.url}`).join(', ')}`);
  if (cpuProfDir) log(`cpu profile of ours: ${cpuProfDir} (written when the service exits)`);
  log();

  let hub;
  try {
    const hubStart = performance.now();
    hub = await startHub({
      services: specs.map((s) => ({ name: s.name, url: s.url, command: s.command, environment: s.environment, cwd: REPO })),
      roles: [{ name: 'user', scopes: ['self', 'access:services'] }],
      users,
      startTimeoutMs: SERVICE_START_TIMEOUT_MS,
      logFile: join(REPO, 'test-artifacts', `bench-hub-auth-${mode}.log`),
    });
    log(`hub up in ${fmt.int(performance.now() - hubStart)} ms at ${hub.url} (API ${hub.hubApiUrl}); log ${hub.logFile}`);

    const procs = hub.processes();
    hub.hubProcessPid = procs.find((p) => p.ppid === hub.pid && p.command.includes(JUPYTERHUB))?.pid ?? hub.pid;
    const services = {};
    for (const s of specs) {
      const proc = procs.find((p) => environOf(p.pid).includes(`JUPYTERHUB_SERVICE_NAME=${s.name}`) && !p.command.includes('configurable-http-proxy'));
      if (!proc) throw new Error(`could not find the process of service ${s.name} among ${procs.map((p) => `${p.pid} ${p.command}`).join('; ')}`);
      const prefix = `/services/${s.name}/`;
      services[s.key] = {
        ...s,
        pid: proc.pid,
        base: `${s.url}${prefix}`,
        whoamiUrl: `${s.url}${prefix}api/whoami`,
        healthUrl: `${s.url}${prefix}${s.health}`,
        proxiedWhoamiUrl: `${hub.url}${prefix}api/whoami`,
      };
    }
    const all = [services.ours, services.reference, services.referenceAsync];
    results.services = Object.fromEntries(all.map((s) => [s.key, { name: s.name, label: s.label, url: s.url, pid: s.pid, command: s.command.join(' ') }]));

    // Each service answers its health route (ours after its database is migrated).
    for (const s of all) {
      await waitFor(
        async () => {
          const res = await fetch(s.healthUrl, { signal: AbortSignal.timeout(2_000) });
          await res.body?.cancel();
          return res.status === 200;
        },
        { timeoutMs: SERVICE_START_TIMEOUT_MS, intervalMs: 100, what: `${s.name} health at ${s.healthUrl}` },
      );
    }

    // ---- warm tokens ------------------------------------------------------------------------
    const warmTokens = {};
    for (const s of all) {
      const user = users[0];
      const token = await hub.createToken(user, { note: `bench warm ${s.name}` });
      warmTokens[s.key] = token;
      const before = await hubUserCalls(hub);
      const res = await httpGet(s.whoamiUrl, { token, timeoutMs: 15_000 });
      const after = await hubUserCalls(hub);
      if (res.status !== 200) throw new Error(`pre-warm ${s.name}: ${res.status} ${res.error ?? res.body}`);
      const who = JSON.parse(res.body);
      check(who.name === user, `${s.name} whoami said ${who.name}, expected ${user}`);
      if (!after.seen) {
        const handlers = [...new Set((await hubMetrics(hub)).filter((x) => x.name === 'jupyterhub_request_duration_seconds_count').map((x) => x.labels.handler))];
        throw new Error(`the hub's metrics have no ${SELF_HANDLER} samples; handlers seen: ${handlers.join(', ')}`);
      }
      check(after.total - before.total === 1, `pre-warming ${s.name} cost ${after.total - before.total} hub calls, expected 1`);
    }
    log(`pre-warmed one token per service (each cost 1 GET /hub/api/user, counted on the hub)`);

    for (const s of all) await autocannonRun({ url: s.whoamiUrl, token: warmTokens[s.key], connections: cfg.connections, seconds: cfg.warmupSeconds });

    const warm = Object.fromEntries(all.map((s) => [s.key, []]));
    for (let round = 0; round < cfg.rounds; round += 1) {
      for (const s of all) {
        const r = await warmRun(s, { token: warmTokens[s.key], connections: cfg.connections, seconds: cfg.warmSeconds, hub });
        warm[s.key].push(r);
        log(`  warm round ${round + 1}/${cfg.rounds} ${s.name.padEnd(16)} ${fmt.int(r.requestsPerSecond).padStart(7)} req/s  p99 ${fmt.ms(r.preciseLatencyMs.p99)} ms  non-2xx ${r.non2xx}  errors ${r.errors}`);
        check(r.errors === 0 && r.timeouts === 0 && r.non2xx === 0, `warm ${s.name} round ${round + 1}: ${r.errors} errors, ${r.timeouts} timeouts, ${r.non2xx} non-2xx (must be 0)`);
        check(r.hubUserCalls === 0, `warm ${s.name} round ${round + 1}: ${r.hubUserCalls} hub calls with a cached token (expected 0)`);
      }
    }
    const warmSummary = Object.fromEntries(
      all.map((s) => {
        const runs = warm[s.key];
        const m = median(runs.map((r) => r.requestsPerSecond));
        const chosen = runs.find((r) => r.requestsPerSecond === m);
        return [s.key, { median: chosen, runsRequestsPerSecond: runs.map((r) => r.requestsPerSecond) }];
      }),
    );
    results.warm = { runs: warm, summary: warmSummary };

    // ---- through the proxy (short, printed separately) -------------------------------------
    const proxied = {};
    for (const s of all) {
      proxied[s.key] = await closedLoopRun({ url: s.proxiedWhoamiUrl, token: warmTokens[s.key], connections: cfg.connections, seconds: cfg.proxySeconds });
      const r = proxied[s.key];
      check(r.errors === 0 && r.timeouts === 0 && r.non2xx === 0, `proxied ${s.name}: ${r.errors} errors, ${r.timeouts} timeouts, ${r.non2xx} non-2xx (must be 0)`);
    }
    results.proxied = proxied;

    // ---- storms ------------------------------------------------------------------------------
    // Several rounds, each with fresh tokens, and the order rotates every round (whoever goes
    // first meets a colder hub); each service's median round by wall time is reported.
    const tokenStart = performance.now();
    const oneTokenUser = users[1 % users.length];
    const stormTokens = [];
    const oneTokens = [];
    for (let round = 0; round < cfg.stormRounds; round += 1) {
      const perService = {};
      const one = {};
      for (const s of all) {
        perService[s.key] = await createTokens(hub, users, cfg.stormTokens, `bench storm ${round} ${s.name}`);
        const t = await hub.createToken(oneTokenUser, { note: `bench one-token ${round} ${s.name}` });
        one[s.key] = Object.assign(new Array(cfg.oneTokenRequests).fill(t), { owners: new Set([oneTokenUser]) });
      }
      stormTokens.push(perService);
      oneTokens.push(one);
    }
    log(`created ${fmt.int(cfg.stormRounds * all.length * (cfg.stormTokens + 1))} fresh tokens for ${users.length} users in ${fmt.int(performance.now() - tokenStart)} ms`);

    const stormRuns = Object.fromEntries(all.map((s) => [s.key, []]));
    const oneTokenRuns = Object.fromEntries(all.map((s) => [s.key, []]));
    for (let round = 0; round < cfg.stormRounds; round += 1) {
      const order = [...all.slice(round % all.length), ...all.slice(0, round % all.length)];
      for (const s of order) {
        const r = await storm(s, hub, stormTokens[round][s.key], 'new-token storm');
        stormRuns[s.key].push(r);
        log(`  storm round ${round + 1}/${cfg.stormRounds} ${s.name.padEnd(16)} ${r.succeeded}/${r.requests} ok in ${fmt.int(r.wallMs).padStart(6)} ms, p99 ${fmt.ms(r.latencyMs.p99)} ms, ${r.hubUserCalls} hub calls`);
      }
      for (const s of order) {
        const r = await storm(s, hub, oneTokens[round][s.key], 'one-new-token storm');
        oneTokenRuns[s.key].push(r);
        log(`  one-token round ${round + 1}/${cfg.stormRounds} ${s.name.padEnd(16)} ${r.succeeded}/${r.requests} ok in ${fmt.int(r.wallMs).padStart(6)} ms, p99 ${fmt.ms(r.latencyMs.p99)} ms, ${r.hubUserCalls} hub calls`);
      }
    }
    const medianByWall = (runs) => {
      const m = median(runs.map((r) => r.wallMs));
      return { ...runs.find((r) => r.wallMs === m), runsWallMs: runs.map((r) => r.wallMs) };
    };
    const storms = Object.fromEntries(all.map((s) => [s.key, medianByWall(stormRuns[s.key])]));
    const oneToken = Object.fromEntries(all.map((s) => [s.key, medianByWall(oneTokenRuns[s.key])]));
    results.newTokenStorm = { runs: stormRuns, summary: storms };
    results.oneTokenStorm = { runs: oneTokenRuns, summary: oneToken };

    for (const [kind, runs] of [['new-token storm', stormRuns], ['one-token storm', oneTokenRuns]]) {
      for (const [i, r] of runs.ours.entries()) {
        check(r.succeeded === r.requests, `${kind} round ${i + 1}: ours answered ${r.succeeded}/${r.requests} with 200 (${r.firstError ?? ''})`);
        check(r.ownHubCalls === r.hubUserCalls, `${kind} round ${i + 1}: our own hubside_hub_api_calls_total counted ${r.ownHubCalls} GET /user, the hub counted ${r.hubUserCalls}`);
      }
      for (const s of all) {
        for (const [i, r] of runs[s.key].entries()) check(r.wrongUser === 0, `${kind} round ${i + 1}: ${s.name} returned ${r.wrongUser} identities that do not own the token`);
      }
    }
    for (const [i, r] of stormRuns.ours.entries()) {
      check(r.hubUserCalls === r.distinctTokens, `new-token storm round ${i + 1}: ours made ${r.hubUserCalls} hub calls for ${r.distinctTokens} tokens (expected one each)`);
    }
    for (const [i, r] of oneTokenRuns.ours.entries()) {
      check(r.hubUserCalls === 1, `one-token storm round ${i + 1}: ours made ${r.hubUserCalls} hub calls (must be exactly 1)`);
    }

    // ---- report ----------------------------------------------------------------------------
    log();
    printReport({ log, cfg, all, warmSummary, proxied, storms, oneToken, results });
  } catch (err) {
    failures.push(`benchmark aborted: ${err instanceof Error ? err.message : String(err)}`);
    if (hub) log(`hub log tail:\n${hub.logTail(30)}`);
  } finally {
    if (hub) await hub.stop().catch((err) => failures.push(`stopping the hub: ${err.message}`));
    await rm(dataDir, { recursive: true, force: true });
  }

  results.finishedAt = new Date().toISOString();
  results.loadAverage.after = os.loadavg();
  results.failures = failures;
  results.ok = failures.length === 0;
  const dir = resolve(opts.resultsDir ?? join(REPO, 'bench', 'results'));
  await mkdir(dir, { recursive: true });
  const stamp = startedAt.toISOString().replace(/\.\d+Z$/, 'Z').replaceAll(':', '-');
  const file = join(dir, `hub-auth-${stamp}${mode === 'quick' ? '-quick' : ''}.json`);
  await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
  log();
  if (failures.length > 0) {
    log(`FAILED checks (${failures.length}):`);
    for (const f of failures) log(`  - ${f}`);
  } else {
    log('all checks passed (no errors or non-2xx under warm load; identities right; ours: one hub call per token)');
  }
  log(`raw results: ${file}`);
  return { ok: failures.length === 0, failures, results, file };
}

function printReport({ log, cfg, all, warmSummary, proxied, storms, oneToken, results }) {
  const { ours, reference, referenceAsync } = Object.fromEntries(all.map((s) => [s.key, s]));
  const w = (s) => warmSummary[s.key].median;

  log(`## Warm token, direct to each service: ${cfg.connections} connections, ${cfg.warmSeconds} s per run, ${cfg.rounds} alternating round(s), median run`);
  log(
    table(
      ['service', 'req/s', 'p50 ms', 'p99 ms', 'ac p50/p99', 'non-2xx', 'errors', 'svc CPU us/req', 'svc/client/other CPU', 'runs (req/s)'],
      all.map((s) => {
        const r = w(s);
        return [
          s.label,
          fmt.int(r.requestsPerSecond),
          fmt.ms(r.preciseLatencyMs.p50),
          fmt.ms(r.preciseLatencyMs.p99),
          `${r.latencyMs.p50}/${r.latencyMs.p99}`,
          r.non2xx,
          r.errors,
          fmt.int(r.serviceCpuMicrosPerRequest),
          [r.serviceCpuSeconds, r.loadGeneratorCpuSeconds, r.otherCpuSeconds].map((x) => `${Math.max(0, (100 * x) / r.seconds).toFixed(0)}%`).join('/'),
          warmSummary[s.key].runsRequestsPerSecond.map((x) => fmt.int(x)).join(' / '),
        ];
      }),
    ),
  );
  log('(p50/p99: every 2xx response time autocannon reported; "ac": autocannon\'s own 1 ms-resolution histogram;');
  log(' CPU in % of one core: the service, the load generator (this process), and everything else on the machine)');
  log();

  log(`## Warm token, through configurable-http-proxy: ${cfg.connections} connections, ${cfg.proxySeconds} s, one run (node:http closed loop)`);
  log(
    table(
      ['service', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx', 'errors', 'Connection header'],
      all.map((s) => {
        const r = proxied[s.key];
        return [s.label, fmt.int(r.requestsPerSecond), fmt.ms(r.preciseLatencyMs.p50), fmt.ms(r.preciseLatencyMs.p99), r.non2xx, r.errors, r.connectionHeader];
      }),
    ),
  );
  log('(the proxy is the bottleneck here, and it answers Connection: close, so each request opens a new connection)');
  log();

  const stormTable = (set) =>
    table(
      ['service', 'ok', 'wall ms', 'p50 ms', 'p99 ms', 'hub calls (hub)', 'hub calls (own)', 'svc CPU ms', 'hub CPU ms', 'runs (wall ms)'],
      all.map((s) => {
        const r = set[s.key];
        const statuses = Object.entries(r.statuses)
          .filter(([code]) => code !== '200')
          .map(([code, n]) => `${n}x${code === '0' ? 'err' : code}`)
          .join(',');
        return [
          s.label,
          `${r.succeeded}/${r.requests}${statuses ? ` (${statuses})` : ''}`,
          fmt.int(r.wallMs),
          fmt.ms(r.latencyMs.p50),
          fmt.ms(r.latencyMs.p99),
          r.hubUserCalls,
          r.ownHubCalls ?? '-',
          fmt.int(r.serviceCpuSeconds * 1000),
          fmt.int(r.hubCpuSeconds * 1000),
          r.runsWallMs.map((x) => fmt.int(x)).join(' / '),
        ];
      }),
    );
  const roundsNote = `${cfg.stormRounds} round(s) with fresh tokens and a rotating order, median round by wall time`;
  log(`## New-token storm: ${cfg.stormTokens} distinct fresh tokens (${cfg.users} users), all ${cfg.stormTokens} requests at once on pre-opened connections; ${roundsNote}`);
  log(stormTable(storms));
  log(`## One-new-token storm: ${cfg.oneTokenRequests} requests at once, all with one fresh token; ${roundsNote}`);
  log(stormTable(oneToken));
  log('(hub calls (hub): GET /hub/api/user answered, from the hub\'s jupyterhub_request_duration_seconds_count{handler="SelfAPIHandler"};');
  log(' hub calls (own): ours, from its hubside_hub_api_calls_total{route="GET /user"})');
  log();

  const ratios = {};
  const ratioRows = [];
  for (const ref of [reference, referenceAsync]) {
    const r = {
      warmThroughput: w(ours).requestsPerSecond / w(ref).requestsPerSecond,
      warmP99: w(ours).preciseLatencyMs.p99 / w(ref).preciseLatencyMs.p99,
      warmCpuPerRequest: w(ours).serviceCpuMicrosPerRequest / w(ref).serviceCpuMicrosPerRequest,
      proxiedThroughput: proxied.ours.requestsPerSecond / proxied[ref.key].requestsPerSecond,
      stormWall: storms.ours.wallMs / storms[ref.key].wallMs,
      stormP99: storms.ours.latencyMs.p99 / storms[ref.key].latencyMs.p99,
      stormHubCalls: storms.ours.hubUserCalls / storms[ref.key].hubUserCalls,
      oneTokenP99: oneToken.ours.latencyMs.p99 / oneToken[ref.key].latencyMs.p99,
      oneTokenHubCalls: oneToken.ours.hubUserCalls / oneToken[ref.key].hubUserCalls,
    };
    ratios[ref.key] = r;
    ratioRows.push([
      `ours / ${ref.name}`,
      fmt.ratio(r.warmThroughput),
      fmt.ratio(r.warmP99),
      fmt.ratio(r.warmCpuPerRequest),
      fmt.ratio(r.proxiedThroughput),
      fmt.ratio(r.stormWall),
      fmt.ratio(r.stormP99),
      `${storms.ours.hubUserCalls}/${storms[ref.key].hubUserCalls}`,
      fmt.ratio(r.oneTokenP99),
      `${oneToken.ours.hubUserCalls}/${oneToken[ref.key].hubUserCalls}`,
    ]);
  }
  results.ratios = ratios;
  log('## Ratios, ours / reference (throughput: higher is better; p99, wall, CPU and hub calls: lower is better)');
  log(
    table(
      ['', 'warm req/s', 'warm p99', 'CPU/req', 'proxied req/s', 'storm wall', 'storm p99', 'storm hub calls', '1-token p99', '1-token hub calls'],
      ratioRows,
    ),
  );
  log();

  // The issue's goal is set against JupyterHub's HubAuthenticated handler as documented (the
  // `reference`). The async variant is a stronger Python baseline we built; its ratio is printed
  // as a stretch goal so the comparison stays honest.
  const judge = (ref) => {
    const throughputRatio = w(ours).requestsPerSecond / w(ref).requestsPerSecond;
    const p99Lower = w(ours).preciseLatencyMs.p99 < w(ref).preciseLatencyMs.p99;
    return { throughputRatio, p99Lower, met: throughputRatio >= 5 && p99Lower, refP99: w(ref).preciseLatencyMs.p99 };
  };
  const goal = judge(reference);
  const stretch = judge(referenceAsync);
  results.goal = { target: 'warm throughput >= 5x HubAuthenticated, with a lower p99', ...goal };
  results.stretchGoal = { target: 'the same against the async get_user variant', ...stretch };
  for (const [label, g] of [
    ['goal (warm throughput >= 5x HubAuthenticated, and a lower p99)', goal],
    ['stretch (the same against the async get_user variant)', stretch],
  ]) {
    log(
      `${label}: ${g.met ? 'MET' : 'NOT MET'} ` +
        `(${fmt.ratio(g.throughputRatio)} throughput; p99 ${fmt.ms(w(ours).preciseLatencyMs.p99)} ms vs ${fmt.ms(g.refP99)} ms)`,
    );
  }
  const other = Math.max(...all.flatMap((s) => warmSummary[s.key] && results.warm.runs[s.key].map((r) => r.otherCpuSeconds / r.seconds)));
  if (other > 0.25) {
    log(
      `note: other processes used up to ${(other * 100).toFixed(0)}% of a core during the warm runs (of ${results.machine.cores}); ` +
        'absolute numbers are noisy, CPU per request and the alternating rounds are the steadier comparison',
    );
  }
}

// Runnable directly: node bench/hub-auth/index.mjs [--quick] [--cpu-prof DIR]
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const outcome = await run(parseOptions(process.argv.slice(2)));
  process.exitCode = outcome.ok ? 0 : 1;
}

export { parseOptions };
