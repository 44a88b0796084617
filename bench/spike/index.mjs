// bench/spike: the first morning of term. 500 users (quick: 100) arrive within a minute (quick:
// 15 s) against a real JupyterHub, while the usage collector polls it every 2 s. Each user does
// what a student's first minutes cost: their profile list, a resolve, their quota and usage,
// credentials and env from the data gateway. Every service runs with its default limits (rate
// limits and load shedding on), so 429/503 count as errors here.
//
// Reference, side by side: the same users' GET /hub/api/user on the same hub at the same time
// (what JupyterHub itself answers under the same spike); the table prints our p99 / the hub's.
//
// Full runs add a 10-minute memory soak: a bounded loop of 40 users cycling through the same
// requests, heap sampled every 20 s after a forced GC when available; the heap must stay flat
// (last third's median within 25% + 8 MiB of the first third's).
//
//   node bench/spike/index.mjs [--quick] [--no-soak]
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { resolveSettings } from '@hubside/service-kit';
import { createTestDatabase, startHub } from '@hubside/testing';
import { Agent, request } from 'undici';

export const name = 'spike';

const dist = (svc) => import(new URL(`../../services/${svc}/dist/app.js`, import.meta.url).href);
const SETTINGS = {
  full: { users: 500, windowMs: 60_000, soakMs: 10 * 60_000, soakUsers: 40, sampleMs: 20_000 },
  quick: { users: 100, windowMs: 15_000, soakMs: 0, soakUsers: 0, sampleMs: 0 },
};
const pct = (sorted, q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] : NaN);
const f = (n, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');
const MiB = (b) => b / 1024 / 1024;

function gc() {
  // The soak compares heaps after a full collection when the runtime allows it.
  try {
    setFlagsFromString('--expose-gc');
    const collect = runInNewContext('gc');
    collect();
  } catch {
    // Without it, the medians of several samples still show a trend.
  }
}

function countingBackend() {
  const backend = {
    name: 'spike-sts',
    calls: 0,
    async issue(req) {
      backend.calls += 1;
      await new Promise((r) => setTimeout(r, 20));
      return {
        provider: req.dataset.provider,
        credentials: { accessKeyId: `AKSPIKE${backend.calls}`, secretAccessKey: 'spike-secret', sessionToken: 'spike-session' },
        expiration: new Date(Date.now() + req.durationSeconds * 1000),
      };
    },
  };
  return backend;
}

export async function run(opts = {}) {
  const cfg = opts.quick ? SETTINGS.quick : SETTINGS.full;
  const soak = !opts.quick && !opts.noSoak && cfg.soakMs > 0;
  const failures = [];
  const log = (s) => process.stdout.write(`${s}\n`);
  const machine = `${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, node ${process.version}`;
  log(`machine: ${machine}; load before: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);

  const users = Array.from({ length: cfg.users }, (_, i) => `student-${String(i).padStart(3, '0')}`);
  const database = await createTestDatabase({ schemas: ['profile_api', 'usage_collector', 'data_gateway'] });
  const hub = await startHub({
    // Users reach the services through the `user` role, as the README's hub config does.
    roles: [{ name: 'user', scopes: ['self', 'access:services'] }],
    startTimeoutMs: 120_000,
  });
  const apps = [];
  const agent = new Agent({ connections: 128, keepAliveTimeout: 10_000 });
  try {
    log(`creating ${users.length} users and tokens on a real JupyterHub…`);
    for (let i = 0; i < users.length; i += 50) await hub.api('POST', '/users', { usernames: users.slice(i, i + 50) });
    await hub.createGroup('class-a', users.filter((_, i) => i % 2 === 0));
    const tokens = {};
    for (let i = 0; i < users.length; i += 5) {
      await Promise.all(users.slice(i, i + 5).map(async (u) => (tokens[u] = await hub.createToken(u, { note: 'spike' }))));
    }

    const env = {
      JUPYTERHUB_API_URL: hub.hubApiUrl,
      JUPYTERHUB_API_TOKEN: hub.adminToken,
      HUBSIDE_DATA_DIR: database.dataDir,
      HUBSIDE_LOG_LEVEL: 'warn',
      ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
    };
    const profiles = await dist('profile-api');
    const usage = await dist('usage-collector');
    const gateway = await dist('data-gateway');
    const backend = countingBackend();
    const { communityProfiles } = await import(new URL('./profiles.mjs', import.meta.url).href);
    const pa = await profiles.buildApp({ settings: resolveSettings('profile-api', env), config: profiles.configSchema.parse({ profiles: communityProfiles }), logger: false, defaultMetrics: false });
    const uc = await usage.buildApp({ settings: resolveSettings('usage-collector', env), config: usage.configSchema.parse({}), logger: false, defaultMetrics: false, pollIntervalMs: 2000 });
    const gw = await gateway.buildApp(
      {
        settings: resolveSettings('data-gateway', env),
        config: gateway.configSchema.parse({
          datasets: { home: { provider: 's3-compatible', bucket: 'spike', endpoint: 'http://127.0.0.1:9', prefix: 'home/{username}/', access: 'read-write', s3: { roleArn: 'arn:aws:iam:::role/r' } } },
        }),
        logger: false,
        defaultMetrics: false,
      },
      { backends: { 's3-compatible': backend } },
    );
    for (const app of [pa, uc, gw]) {
      apps.push(app);
      await app.listen({ host: '127.0.0.1', port: 0 });
    }
    const base = (app, svc) => `http://127.0.0.1:${app.server.address().port}/services/${svc}/`;
    const P = base(pa, 'profile-api');
    const U = base(uc, 'usage-collector');
    const G = base(gw, 'data-gateway');

    const samples = new Map();
    const errors = new Map();
    async function call(label, url, token, init = {}) {
      const t0 = performance.now();
      let status = 0;
      try {
        const res = await request(url, { dispatcher: agent, method: init.method ?? 'GET', headers: { authorization: `token ${token}`, ...(init.body ? { 'content-type': 'application/json' } : {}) }, body: init.body ? JSON.stringify(init.body) : undefined, headersTimeout: 60_000, bodyTimeout: 60_000 });
        status = res.statusCode;
        if (status >= 300) {
          // Name the failure by its error code (HUBSIDE_ERR_...), so a 503 says which kind it was.
          const text = await res.body.text();
          status = `${status} ${/"code":"([A-Z_]+)"/.exec(text)?.[1] ?? ''}`.trim();
        } else {
          await res.body.dump();
        }
      } catch (err) {
        status = err.code ?? 'error';
      }
      const ms = performance.now() - t0;
      if (!samples.has(label)) samples.set(label, []);
      samples.get(label).push(ms);
      if (typeof status !== 'number' || status < 200 || status >= 300) {
        const key = `${label} ${status}`;
        errors.set(key, (errors.get(key) ?? 0) + 1);
      }
    }
    async function student(u) {
      const t = tokens[u];
      await Promise.all([
        call('hub GET /hub/api/user (reference)', `${hub.hubApiUrl}/user`, t),
        call('profile-api GET profiles', `${P}api/users/${u}/profiles`, t),
      ]);
      await call('profile-api POST resolve', `${P}api/users/${u}/resolve`, t, { method: 'POST', body: {} });
      await Promise.all([call('usage GET quota', `${U}api/users/${u}/quota`, t), call('usage GET usage', `${U}api/usage?user=${u}`, t)]);
      await Promise.all([call('gateway POST credentials', `${G}api/credentials`, t, { method: 'POST', body: { dataset: 'home' } }), call('gateway GET env', `${G}api/env`, t)]);
    }

    log(`spike: ${users.length} users arriving within ${cfg.windowMs / 1000} s; the collector polls every 2 s`);
    const load0 = os.loadavg()[0];
    const started = performance.now();
    await Promise.all(
      users.map(async (u, i) => {
        await new Promise((r) => setTimeout(r, (i * cfg.windowMs) / users.length));
        await student(u);
      }),
    );
    const wall = (performance.now() - started) / 1000;
    const rows = [...samples.entries()].map(([label, xs]) => {
      const s = [...xs].sort((a, b) => a - b);
      return { label, n: s.length, p50: pct(s, 0.5), p99: pct(s, 0.99), max: s.at(-1) };
    });
    const ref = rows.find((r) => r.label.startsWith('hub '));
    log(`\n${'request'.padEnd(36)} ${'n'.padStart(5)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'max ms'.padStart(8)} ${'p99/hub'.padStart(8)}`);
    for (const r of rows) log(`${r.label.padEnd(36)} ${String(r.n).padStart(5)} ${f(r.p50).padStart(8)} ${f(r.p99).padStart(8)} ${f(r.max).padStart(8)} ${f(r.p99 / ref.p99, 2).padStart(8)}`);
    const errorCount = [...errors.values()].reduce((a, b) => a + b, 0);
    log(`\nwall ${f(wall)} s, ${[...samples.values()].reduce((a, x) => a + x.length, 0)} requests, errors ${errorCount}${errorCount ? ` (${[...errors].map(([k, v]) => `${k}: ${v}`).join(', ')})` : ''}`);
    log(`STS calls ${backend.calls} for ${users.length} users; load average 1 min: ${f(load0, 2)} -> ${f(os.loadavg()[0], 2)}`);
    if (errorCount > 0) failures.push(`${errorCount} requests failed during the spike`);

    let soakResult;
    if (soak) {
      log(`\nsoak: ${cfg.soakUsers} users cycling for ${cfg.soakMs / 60_000} min, heap sampled every ${cfg.sampleMs / 1000} s`);
      const heap = [];
      const soakEnd = Date.now() + cfg.soakMs;
      let nextSample = Date.now() + cfg.sampleMs;
      let cycles = 0;
      samples.clear();
      errors.clear();
      // Bounded: the loop ends at soakEnd, and each pass is one round of every soak user.
      while (Date.now() < soakEnd) {
        await Promise.all(users.slice(0, cfg.soakUsers).map((u) => student(u)));
        cycles += 1;
        if (Date.now() >= nextSample) {
          gc();
          heap.push({ t: Math.round((cfg.soakMs - (soakEnd - Date.now())) / 1000), heapMiB: MiB(v8.getHeapStatistics().used_heap_size), rssMiB: MiB(process.memoryUsage().rss) });
          log(`  t=${heap.at(-1).t}s heap ${f(heap.at(-1).heapMiB)} MiB rss ${f(heap.at(-1).rssMiB)} MiB`);
          nextSample += cfg.sampleMs;
        }
      }
      const third = Math.max(1, Math.floor(heap.length / 3));
      const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
      const first = median(heap.slice(0, third).map((h) => h.heapMiB));
      const last = median(heap.slice(-third).map((h) => h.heapMiB));
      const soakErrors = [...errors.values()].reduce((a, b) => a + b, 0);
      log(`soak: ${cycles} rounds, heap median first third ${f(first)} MiB, last third ${f(last)} MiB (ratio ${f(last / first, 2)}), errors ${soakErrors}`);
      if (last > first * 1.25 + 8) failures.push(`heap grew during the soak: ${f(first)} -> ${f(last)} MiB`);
      if (soakErrors > 0) failures.push(`${soakErrors} requests failed during the soak`);
      soakResult = { cycles, heap, firstMiB: first, lastMiB: last, errors: soakErrors };
    }

    const dir = opts.resultsDir ?? new URL('../results/', import.meta.url).pathname;
    mkdirSync(dir, { recursive: true });
    const file = `${dir.replace(/\/$/, '')}/spike-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
    writeFileSync(file, JSON.stringify({ benchmark: name, mode: opts.quick ? 'quick' : 'full', machine, settings: cfg, wallSeconds: wall, rows, errors: Object.fromEntries(errors), stsCalls: backend.calls, loadAverage: os.loadavg(), soak: soakResult }, null, 2));
    return { ok: failures.length === 0, failures, file };
  } finally {
    await Promise.all(apps.map((a) => a.close()));
    await agent.close();
    await hub.stop();
    await database.drop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, 'no-soak': { type: 'boolean', default: false } } });
  const out = await run({ quick: values.quick, noSoak: values['no-soak'] });
  for (const f2 of out.failures) process.stderr.write(`FAILED: ${f2}\n`);
  process.exitCode = out.ok ? 0 : 1;
}
