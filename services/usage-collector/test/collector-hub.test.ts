/**
 * The usage-collector against a real JupyterHub 3.0: polling real servers into sessions, the
 * usage API's access rules and validation, the pre-spawn quota hook, and a real `hubside
 * usage-collector` process killed with SIGKILL mid-session.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveSettings } from '@hubside/service-kit';
import { createTestDatabase, freePort, startHub, waitFor } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Kysely } from 'kysely';
import { buildApp, configSchema } from '../src/index.js';
import { rollupSessions } from '../src/retention.js';
import type { UsageDB } from '../src/usage.table.js';

const CLI = fileURLToPath(new URL('../../../packages/cli/bin/hubside.js', import.meta.url));
const HUB_DIR = fileURLToPath(new URL('../../../hub', import.meta.url));
const PREFIX = '/services/usage-collector/';
const SERVICE_TOKEN = randomBytes(24).toString('hex');

const rawConfig = {
  currency: 'EUR',
  profiles: {
    small: { cpuGuarantee: 0.5, cpuLimit: 1, memGuaranteeGiB: 1, memLimitGiB: 2 },
    large: { cpuGuarantee: 2, cpuLimit: 4, memGuaranteeGiB: 8, memLimitGiB: 16 },
  },
  rateCards: [
    { id: '2026', effectiveFrom: '2026-01-01', mode: 'profile-hour', profileHour: { small: '0.60', large: '3.60' }, incrementSeconds: 60, freeAllowancePerMonth: '1.00' },
  ],
  attribution: { rule: 'split' },
  access: { adminGroups: ['usage-admins'], managers: { prof: ['phys'] } },
  budgets: { default: { limit: '5', unit: 'currency', window: 'rolling', days: 30 } },
};
let config: ReturnType<typeof configSchema.parse>;
const webhookCalls: Record<string, unknown>[] = [];
let webhook: Server;

let hub: RunningHub;
let db: TestDatabase;
let cliDb: TestDatabase;
let app: FastifyInstance;
let port: number;
const tokens: Record<string, string> = {};

beforeAll(async () => {
  webhook = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => {
      webhookCalls.push(JSON.parse(body) as Record<string, unknown>);
      res.end('ok');
    });
  });
  const hookPort = await freePort();
  await new Promise<void>((r) => webhook.listen(hookPort, '127.0.0.1', r));
  config = configSchema.parse({ ...rawConfig, budgets: { ...rawConfig.budgets, webhook: `http://127.0.0.1:${hookPort}/hook` } });
  db = await createTestDatabase({ schemas: ['usage_collector'] });
  cliDb = await createTestDatabase({ schemas: ['usage_collector'] });
  port = await freePort();
  hub = await startHub({
    users: ['alice', 'bob', 'carol', 'dave', 'prof', 'root', 'ursula'],
    admins: ['root'],
    groups: { phys: ['alice', 'carol'], chem: ['bob', 'carol'], 'usage-admins': ['ursula'] },
    roles: [
      { name: 'usage-readers', scopes: ['access:services!service=usage-collector'], users: ['alice', 'bob', 'carol', 'dave', 'prof', 'root', 'ursula'] },
      {
        name: 'usage-collector',
        scopes: ['list:users', 'read:users', 'read:servers', 'read:groups', 'list:groups', 'access:services!service=usage-collector'],
        services: ['usage-collector'],
      },
    ],
    services: [{ name: 'usage-collector', url: `http://127.0.0.1:${port}`, apiToken: SERVICE_TOKEN }],
    extraConfig: [
      'import sys',
      `sys.path.insert(0, ${JSON.stringify(HUB_DIR)})`,
      'from usage_quota import make_usage_quota_hook',
      `c.Spawner.pre_spawn_hook = make_usage_quota_hook(${JSON.stringify(`http://127.0.0.1:${port}${PREFIX}`)}, ${JSON.stringify(SERVICE_TOKEN)}, fail_open=False)`,
    ].join('\n'),
  });
  const settings = resolveSettings('usage-collector', {
    JUPYTERHUB_API_URL: hub.hubApiUrl,
    JUPYTERHUB_API_TOKEN: SERVICE_TOKEN,
    HUBSIDE_DATA_DIR: db.dataDir,
    ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}),
  });
  app = await buildApp({ settings, config, logger: false, defaultMetrics: false, autoPoll: false });
  await app.listen({ host: '127.0.0.1', port });
  for (const u of ['alice', 'bob', 'carol', 'dave', 'prof', 'root', 'ursula']) tokens[u] = await hub.createToken(u, { note: 'usage test' });
}, 120_000);

afterAll(async () => {
  await app?.close();
  await hub?.stop();
  await db?.drop();
  await cliDb?.drop();
  await new Promise((r) => webhook?.close(r));
});

async function get(path: string, user: string) {
  const res = await app.inject({ method: 'GET', url: `${PREFIX}${path}`, headers: { authorization: `token ${tokens[user]}` } });
  return { status: res.statusCode, body: String(res.headers['content-type'] ?? '').includes('json') ? res.json() : res.body };
}

interface SessionOut {
  user: string;
  server: string;
  profile: string | null;
  started: string;
  stopped: string | null;
  stop_observed: string | null;
  stop_uncertainty_seconds: number | null;
  stop_source: string | null;
  resources: Record<string, number>;
}

async function sessionsOf(user: string): Promise<SessionOut[]> {
  const res = await get(`api/sessions?user=${encodeURIComponent(user)}&from=2026-01-01&to=2027-01-01`, 'root');
  expect(res.status).toBe(200);
  return (res.body as { sessions: SessionOut[] }).sessions;
}

async function hubServer(user: string, name = ''): Promise<{ started: string } | undefined> {
  const r = await hub.api<{ servers: Record<string, { started: string }> }>('GET', `/users/${user}`);
  return r.body.servers[name];
}

describe('collection from the real hub', () => {
  it('turns started and stopped servers (default and named, with profiles) into sessions', async () => {
    await hub.startServer('alice', { userOptions: { profile: 'small' } });
    await hub.startServer('carol', { name: 'gpu-work', userOptions: { profile: 'large' } });
    const aliceStarted = (await hubServer('alice'))!.started;
    const first = await app.usagePoller.pollOnce();
    expect(first).toMatchObject({ locked: true, servers: 2, opened: 2, closed: 0 });
    // Polling again changes nothing: same identity (user, server, hub start).
    expect(await app.usagePoller.pollOnce()).toMatchObject({ servers: 2, opened: 0, closed: 0 });

    const [alice] = await sessionsOf('alice');
    expect(alice).toMatchObject({ server: '', profile: 'small', stopped: null, started: new Date(aliceStarted).toISOString() });
    expect(alice!.resources).toMatchObject({ cpuGuarantee: 0.5, memGuaranteeGiB: 1 });
    const [carol] = await sessionsOf('carol');
    expect(carol).toMatchObject({ server: 'gpu-work', profile: 'large' });

    const lastSeenPoll = Date.now();
    await hub.stopServer('alice');
    const stoppedAt = Date.now();
    const after = await app.usagePoller.pollOnce();
    expect(after).toMatchObject({ servers: 1, closed: 1 });
    const [closed] = await sessionsOf('alice');
    expect(closed!.stop_source).toBe('poll');
    // The recorded stop is the last poll that saw it: no later than the real stop, and within one poll of it.
    const stopped = Date.parse(closed!.stopped!);
    expect(stopped).toBeLessThanOrEqual(stoppedAt);
    expect(stoppedAt - stopped).toBeLessThanOrEqual(Date.now() - lastSeenPoll + 1000);
    expect(closed!.stop_uncertainty_seconds).toBeGreaterThanOrEqual(0);
    expect(Date.parse(closed!.stop_observed!)).toBeGreaterThanOrEqual(stopped);

    // A restart of the same server is a new session; the old one stays single.
    await hub.startServer('alice', { userOptions: { profile: 'large' } });
    await app.usagePoller.pollOnce();
    await app.usagePoller.pollOnce();
    const two = await sessionsOf('alice');
    expect(two).toHaveLength(2);
    expect(two.map((s) => s.profile)).toEqual(['small', 'large']);
    await hub.stopServer('alice');
    await hub.stopServer('carol', 'gpu-work');
    await app.usagePoller.pollOnce();
    expect((await sessionsOf('carol'))[0]!.stopped).not.toBeNull();
  }, 90_000);

  it('exposes aggregate metrics without a label per user', async () => {
    const res = await app.inject({ method: 'GET', url: `${PREFIX}metrics`, headers: { authorization: `token ${SERVICE_TOKEN}` } });
    // The service token has no read:metrics: use the harness admin token instead.
    const body = res.statusCode === 200 ? res.body : (await app.inject({ method: 'GET', url: `${PREFIX}metrics`, headers: { authorization: `token ${hub.adminToken}` } })).body;
    expect(body).toMatch(/hubside_usage_polls_total\{result="ok",service="usage-collector"\} [1-9]/);
    expect(body).toContain("# TYPE hubside_usage_running_servers_by_group gauge");
    expect(body).not.toMatch(/user="/);
    expect(body).not.toContain('alice');
  });
});

describe('who sees what', () => {
  it('a student sees only themselves', async () => {
    expect((await get('api/usage?user=bob', 'alice')).status).toBe(403);
    expect((await get('api/usage?group=chem', 'alice')).status).toBe(403);
    expect((await get('api/statements?user=carol', 'alice')).status).toBe(403);
    // An unknown name answers like any other name the student may not see.
    expect((await get('api/usage?user=nobody-at-all', 'alice')).status).toBe(403);
    const own = await get('api/usage?from=2026-01-01&to=2027-01-01', 'alice');
    expect(own.status).toBe(200);
    const users = new Set((own.body as { rows: { user: string }[] }).rows.map((r) => r.user));
    expect([...users]).toEqual(['alice']);
    expect((await get('api/users/bob/quota', 'alice')).status).toBe(403);
  });

  it('an instructor sees only the groups they manage', async () => {
    expect((await get('api/usage?group=phys&from=2026-01-01&to=2027-01-01', 'prof')).status).toBe(200);
    expect((await get('api/usage?user=alice&from=2026-01-01&to=2027-01-01', 'prof')).status).toBe(200);
    expect((await get('api/usage?group=chem', 'prof')).status).toBe(403);
    expect((await get('api/usage?user=bob', 'prof')).status).toBe(403);
    const all = await get('api/usage?from=2026-01-01&to=2027-01-01', 'prof');
    const users = new Set((all.body as { rows: { user: string }[] }).rows.map((r) => r.user));
    expect([...users].sort()).toEqual(['alice', 'carol']);
  });

  it('a hub admin and the configured admin group see everything; unknown names are 404 for them', async () => {
    for (const who of ['root', 'ursula']) {
      expect((await get('api/usage?group=chem&from=2026-01-01&to=2027-01-01', who)).status).toBe(200);
      expect((await get('api/usage?user=nobody-at-all', who)).status).toBe(404);
      expect((await get('api/usage?group=no-such-group', who)).status).toBe(404);
    }
  });

  it('usage.csv escapes and carries the same rows', async () => {
    const res = await get('api/usage.csv?from=2026-01-01&to=2027-01-01', 'root');
    expect(res.status).toBe(200);
    const lines = String(res.body).trim().split('\r\n');
    expect(lines[0]).toBe('period,user,hours,cost_EUR,sessions');
    expect(lines.some((l) => l.includes(',alice,'))).toBe(true);
  });
});

describe('validation', () => {
  it.each([
    'api/usage?from=2026-05-01&to=2026-04-01',
    'api/usage?from=2026-05-01&to=2026-05-01',
    'api/usage?from=1900-01-01&to=2026-01-01',
    'api/usage?from=2026-13-45',
    'api/usage?from=2020-01-01&to=2026-01-01',
    'api/usage?granularity=hour',
    'api/usage?bogus=1',
    'api/statements?period=2026-13',
    'api/statements?period=2026-10&from=2026-10-01',
  ])('%s → 400', async (path) => {
    const res = await get(path, 'root');
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ statusCode: 400 });
  });

  it('malformed bodies and methods get a 4xx JSON error, never a 5xx', async () => {
    for (const method of ['POST', 'PUT', 'DELETE'] as const) {
      const res = await app.inject({
        method,
        url: `${PREFIX}api/usage`,
        headers: { authorization: `token ${tokens.root}`, 'content-type': 'application/json' },
        payload: '{"from": ',
      });
      expect(res.statusCode).toBeGreaterThanOrEqual(400);
      expect(res.statusCode).toBeLessThan(500);
      expect(res.json()).toMatchObject({ statusCode: res.statusCode });
    }
  });

  it('arbitrary query strings never cause a 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({ key: fc.constantFrom('from', 'to', 'user', 'group', 'granularity', 'period', 'x'), value: fc.string({ maxLength: 60 }) }),
        fc.constantFrom('api/usage', 'api/usage.csv', 'api/statements', 'api/sessions'),
        async ({ key, value }, route) => {
          const res = await get(`${route}?${key}=${encodeURIComponent(value)}`, 'root');
          expect(res.status).toBeLessThan(500);
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('statements', () => {
  it('equal a hand-computed fixture month to the cent, with the even-split rule', async () => {
    const t = (s: string) => new Date(s);
    const rows = [
      // erin: phys+chem. large 2:30:10 → 151 min billed → 9.06; small 1:00 → 0.60.
      ['erin', 'large', '2026-10-05T10:00:00Z', '2026-10-05T12:30:10Z', ['chem', 'phys']],
      ['erin', 'small', '2026-10-06T10:00:00Z', '2026-10-06T11:00:00Z', ['chem', 'phys']],
      // fred: phys. 30:30 → 31 min → 0.31, all inside the allowance.
      ['fred', 'small', '2026-10-07T10:00:00Z', '2026-10-07T10:30:30Z', ['phys']],
      // gina: three groups. 10 h → 6.00; and 1 h of a session that runs into November → 0.60.
      ['gina', 'small', '2026-10-08T00:00:00Z', '2026-10-08T10:00:00Z', ['bio', 'chem', 'phys']],
      ['gina', 'small', '2026-10-31T23:00:00Z', '2026-11-01T01:00:00Z', ['bio', 'chem', 'phys']],
    ] as const;
    await app.db
      .insertInto('sessions')
      .values(
        rows.map(([user, profile, start, stop, groups]) => ({
          user_name: user,
          server_name: '',
          started: t(start),
          profile,
          user_options: JSON.stringify({ profile }),
          resources: JSON.stringify(config.profiles[profile]),
          groups: JSON.stringify(groups),
          first_seen: t(start),
          last_seen: t(stop),
          stopped: t(stop),
          stop_observed: t(stop),
          stop_source: 'poll',
        })),
      )
      .execute();
    const res = await get('api/statements?period=2026-10', 'root');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      from: '2026-10-01T00:00:00.000Z',
      to: '2026-11-01T00:00:00.000Z',
      currency: 'EUR',
      attribution: 'split',
      users: [
        { user: 'erin', groups: ['chem', 'phys'], hours: '3.5028', gross: '9.66', allowance: '1.00', net: '8.66' },
        { user: 'fred', groups: ['phys'], hours: '0.5083', gross: '0.31', allowance: '0.31', net: '0.00' },
        { user: 'gina', groups: ['bio', 'chem', 'phys'], hours: '11.0000', gross: '6.60', allowance: '1.00', net: '5.60' },
      ],
      groups: [
        { group: 'bio', users: 1, net: '1.87', overlapping: false },
        { group: 'chem', users: 2, net: '6.20', overlapping: false },
        { group: 'phys', users: 3, net: '6.19', overlapping: false },
      ],
      unattributed: '0.00',
      total: { hours: '15.0111', gross: '16.57', net: '14.26' },
    });
    // An instructor of phys gets only the phys line.
    const prof = await get('api/statements?period=2026-10', 'prof');
    expect(prof.status).toBe(200);
    expect((prof.body as { groups: { group: string }[] }).groups.map((g) => g.group)).toEqual(['phys']);

    // Retention folds the month into daily rollups and deletes the raw rows: the API answers the same.
    const usage = await get('api/usage?from=2026-10-01&to=2026-11-02&granularity=day', 'root');
    const gina = await get('api/statements?period=2026-10&user=gina', 'root');
    const rolled = await rollupSessions(app.db as Kysely<UsageDB>, new Date('2026-11-10T00:00:00Z'), config.rateCards);
    expect(rolled.sessions).toBe(rows.length);
    expect((await get('api/sessions?user=erin&from=2026-10-01&to=2026-11-01', 'root')).body).toEqual({ sessions: [] });
    expect(await get('api/statements?period=2026-10', 'root')).toEqual(res);
    expect(await get('api/statements?period=2026-10', 'prof')).toEqual(prof);
    expect(await get('api/statements?period=2026-10&user=gina', 'root')).toEqual(gina);
    expect(await get('api/usage?from=2026-10-01&to=2026-11-02&granularity=day', 'root')).toEqual(usage);
  });
});

describe('budgets and the pre-spawn hook', () => {
  it('refuses an over-budget user with the message, and lets an under-budget user spawn', async () => {
    // dave ran a large server from 09:00 to 12:00 UTC two days ago: 10.80 EUR over a 5 EUR rolling
    // budget. The hours are fixed: each UTC day's piece of a session is rounded up to the increment
    // on its own, so a 3-hour session across midnight is billed 181 minutes (CI once ran at 21:04).
    const today = new Date();
    const start = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate(), 9) - 2 * 86_400_000;
    await app.db
      .insertInto('sessions')
      .values({
        user_name: 'dave',
        server_name: '',
        started: new Date(start),
        profile: 'large',
        user_options: JSON.stringify({ profile: 'large' }),
        resources: JSON.stringify(config.profiles.large),
        groups: '[]',
        first_seen: new Date(start),
        last_seen: new Date(start + 3 * 3_600_000),
        stopped: new Date(start + 3 * 3_600_000),
        stop_observed: new Date(start + 3 * 3_600_000),
        stop_source: 'poll',
      })
      .execute();
    const quota = await get('api/users/dave/quota', 'dave');
    expect(quota.status).toBe(200);
    expect(quota.body).toMatchObject({ allow_server_launch: false, used: '10.80', limit: '5.00', unit: 'currency', window: 'rolling-30d' });
    const message = (quota.body as { message: string }).message;
    expect(message).toContain('used up');

    const refused = await hub.api<{ message: string }>('POST', '/users/dave/server', {}, tokens.dave);
    expect(refused.status).toBe(403);
    expect(refused.body.message).toContain(message);

    const ok = await get('api/users/bob/quota', 'bob');
    expect(ok.body).toMatchObject({ allow_server_launch: true });
    await hub.startServer('bob');
    await hub.stopServer('bob');
    expect((await get('api/users/nobody-at-all/quota', 'root')).status).toBe(404);
  }, 60_000);

  it('records 75/90/100 % warnings once per window, with the webhook', async () => {
    // The refused spawn above already checked dave's quota; checking again adds nothing.
    expect((await get('api/users/dave/quota', 'dave')).status).toBe(200);
    const events = await get('api/events', 'root');
    expect(events.status).toBe(200);
    const dave = (events.body as { events: { subject: string; threshold: number }[] }).events.filter((e) => e.subject === 'dave');
    expect(dave.map((e) => e.threshold)).toEqual([75, 90, 100]);
    await waitFor(async () => webhookCalls.filter((c) => c.subject === 'dave').length === 3, { timeoutMs: 5000, what: 'three webhook calls' });
    // A student sees only their own events.
    const bobs = await get('api/events', 'bob');
    expect((bobs.body as { events: unknown[] }).events).toEqual([]);
  });
});

describe('a real collector process killed mid-session', () => {
  let child: ChildProcess | undefined;
  const cliPort = { value: 0 };

  async function startCli(): Promise<ChildProcess> {
    const file = join(cliDb.dataDir, 'community.yaml');
    await writeFile(file, `usage-collector:\n  profiles:\n    small: { cpuGuarantee: 0.5, memGuaranteeGiB: 1 }\n`);
    const proc = spawn(process.execPath, [CLI, 'usage-collector'], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        JUPYTERHUB_API_URL: hub.hubApiUrl,
        JUPYTERHUB_API_TOKEN: SERVICE_TOKEN,
        JUPYTERHUB_SERVICE_URL: `http://127.0.0.1:${cliPort.value}`,
        HUBSIDE_CONFIG: file,
        HUBSIDE_DATA_DIR: cliDb.dataDir,
        HUBSIDE_POLL_INTERVAL: '0.5',
        HUBSIDE_LOG_LEVEL: 'warn',
        ...(cliDb.databaseUrl ? { DATABASE_URL: cliDb.databaseUrl } : {}),
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    return proc;
  }

  async function cliSessions(): Promise<SessionOut[] | null> {
    try {
      const res = await fetch(`http://127.0.0.1:${cliPort.value}${PREFIX}api/sessions?user=alice&from=2026-01-01&to=2027-01-01`, {
        headers: { authorization: `token ${tokens.root}` },
      });
      if (res.status !== 200) return null;
      return ((await res.json()) as { sessions: SessionOut[] }).sessions;
    } catch {
      return null;
    }
  }

  afterAll(() => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
  });

  it('yields exactly one session after SIGKILL and restart', async () => {
    cliPort.value = await freePort();
    await hub.startServer('alice', { userOptions: { profile: 'small' } });
    child = await startCli();
    await waitFor(async () => ((await cliSessions())?.length ?? 0) === 1, { timeoutMs: 60_000, intervalMs: 250, what: 'the collector process to record alice' });
    child.kill('SIGKILL');
    await waitFor(async () => child!.exitCode !== null || child!.signalCode !== null, { timeoutMs: 10_000, what: 'the killed collector to exit' });

    child = await startCli();
    await waitFor(async () => (await cliSessions()) !== null, { timeoutMs: 60_000, intervalMs: 250, what: 'the restarted collector' });
    const started = Date.parse((await hubServer('alice'))!.started);
    await hub.stopServer('alice');
    const stoppedAt = Date.now();
    await waitFor(async () => (await cliSessions())?.[0]?.stopped != null, { timeoutMs: 30_000, intervalMs: 250, what: 'the stop to be recorded' });
    const sessions = (await cliSessions())!;
    expect(sessions).toHaveLength(1);
    const s = sessions[0]!;
    expect(Date.parse(s.started)).toBe(started);
    // Duration matches the hub's within one poll interval (0.5 s) plus the stop request's own time.
    const recorded = Date.parse(s.stopped!) - started;
    const real = stoppedAt - started;
    expect(recorded).toBeLessThanOrEqual(real);
    expect(real - recorded).toBeLessThan(5_000);
    child.kill('SIGTERM');
    await waitFor(async () => child!.exitCode !== null || child!.signalCode !== null, { timeoutMs: 15_000, what: 'the collector to exit' });
  }, 120_000);
});
