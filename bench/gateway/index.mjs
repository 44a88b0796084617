// bench/gateway: the data-gateway's credential path against one real JupyterHub.
//
//   node bench/gateway/index.mjs [--quick] [--cpu-prof DIR] [--results-dir DIR]
//
// Measures (1) credential requests per second and p99 on cache hits and on misses,
// (2) backend STS calls per user per hour under steady load, and (3) how the cost grows with
// the number of datasets and of a user's groups. The storage backend here is a stand-in with a
// fixed latency (BACKEND_MS) that counts calls: real STS latency belongs to the provider, and
// what this measures is the gateway's own cost and how many backend calls it saves. The
// end-to-end tests exercise the real Ceph RGW STS path.

import os from 'node:os';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import autocannon from 'autocannon';
import { buildApp, configSchema } from '@hubside/data-gateway';
import { resolveSettings } from '@hubside/service-kit';
import { startHub } from '@hubside/testing';

export const name = 'gateway';
const PREFIX = '/services/data-gateway/';
const BACKEND_MS = 20;
const SETTINGS = {
  full: { hitSeconds: 5, rounds: 3, users: 40, steadySeconds: 10, datasetCounts: [1, 10, 100, 1000], groupCounts: [1, 5, 20, 40] },
  quick: { hitSeconds: 3, rounds: 1, users: 10, steadySeconds: 4, datasetCounts: [1, 100], groupCounts: [1, 10] },
};

const pct = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
const fmt = (n, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');

function countingBackend() {
  const backend = {
    name: 'bench-sts',
    calls: 0,
    async issue(req) {
      backend.calls += 1;
      await new Promise((r) => setTimeout(r, BACKEND_MS));
      return {
        provider: req.dataset.provider,
        credentials: { accessKeyId: `AK${backend.calls}`, secretAccessKey: 'x', sessionToken: 'y' },
        expiration: new Date(Date.now() + req.durationSeconds * 1000),
      };
    },
  };
  return backend;
}

function datasetsConfig(count, lifetime = 3600, auditFlushSeconds = 1) {
  const datasets = {};
  for (let i = 0; i < count; i += 1) {
    datasets[`d${i}`] = {
      provider: 's3-compatible', bucket: 'bench', endpoint: 'http://127.0.0.1:9', region: i % 2 ? 'us-east-1' : 'eu-west-1',
      prefix: i === 0 ? 'groups/{group}/' : 'home/{username}/', access: 'read-write', maxLifetimeSeconds: lifetime,
      groups: i === 0 ? Array.from({ length: 60 }, (_, g) => `group-${g}`) : [], s3: { roleArn: 'arn:aws:iam:::role/r' },
    };
  }
  datasets.steady = { ...datasets.d1 ?? datasets.d0, prefix: 'home/{username}/', groups: [], maxLifetimeSeconds: 2 };
  return configSchema.parse({ hubRegion: 'us-east-1', datasets, audit: { flushSeconds: auditFlushSeconds } });
}

async function startGateway(hub, serviceToken, dataDir, config, backend) {
  const settings = resolveSettings('data-gateway', { JUPYTERHUB_API_URL: hub.hubApiUrl, JUPYTERHUB_API_TOKEN: serviceToken, HUBSIDE_DATA_DIR: dataDir, HUBSIDE_LOG_LEVEL: 'warn',
    // The per-user rate limit (1200/min) would answer most of a load test with 429.
    HUBSIDE_RATE_LIMIT_USER: '0',
    // autocannon shares this event loop, so load shedding (503 when the loop lags) would measure
    // the load generator; the service-kit tests cover shedding.
    HUBSIDE_MAX_EVENT_LOOP_DELAY: '0' });
  const app = await buildApp({ settings, config, logger: false, defaultMetrics: false }, { backends: { s3: backend, 's3-compatible': backend } });
  await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, backend, url: `http://127.0.0.1:${app.server.address().port}${PREFIX}` };
}

// The gateway runs in this process, so a V8 profile of this process during the cache-hit run is
// the gateway's profile (plus autocannon's share, which profile-summary.mjs reports apart).
async function startProfiler() {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return {
    async stop(dir, label) {
      const { profile } = await session.post('Profiler.stop');
      session.disconnect();
      await mkdir(dir, { recursive: true });
      const file = join(dir, `${label}-${Date.now()}.cpuprofile`);
      await writeFile(file, JSON.stringify(profile));
      return file;
    },
  };
}

async function timed(fn) {
  const t = performance.now();
  const r = await fn();
  return { ms: performance.now() - t, r };
}

async function post(url, token, body) {
  const res = await fetch(`${url}api/credentials`, { method: 'POST', headers: { authorization: `token ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  await res.arrayBuffer();
  return res.status;
}

export async function run(opts = {}) {
  const cfg = SETTINGS[opts.quick ? 'quick' : 'full'];
  const log = opts.log ?? ((line = '') => process.stdout.write(`${line}\n`));
  const failures = [];
  const dataDir = await mkdtemp(join(os.tmpdir(), 'hubside-bench-gw-'));
  const users = Array.from({ length: cfg.users }, (_, i) => `gw-user-${i}`);
  const maxGroups = Math.max(...cfg.groupCounts);
  const serviceToken = `bench-${crypto.randomUUID()}`;
  const hub = await startHub({
    users: [...users, ...cfg.groupCounts.map((n) => `member-of-${n}`)],
    services: [{ name: 'data-gateway', apiToken: serviceToken }],
    roles: [{ name: 'gateway-bench', scopes: ['access:services!service=data-gateway'], users: [...users, ...cfg.groupCounts.map((n) => `member-of-${n}`)] }],
  });
  const results = { machine: `${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}`, backendMs: BACKEND_MS, loadAverage: { before: os.loadavg() } };
  try {
    for (let g = 0; g < maxGroups; g += 1) await hub.createGroup(`group-${g}`, cfg.groupCounts.filter((n) => g < n).map((n) => `member-of-${n}`));
    const tokens = {};
    for (const u of [...users, ...cfg.groupCounts.map((n) => `member-of-${n}`)]) tokens[u] = await hub.createToken(u, { note: 'bench' });

    // (1) hits and misses, with 10 datasets.
    const backend = countingBackend();
    const gw = await startGateway(hub, serviceToken, join(dataDir, 'a'), datasetsConfig(10), backend);
    const wt = await startGateway(hub, serviceToken, join(dataDir, 'wt'), datasetsConfig(10, 3600, 0), countingBackend());
    try {
      for (const u of users) await fetch(`${gw.url}api/whoami`, { headers: { authorization: `token ${tokens[u]}` } }); // warm tokens
      const lat = [];
      const t0 = performance.now();
      const jobs = users.flatMap((u) => Array.from({ length: 9 }, (_, i) => [u, `d${i + 1}`]));
      let next = 0;
      await Promise.all(Array.from({ length: 20 }, async () => {
        while (next < jobs.length) {
          const [u, d] = jobs[next++];
          const { ms, r } = await timed(() => post(gw.url, tokens[u], { dataset: d }));
          if (r !== 200) failures.push(`miss ${u}/${d} → ${r}`);
          lat.push(ms);
        }
      }));
      lat.sort((a, b) => a - b);
      results.miss = { requests: jobs.length, rps: jobs.length / ((performance.now() - t0) / 1000), p99: pct(lat, 0.99), backendCalls: backend.calls };
      if (backend.calls !== jobs.length) failures.push(`misses made ${backend.calls} backend calls for ${jobs.length} distinct requests`);

      // Cache hits, next to a plain whoami on the same process, and with the audit in each mode:
      // 'batched' (the default: repeat deliveries counted and written once a second) and
      // 'write-through' (audit.flushSeconds 0: one row written before each answer, the old way).
      // The three take turns so that a disturbance on the machine hits them alike.
      const before = backend.calls + wt.backend.calls;
      await post(wt.url, tokens[users[0]], { dataset: 'd1' });
      const hitOpts = (url) => ({
        url: `${url}api/credentials`, method: 'POST', connections: 20, duration: cfg.hitSeconds,
        headers: { authorization: `token ${tokens[users[0]]}`, 'content-type': 'application/json' }, body: JSON.stringify({ dataset: 'd1' }),
      });
      const delivered = async (g) => {
        await g.app.gateway.auditLog.flush();
        const row = await g.app.db.selectFrom('issuances').select((eb) => eb.fn.sum('deliveries').as('n')).where('cached', '=', true).executeTakeFirst();
        return Number(row?.n ?? 0);
      };
      const runs = { whoami: [], batched: [], 'write-through': [] };
      for (let round = 0; round < cfg.rounds; round += 1) {
        const who = await autocannon({ url: `${gw.url}api/whoami`, connections: 20, duration: cfg.hitSeconds, headers: { authorization: `token ${tokens[users[0]]}` } });
        runs.whoami.push({ rps: who.requests.average, p99: who.latency.p99, non2xx: who.non2xx + who.errors });
        for (const [mode, g] of [['write-through', wt], ['batched', gw]]) {
          const auditBefore = await delivered(g);
          const profiler = opts.cpuProf && round === 0 ? await startProfiler() : null;
          const hit = await autocannon(hitOpts(g.url));
          if (profiler) (results.profiles ??= {})[mode] = await profiler.stop(opts.cpuProf, `gateway-hits-${mode}`);
          const audited = (await delivered(g)) - auditBefore;
          runs[mode].push({ rps: hit.requests.average, p99: hit.latency.p99, non2xx: hit.non2xx + hit.errors, answered: hit['2xx'], audited });
          // autocannon stops counting at the deadline, so up to one answer per connection goes uncounted.
          if (audited < hit['2xx'] || audited > hit['2xx'] + 20) failures.push(`${mode}: ${hit['2xx']} answers but ${audited} deliveries in the audit`);
        }
      }
      const median = (list) => [...list].sort((a, b) => a.rps - b.rps)[Math.floor(list.length / 2)];
      results.whoami = { ...median(runs.whoami), runs: runs.whoami.map((r) => r.rps) };
      results.hit = { ...median(runs.batched), runs: runs.batched.map((r) => r.rps) };
      results.hitWriteThrough = { ...median(runs['write-through']), runs: runs['write-through'].map((r) => r.rps) };
      results.hit.backendCalls = backend.calls + wt.backend.calls - before - 1;
      for (const [mode, list] of Object.entries(runs)) if (list.some((r) => r.non2xx > 0)) failures.push(`${mode}: ${list.reduce((a, r) => a + r.non2xx, 0)} requests failed`);
      if (results.hit.backendCalls !== 0) failures.push('cache hits reached the backend');
      results.goal = { target: 'cache hit within 2x of whoami', ratio: results.whoami.rps / results.hit.rps, met: results.whoami.rps / results.hit.rps <= 2 };

      // (2) steady load with a 2 s lifetime: backend calls per user per hour.
      const steadyBefore = backend.calls;
      const end = Date.now() + cfg.steadySeconds * 1000;
      let i = 0;
      await Promise.all(Array.from({ length: 10 }, async () => {
        while (Date.now() < end) await post(gw.url, tokens[users[i++ % users.length]], { dataset: 'steady' });
      }));
      const perUserHour = ((backend.calls - steadyBefore) / users.length / cfg.steadySeconds) * 3600;
      // Each user's first call comes at the start, then one per 0.8 x 2 s refresh period.
      const expected = ((Math.floor(cfg.steadySeconds / (0.8 * 2)) + 1) / cfg.steadySeconds) * 3600;
      results.steady = { lifetimeSeconds: 2, requests: i, perUserHour, expected, at3600s: perUserHour * (2 / 3600) };
      // More would mean the cache refreshes early (fewer is fine: a slow machine asks less often).
      const maxCalls = users.length * (Math.floor(cfg.steadySeconds / (0.8 * 2)) + 1);
      if (backend.calls - steadyBefore > maxCalls) failures.push(`steady load: ${perUserHour.toFixed(0)} backend calls per user per hour, more than the ${expected.toFixed(0)} the refresh rule allows`);
    } finally {
      await Promise.all([gw.app.close(), wt.app.close()]);
    }

    // (3) cost as datasets and groups grow.
    results.datasets = [];
    for (const n of cfg.datasetCounts) {
      const gwN = await startGateway(hub, serviceToken, join(dataDir, `n${n}`), datasetsConfig(n), countingBackend());
      try {
        const tok = tokens[users[0]];
        await fetch(`${gwN.url}api/datasets`, { headers: { authorization: `token ${tok}` } });
        const lat = [];
        for (let k = 0; k < 50; k += 1) lat.push((await timed(async () => (await fetch(`${gwN.url}api/datasets`, { headers: { authorization: `token ${tok}` } })).arrayBuffer())).ms);
        await post(gwN.url, tok, { dataset: 'steady' });
        const hitLat = [];
        for (let k = 0; k < 50; k += 1) hitLat.push((await timed(() => post(gwN.url, tok, { dataset: 'steady' }))).ms);
        lat.sort((a, b) => a - b);
        hitLat.sort((a, b) => a - b);
        results.datasets.push({ datasets: n, listP50: pct(lat, 0.5), listP99: pct(lat, 0.99), hitP50: pct(hitLat, 0.5) });
      } finally {
        await gwN.app.close();
      }
    }
    results.groups = [];
    const gwG = await startGateway(hub, serviceToken, join(dataDir, 'g'), datasetsConfig(1), countingBackend());
    try {
      for (const n of cfg.groupCounts) {
        const res = await fetch(`${gwG.url}api/credentials`, { method: 'POST', headers: { authorization: `token ${tokens[`member-of-${n}`]}`, 'content-type': 'application/json' }, body: JSON.stringify({ dataset: 'd0' }) });
        const body = await res.json();
        results.groups.push({ groups: n, status: res.status, prefixes: body.prefixes?.length ?? 0, note: res.status === 422 ? body.message.replace(/^.*would be /, 'policy ') : '' });
      }
    } finally {
      await gwG.app.close();
    }
  } finally {
    await hub.stop();
    await rm(dataDir, { recursive: true, force: true });
  }

  results.loadAverage.after = os.loadavg();
  const load = (l) => l.map((x) => x.toFixed(2)).join(' ');
  log(`gateway bench on ${os.hostname()}, ${results.machine}, node ${process.version}; stand-in backend ${BACKEND_MS} ms per call`);
  log(`load average (1/5/15 min) before ${load(results.loadAverage.before)}, after ${load(results.loadAverage.after)}`);
  log(`cache misses: ${results.miss.requests} distinct (user, dataset): ${fmt(results.miss.rps)} req/s, p99 ${fmt(results.miss.p99)} ms, ${results.miss.backendCalls} backend calls`);
  log(`cache hits (same user and dataset, 20 connections, median of ${cfg.rounds} x ${cfg.hitSeconds} s, taking turns):`);
  log('  route                                  req/s   p99 ms   whoami/this   runs (req/s)');
  const row = (label, r) => log(`  ${label.padEnd(36)} ${fmt(r.rps, 0).padStart(7)} ${fmt(r.p99, 0).padStart(8)} ${fmt(results.whoami.rps / r.rps, 2).padStart(12)}x   ${r.runs.map((x) => fmt(x, 0)).join(', ')}`);
  row('api/whoami (hub auth only)', results.whoami);
  row('credentials, audit batched (default)', results.hit);
  row('credentials, audit write-through', results.hitWriteThrough);
  log(`  batched / write-through throughput ${fmt(results.hit.rps / results.hitWriteThrough.rps, 2)}x; ${results.hit.backendCalls} backend calls; every answer is in the audit (${results.hit.audited} deliveries in ${results.hit.answered} answers counted)`);
  log(`  goal: ${results.goal.target}: ${fmt(results.goal.ratio, 2)}x, ${results.goal.met ? 'MET' : 'NOT MET'}; hit/miss throughput ${fmt(results.hit.rps / results.miss.rps, 1)}x`);
  if (results.profiles) log(`  CPU profiles of the first round: ${Object.values(results.profiles).join(', ')} (node bench/hub-auth/profile-summary.mjs FILE)`);
  log(`steady load (2 s lifetime): ${fmt(results.steady.perUserHour, 0)} backend calls per user per hour (expected ≤ ${fmt(results.steady.expected, 0)}); scaled to a 3600 s lifetime ≈ ${fmt(results.steady.at3600s, 2)}`);
  for (const d of results.datasets) log(`datasets=${d.datasets}: api/datasets p50 ${fmt(d.listP50, 2)} ms p99 ${fmt(d.listP99, 2)} ms; credentials cache hit p50 ${fmt(d.hitP50, 2)} ms`);
  for (const g of results.groups) log(`groups=${g.groups}: ${g.status} with ${g.prefixes} prefixes ${g.note}`);
  const dir = resolve(opts.resultsDir ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'results'));
  await mkdir(dir, { recursive: true });
  const file = join(dir, `gateway-${new Date().toISOString().replace(/[:.]/g, '-')}${opts.quick ? '-quick' : ''}.json`);
  await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
  return { ok: failures.length === 0, failures, results, file };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, 'cpu-prof': { type: 'string' }, 'results-dir': { type: 'string' } } });
  const r = await run({ quick: values.quick, cpuProf: values['cpu-prof'], resultsDir: values['results-dir'] });
  if (!r.ok) {
    process.stderr.write(`${r.failures.join('\n')}\n`);
    process.exit(1);
  }
}
