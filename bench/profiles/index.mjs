// bench/profiles: a class-start storm against profile-api, beside the hub it sits next to.
//
//   node bench/profiles/index.mjs [--quick]
//
// 500 distinct users (the hub's service token asking on their behalf, as hub/profile_list.py
// does) fetch their profile list within one second, then each resolves a choice. We report p50
// and p99 and the JupyterHub API calls profile-api made. The reference is the hub itself: the
// same 500 users' `GET /hub/api/users/{name}` in the same one-second pattern, which is the least
// any group-aware profile_list callable must ask of the hub. Then the cost of the pure work
// (filtering a list, resolving a selection) as the document grows. Needs `npx tsc -b` first.

import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createTestDatabase, startHub } from '@hubside/testing';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..', '..');
const DIST = join(REPO, 'services', 'profile-api', 'dist');

export const name = 'profiles';

const SETTINGS = {
  full: { users: 500, windowMs: 1000, sizes: [[5, 2, 4], [25, 4, 8], [100, 8, 16], [200, 10, 30]], iterations: 2000 },
  quick: { users: 100, windowMs: 1000, sizes: [[5, 2, 4], [50, 5, 10]], iterations: 200 },
};

function percentile(sorted, q) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}
const ms = (n) => (Number.isFinite(n) ? (n >= 100 ? n.toFixed(0) : n.toFixed(1)) : 'n/a');

function table(headers, rows) {
  const cells = [headers, ...rows].map((r) => r.map(String));
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

/** Fire `fn(i)` for i < n spread evenly over `windowMs`; resolve with each call's latency in ms. */
async function storm(n, windowMs, fn) {
  const started = performance.now();
  const calls = Array.from({ length: n }, (_, i) => new Promise((done, fail) => {
    setTimeout(async () => {
      const t0 = performance.now();
      try {
        await fn(i);
        done(performance.now() - t0);
      } catch (err) {
        fail(err);
      }
    }, (i * windowMs) / n);
  }));
  const latencies = await Promise.all(calls);
  return { latencies: latencies.sort((a, b) => a - b), wallMs: performance.now() - started };
}

function hubCalls(text) {
  let total = 0;
  for (const line of text.split('\n')) if (line.startsWith('hubside_hub_api_calls_total{')) total += Number(line.split(' ').at(-1));
  return total;
}

function syntheticDocument(profiles, options, choices) {
  return Array.from({ length: profiles }, (_, p) => ({
    display_name: `Profile ${p}`,
    slug: `p${p}`,
    default: p === 0,
    allowed_groups: p % 3 === 2 ? ['gpu-users'] : undefined,
    kubespawner_override: { cpu_limit: 2, environment: { P: String(p) } },
    profile_options: Object.fromEntries(Array.from({ length: options }, (_, o) => [`o${o}`, {
      display_name: `Option ${o}`,
      choices: Object.fromEntries(Array.from({ length: choices }, (_, c) => [`c${c}`, {
        display_name: `Choice ${c}`,
        allowed_groups: c % 4 === 3 ? ['instructors'] : undefined,
        kubespawner_override: { mem_limit: `${c + 1}G`, node_selector: { pool: `pool-${c}` } },
      }])),
      unlisted_choice: { enabled: o === 0, validation_regex: '^.+:.+$', kubespawner_override: { image: '{value}' } },
    }])),
  }));
}

export async function run(opts = {}) {
  const mode = opts.quick ? 'quick' : 'full';
  const cfg = SETTINGS[mode];
  const log = (line = '') => process.stdout.write(`${line}\n`);
  const failures = [];
  const { buildApp, configSchema } = await import(pathToFileURL(join(DIST, 'app.js')).href);
  const { profilesForUser, resolveSelection, RegexGuard } = await import(pathToFileURL(join(DIST, 'profiles', 'resolve.js')).href);
  const { readYamlFile, resolveSettings } = await import('@hubside/service-kit');
  // The example community's profiles: images, an unlisted image, memory 2-16 GB, a GPU profile.
  const communityProfiles = readYamlFile(join(REPO, 'examples', 'community.yaml'))['profile-api'].profiles;

  const cpus = os.cpus();
  log(`machine: ${cpus[0]?.model ?? 'unknown'}, ${cpus.length} cores, Node ${process.version}, ${mode} run`);

  const database = await createTestDatabase({ schemas: ['profile_api'] });
  const serviceToken = (await import('node:crypto')).randomBytes(32).toString('hex');
  const users = Array.from({ length: cfg.users }, (_, i) => `class-user-${i}`);
  const hub = await startHub({
    services: [{ name: 'profile-api', url: 'http://127.0.0.1:1', apiToken: serviceToken }],
    roles: [{ name: 'profile-api', scopes: ['read:users', 'list:groups', 'read:groups', 'access:services!service=profile-api'], services: ['profile-api'] }],
  });
  let app;
  const results = { machine: { cpu: cpus[0]?.model, cores: cpus.length, node: process.version }, mode };
  try {
    // One API call creates the class; half of it is in gpu-users.
    log(`creating ${users.length} users on a real JupyterHub…`);
    // In batches: one call for 500 users can outlast the harness's API timeout on a busy machine.
    for (let i = 0; i < users.length; i += 50) await hub.api('POST', '/users', { usernames: users.slice(i, i + 50) });
    await hub.api('POST', '/groups/gpu-users', { users: users.filter((_, i) => i % 2 === 0) });
    const settings = resolveSettings('profile-api', {
      HUBSIDE_DATA_DIR: database.dataDir,
      ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
      JUPYTERHUB_API_URL: hub.hubApiUrl,
      JUPYTERHUB_API_TOKEN: serviceToken,
    });
    app = await buildApp({ settings, config: configSchema.parse({ profiles: communityProfiles }), logger: false, defaultMetrics: false });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const base = `http://127.0.0.1:${app.server.address().port}/services/profile-api/`;
    const headers = { authorization: `token ${serviceToken}`, 'content-type': 'application/json' };
    const metrics = async () => hubCalls(await app.kit.metrics.registry.metrics());

    await fetch(`${base}api/users/${users[0]}/profiles`, { headers }).then((r) => r.arrayBuffer()); // warm the token
    const before = await metrics();
    const list = await storm(users.length, cfg.windowMs, async (i) => {
      const r = await fetch(`${base}api/users/${users[i]}/profiles`, { headers });
      const body = await r.json();
      if (r.status !== 200 || !Array.isArray(body)) throw new Error(`profiles for ${users[i]}: ${r.status}`);
    });
    const afterList = await metrics();
    const resolveRun = await storm(users.length, cfg.windowMs, async (i) => {
      const r = await fetch(`${base}api/users/${users[i]}/resolve`, { method: 'POST', headers, body: JSON.stringify({ profile: i % 2 === 0 ? 'gpu' : 'datascience', memory: '4G' }) });
      await r.arrayBuffer();
      if (r.status !== 200) throw new Error(`resolve for ${users[i]}: ${r.status}`);
    });
    const afterResolve = await metrics();
    const reference = await storm(users.length, cfg.windowMs, async (i) => {
      const r = await fetch(`${hub.hubApiUrl}/users/${users[i]}`, { headers: { authorization: `token ${hub.adminToken}` } });
      await r.arrayBuffer();
      if (r.status !== 200) throw new Error(`hub user ${users[i]}: ${r.status}`);
    });

    const row = (label, s, calls) => [label, ms(percentile(s.latencies, 0.5)), ms(percentile(s.latencies, 0.99)), ms(s.wallMs), calls];
    log();
    log(`class-start storm: ${users.length} distinct users within ${cfg.windowMs} ms (hub service token on their behalf)`);
    log(table(['step', 'p50 ms', 'p99 ms', 'wall ms', 'hub API calls'], [
      row('profile-api GET users/{name}/profiles', list, afterList - before),
      row('profile-api POST users/{name}/resolve', resolveRun, afterResolve - afterList),
      row('reference: hub GET /users/{name}', reference, users.length),
    ]));
    const ratio = percentile(list.latencies, 0.99) / percentile(reference.latencies, 0.99);
    log(`p99 ratio, profiles list / hub user lookup: ${ratio.toFixed(2)}x`);
    results.storm = {
      users: users.length,
      list: { p50: percentile(list.latencies, 0.5), p99: percentile(list.latencies, 0.99), hubCalls: afterList - before },
      resolve: { p50: percentile(resolveRun.latencies, 0.5), p99: percentile(resolveRun.latencies, 0.99), hubCalls: afterResolve - afterList },
      reference: { p50: percentile(reference.latencies, 0.5), p99: percentile(reference.latencies, 0.99) },
    };
    if (afterList - before > users.length) failures.push(`more than one hub call per user for the lists: ${afterList - before}`);
  } catch (err) {
    failures.push(err instanceof Error ? err.stack ?? err.message : String(err));
  } finally {
    await app?.close();
    await hub.stop();
    await database.drop();
  }

  // The pure work as the document grows: filter for a user, resolve a selection.
  const guard = new RegexGuard({ maxLength: 512, timeoutMs: 50 });
  const rows = [];
  results.growth = [];
  for (const [p, o, c] of cfg.sizes) {
    const doc = syntheticDocument(p, o, c);
    const selection = { profile: 'p0', o0: 'c1', o1: 'c2' };
    // Each measurement stops after `iterations` calls or one second, whichever comes first.
    const time = (fn) => {
      const t0 = performance.now();
      let n = 0;
      while (n < cfg.iterations && (n < 3 || performance.now() - t0 < 1000)) {
        fn();
        n += 1;
      }
      return ((performance.now() - t0) * 1000) / n;
    };
    const listUs = time(() => profilesForUser(doc, ['gpu-users']));
    const resolveUs = time(() => resolveSelection(doc, ['gpu-users'], selection, guard));
    const bytes = JSON.stringify(profilesForUser(doc, ['gpu-users'])).length;
    rows.push([`${p} profiles x ${o} options x ${c} choices`, p * o * c, listUs.toFixed(0), resolveUs.toFixed(0), (bytes / 1024).toFixed(0)]);
    results.growth.push({ profiles: p, options: o, choices: c, listUs, resolveUs, bytes });
  }
  log();
  log('cost as the document grows (one core, in process)');
  log(table(['document', 'choices', 'list µs', 'resolve µs', 'list KiB'], rows));

  const dir = resolve(opts.resultsDir ?? join(REPO, 'bench', 'results'));
  await mkdir(dir, { recursive: true });
  const file = join(dir, `profiles-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
  return { ok: failures.length === 0, failures, file };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, 'results-dir': { type: 'string' } }, strict: true });
  const outcome = await run({ quick: values.quick, resultsDir: values['results-dir'] });
  if (!outcome.ok) for (const f of outcome.failures) process.stderr.write(`${f}\n`);
  process.exitCode = outcome.ok ? 0 : 1;
}
