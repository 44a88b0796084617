// bench/usage: the usage-collector's main jobs as their input grows.
//
//   node bench/usage/index.mjs [--quick]
//
// 1. One poll of a hub with 2,000 users, 500 of them running: wall time and hub requests per poll.
//    The hub is a loopback stand-in that answers GET /hub/api/users?state=active exactly as
//    JupyterHub 3 does (paginated model, `servers` dict); 500 real single-user servers do not fit
//    on a laptop. The collector code under test is the real one (HubClient, reconcile, Postgres/PGlite).
// 2. Statements over N students x D days of sessions (generated rows): one student, one course
//    (100 students), the whole hub for a month.
// 3. The same statements computed from raw sessions and from the daily rollups (after
//    retention moved the raw rows into them), with the ratio; both must agree to the cent.
import { createServer } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { sql } from 'kysely';
import { createDatabase, migrate, resolveSettings } from '@hubside/service-kit';

export const name = 'usage';

const UC = new URL('../../services/usage-collector/dist/', import.meta.url);
const load = (p) => import(new URL(p, UC).href);

function fakeHub({ users, running }) {
  let requests = 0;
  const started = new Date(Date.now() - 3_600_000).toISOString();
  const model = (i) => ({
    kind: 'user',
    name: `student-${i}`,
    admin: false,
    groups: [`course-${i % 20}`],
    server: i < running ? `/user/student-${i}/` : null,
    pending: null,
    last_activity: started,
    servers: i < running ? { '': { name: '', ready: true, pending: null, stopped: false, started, last_activity: started, url: `/user/student-${i}/`, user_options: { profile: i % 2 ? 'small' : 'large' } } } : {},
  });
  const server = createServer((req, res) => {
    requests += 1;
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/hub/api/users') {
      const active = url.searchParams.get('state') === 'active';
      const all = Array.from({ length: active ? running : users }, (_, i) => i);
      const offset = Number(url.searchParams.get('offset') ?? 0);
      const limit = Number(url.searchParams.get('limit') ?? 200);
      const items = all.slice(offset, offset + limit).map(model);
      const next = offset + limit < all.length ? { offset: offset + limit, limit, url: `${url.pathname}?offset=${offset + limit}` } : null;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ items, _pagination: { offset, limit, total: all.length, next } }));
      return;
    }
    res.statusCode = 404;
    res.end('{}');
  });
  return { server, count: () => requests, reset: () => (requests = 0) };
}

const ms = (t0) => Math.round((performance.now() - t0) * 10) / 10;

async function timeIt(fn, runs = 3) {
  const times = [];
  let result;
  for (let i = 0; i < runs; i += 1) {
    const t0 = performance.now();
    result = await fn();
    times.push(ms(t0));
  }
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(times.length / 2)], result };
}

export async function run(opts = {}) {
  const quick = Boolean(opts.quick);
  const failures = [];
  const out = (line) => process.stdout.write(`${line}\n`);
  const load1 = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');
  out(`# bench/usage on ${os.cpus()[0]?.model ?? 'unknown CPU'} x ${os.cpus().length} cores, node ${process.version}, ${process.env.DATABASE_URL ? 'Postgres' : 'PGlite'}; load average ${load1()}`);
  const { buildApp, configSchema } = await load('index.js');
  const { buildStatement, monthStart, sortCards } = await load('pricing.js');
  const { loadSessions, loadUsage } = await load('usage-source.js');
  const { rollupSessions } = await load('retention.js');
  const config = configSchema.parse({
    profiles: { small: { cpuGuarantee: 0.5, memGuaranteeGiB: 1 }, large: { cpuGuarantee: 2, memGuaranteeGiB: 8 } },
    rateCards: [{ id: 'b', effectiveFrom: '2020-01-01', profileHour: { small: '0.05', large: '0.20' }, incrementSeconds: 60, freeAllowancePerMonth: '1' }],
    attribution: { rule: 'split' },
  });

  // 1. polling
  const dir = await mkdtemp(join(os.tmpdir(), 'hubside-bench-usage-'));
  const hub = fakeHub({ users: 2000, running: 500 });
  await new Promise((r) => hub.server.listen(0, '127.0.0.1', r));
  const hubUrl = `http://127.0.0.1:${hub.server.address().port}/hub/api`;
  const settings = resolveSettings('usage-collector', { JUPYTERHUB_API_URL: hubUrl, JUPYTERHUB_API_TOKEN: 'bench-token-0123456789', HUBSIDE_DATA_DIR: dir, HUBSIDE_LOG_LEVEL: 'silent', ...(process.env.DATABASE_URL ? { DATABASE_URL: process.env.DATABASE_URL } : {}) });
  const app = await buildApp({ settings, config, logger: false, defaultMetrics: false, autoPoll: false });
  try {
    await app.ready();
    await app.db.deleteFrom('sessions').execute();
    hub.reset();
    const t0 = performance.now();
    const first = await app.usagePoller.pollOnce();
    const firstMs = ms(t0);
    const firstRequests = hub.count();
    hub.reset();
    const steady = await timeIt(() => app.usagePoller.pollOnce(), quick ? 3 : 7);
    const steadyRequests = hub.count() / (quick ? 3 : 7);
    out(`poll 2000 users / 500 running: first poll ${firstMs} ms (${first.opened} sessions opened, ${firstRequests} hub requests); steady poll median ${steady.median} ms, ${steadyRequests} hub requests/poll`);
    if (first.opened !== 500) failures.push(`first poll opened ${first.opened} sessions, expected 500`);
  } finally {
    await app.close();
    hub.server.close();
  }

  // 2 + 3. statements over generated sessions
  const students = quick ? 1000 : 10_000;
  const days = quick ? 30 : 90;
  // No statement timeout: generating 900,000 rows in one statement is set-up, not what is measured.
  const database = await createDatabase({ databaseUrl: process.env.DATABASE_URL, dataDir: dir, schema: 'usage_bench', statementTimeoutMs: 0 });
  try {
    const { migrations } = await load('migrations/index.js');
    await migrate(database, migrations);
    const db = database.db;
    await db.deleteFrom('sessions').execute();
    await db.deleteFrom('daily_usage').execute();
    const end = Date.UTC(2026, 9, 1);
    const start = end - days * 86_400_000;
    const t0 = performance.now();
    // One 1-3 h session per student per day, course = student % 100.
    await sql`
      insert into sessions (user_name, server_name, started, profile, user_options, resources, groups, first_seen, last_seen, stopped, stop_observed, stop_source)
      select 'student-' || s, '', t, p, jsonb_build_object('profile', p), '{"cpuGuarantee":0.5,"cpuLimit":1,"memGuaranteeGiB":1,"memLimitGiB":2,"gpus":0}'::jsonb,
             jsonb_build_array('course-' || (s % 100)), t, t + (1 + s % 3) * interval '1 hour', t + (1 + s % 3) * interval '1 hour', t + (1 + s % 3) * interval '1 hour' + interval '30 seconds', 'poll'
      from generate_series(0, ${students - 1}) s, generate_series(0, ${days - 1}) d,
           lateral (select to_timestamp(${start / 1000} + d * 86400 + (s % 600) * 60) as t, case when s % 2 = 0 then 'small' else 'large' end as p) x`.execute(db);
    out(`generated ${students * days} sessions (${students} students x ${days} days) in ${ms(t0)} ms`);

    const month = { from: Date.UTC(2026, 8, 1), to: Date.UTC(2026, 9, 1) };
    const cards = sortCards(config.rateCards);
    // Exactly what GET api/statements does after the access check: load (raw + rollups), then price.
    const statement = async (filter) => {
      const loaded = await loadUsage(db, filter, { from: monthStart(month.from), to: month.to, now: new Date(month.to), cards, cuts: [month.from] });
      return buildStatement({ ...loaded, from: month.from, to: month.to, cards, currency: 'USD', rule: 'split', order: [] });
    };
    const report = async (label) => {
      const one = await timeIt(() => statement({ users: ['student-7'] }));
      const course = await timeIt(() => statement({ groups: ['course-7'] }));
      const whole = await timeIt(() => statement({}), quick ? 1 : 3);
      out(`statement for a month from ${label}: one student ${one.median} ms; one course (${course.result.users.length} students) ${course.median} ms; whole hub (${whole.result.users.length} students, total ${whole.result.total.net}) ${whole.median} ms`);
      return { one, course, whole };
    };
    const raw = await report('raw sessions');
    // The reference: every session of the month loaded and priced one by one in JavaScript (what
    // statements did before whole-day ranges were summed in SQL); it must give the same statement.
    const perSession = await timeIt(async () => {
      const sessionsByUser = await loadSessions(db, {}, month.from, month.to, new Date(month.to));
      return buildStatement({ sessionsByUser, from: month.from, to: month.to, cards, currency: 'USD', rule: 'split', order: [] });
    }, 1);
    out(`whole hub priced session by session (reference): ${perSession.median} ms; summed in SQL: ${raw.whole.median} ms; ratio ${(perSession.median / Math.max(raw.whole.median, 0.01)).toFixed(1)}x`);
    if (JSON.stringify(perSession.result) !== JSON.stringify(raw.whole.result)) failures.push('the statement summed in SQL differs from the one priced session by session');
    const r0 = performance.now();
    const rolled = await rollupSessions(db, new Date(end + 86_400_000), config.rateCards);
    out(`rollup of ${rolled.sessions} sessions into ${rolled.days} daily rows: ${ms(r0)} ms`);
    const fromRollups = await report('rollups');
    const ratio = (a, b) => (a.median / Math.max(b.median, 0.01)).toFixed(1);
    out(`raw/rollup time ratio: one student ${ratio(raw.one, fromRollups.one)}x, one course ${ratio(raw.course, fromRollups.course)}x, whole hub ${ratio(raw.whole, fromRollups.whole)}x`);
    out(`load average at the end ${load1()}`);
    for (const k of ['one', 'course', 'whole']) {
      if (JSON.stringify(raw[k].result) !== JSON.stringify(fromRollups[k].result)) failures.push(`the ${k} statement from rollups differs from the raw one`);
    }
  } finally {
    await database.destroy();
    await rm(dir, { recursive: true, force: true });
  }
  return { ok: failures.length === 0, failures };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false } } });
  const r = await run(values);
  if (!r.ok) {
    process.stderr.write(`${r.failures.join('\n')}\n`);
    process.exit(1);
  }
}
