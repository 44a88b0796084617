/**
 * Hostile and careless input against a real JupyterHub 3.0 (issue 20) and the community model
 * (issue 14): nothing an admin or the community file can save makes a later read fail or slow,
 * events and share links show only what the reader's (or the link creator's) current rights allow,
 * and a server started with the hub's recorded price is billed at that price.
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { communitySchema, ConfigError, resolveSettings } from '@hubside/service-kit';
import { createTestDatabase, freePort, startHub, waitFor } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import { Decimal } from 'decimal.js';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configSchema, LIMITS, resolveConfig } from '../src/config.js';
import { runsOut } from '../src/dashboard/aggregate.js';
import { buildApp, references, service } from '../src/index.js';
import { editableOf } from '../src/settings.js';
import type { EditableSettings } from '../src/settings.js';

const PREFIX = '/services/usage-collector/';
const HUB_DIR = fileURLToPath(new URL('../../../hub', import.meta.url));
const SERVICE_TOKEN = randomBytes(24).toString('hex');
const USERS = ['root', 'alice', 'bob', 'chem-201', 'prof', 'ursula', 'ida', 'payer', 'pct', 'odd'];

const community = communitySchema.parse({
  name: 'Test community',
  currency: 'EUR',
  admins: { groups: ['staff'] },
  courses: {
    phys: { instructors: { groups: ['instructors-phys'] } },
    bio: { instructors: { users: ['ida'] } },
  },
});
const section = configSchema.parse({
  rateCards: [{ id: 'base', effectiveFrom: '2026-01-01', mode: 'profile-hour', profileHour: { small: '1.00' }, incrementSeconds: 1 }],
  budgets: { groups: { 'chem-201': { limit: '0' }, 'lab-100%': { limit: '0' } } },
});

let hub: RunningHub;
let db: TestDatabase;
let app: FastifyInstance;
const tokens: Record<string, string> = {};

beforeAll(async () => {
  db = await createTestDatabase({ schemas: ['usage_collector'] });
  const port = await freePort();
  hub = await startHub({
    users: USERS,
    admins: ['root'],
    groups: { phys: ['alice'], 'chem-201': ['bob'], 'lab-100%': ['pct'], 'instructors-phys': ['prof'], staff: ['ursula'], bio: ['bob'] },
    roles: [
      { name: 'usage-readers', scopes: ['access:services!service=usage-collector'], users: USERS },
      { name: 'usage-collector', scopes: ['list:users', 'read:users', 'read:servers', 'read:groups', 'list:groups', 'access:services!service=usage-collector'], services: ['usage-collector'] },
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
    // Rights taken away take effect within a second here (300 s by default).
    HUBSIDE_AUTH_CACHE_TTL: '1',
    ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}),
  });
  app = await buildApp({ settings, config: section, community, logger: false, defaultMetrics: false, autoPoll: false });
  await app.listen({ host: '127.0.0.1', port });
  for (const u of USERS) tokens[u] = await hub.createToken(u, { note: 'hostile test' });
}, 120_000);

afterAll(async () => {
  await app?.close();
  await hub?.stop();
  await db?.drop();
});

async function call(method: 'GET' | 'PUT' | 'POST' | 'DELETE', path: string, user: string, body?: unknown, headers: Record<string, string> = {}) {
  const t0 = performance.now();
  const res = await app.inject({ method, url: `${PREFIX}${path}`, headers: { authorization: `token ${tokens[user]}`, ...headers }, ...(body !== undefined ? { payload: body as object } : {}) });
  const ms = performance.now() - t0;
  const json = String(res.headers['content-type'] ?? '').includes('json') ? res.json() : res.body;
  return { status: res.statusCode, body: json, headers: res.headers, ms };
}

async function currentSettings() {
  const r = await call('GET', 'api/dashboard/settings', 'root');
  expect(r.status).toBe(200);
  return r as { status: number; body: { editable: EditableSettings; version: number; newest: number; skipped: { id: number; reason: string }[] }; headers: Record<string, unknown> };
}

async function save(editable: unknown, note = '') {
  const cur = await currentSettings();
  return call('PUT', 'api/dashboard/settings', 'root', { editable, note }, { 'if-match': String(cur.headers.etag) });
}

/** Every read a student, an instructor and an admin make, all answered without a server error. */
async function readsAllWork(): Promise<void> {
  for (const [user, path] of [
    ['alice', 'api/usage'],
    ['alice', 'api/statements'],
    ['alice', 'api/sessions'],
    ['alice', 'api/dashboard/me'],
    ['alice', 'api/users/alice/quota'],
    ['prof', 'api/dashboard/groups/phys'],
    ['root', 'api/dashboard/hub'],
    ['root', 'api/dashboard/settings'],
  ] as const) {
    const r = await call('GET', path, user);
    expect(r.status, `${user} GET ${path}: ${JSON.stringify(r.body).slice(0, 300)}`).toBe(200);
  }
}

// Tests that start real single-user servers: minutes, not seconds, on a loaded 2-core machine.
const SERVER_TEST_MS = 120_000;

describe('settings that would break later reads are refused, in the API and in the file (issue 20.1, 20.2, 14)', () => {
  const base = () => editableOf(resolveConfig(section));
  const card = (over: Record<string, unknown>) => ({ ...base().rateCards[0]!, ...over });

  it.each([
    ['a day past the end of the month', '2026-12-45'],
    ['September 31st', '2026-09-31'],
    ['February 29th of a common year', '2027-02-29'],
    ['year 0, which PostgreSQL does not have', '0000-01-01'],
    ['a year before 2000', '1999-12-31'],
  ])('refuses a rate card taking effect on %s', async (_what, day) => {
    const r = await save({ ...base(), rateCards: [card({ effectiveFrom: day })] });
    expect(r.status).toBe(422);
    expect(JSON.stringify(r.body)).toContain('rateCards.0.effectiveFrom');
    expect(configSchema.safeParse({ rateCards: [card({ effectiveFrom: day })] }).success).toBe(false);
  });

  it('takes a real leap day', async () => {
    const r = await save({ ...base(), rateCards: [card({ effectiveFrom: '2028-02-29' })] });
    expect(r.status).toBe(200);
    await readsAllWork();
  });

  it('limits every collection an admin can save, the same in the file and in the API', async () => {
    const many = Array.from({ length: LIMITS.rateCards + 1 }, (_, i) => card({ id: `c${i}`, effectiveFrom: new Date(Date.UTC(2026, 0, 1 + i)).toISOString().slice(0, 10) }));
    const tooMuch: [string, EditableSettings | Record<string, unknown>][] = [
      ['rateCards', { ...base(), rateCards: many }],
      ['budgets.warnAt', { ...base(), budgets: { ...base().budgets, warnAt: Array.from({ length: 3000 }, (_, i) => (i % 100) + 1) } }],
      ['budgets.warnAt', { ...base(), budgets: { ...base().budgets, warnAt: [50, 50] } }],
      ['budgets.users', { ...base(), budgets: { ...base().budgets, users: Object.fromEntries(Array.from({ length: LIMITS.budgetUsers + 1 }, (_, i) => [`u${i}`, { limit: '1' }])) } }],
      ['budgets.groups', { ...base(), budgets: { ...base().budgets, groups: Object.fromEntries(Array.from({ length: LIMITS.budgetGroups + 1 }, (_, i) => [`g${i}`, { limit: '1' }])) } }],
      ['rateCards.0.profileHour', { ...base(), rateCards: [card({ profileHour: Object.fromEntries(Array.from({ length: LIMITS.profiles + 1 }, (_, i) => [`p${i}`, '1'])) })] }],
      ['budgets.users.bad\u0000name', { ...base(), budgets: { ...base().budgets, users: { 'bad\u0000name': { limit: '1' } } } }],
      ['rateCards.0.id', { ...base(), rateCards: [card({ id: 'nul\u0000id' })] }],
      ['rateCards.0.id', { ...base(), rateCards: [card({ id: 'half \ud800 a pair' })] }],
      ['budgets.default.days', { ...base(), budgets: { ...base().budgets, default: { limit: '1', window: 'rolling', days: 1_000_000 } } }],
    ];
    for (const [path, editable] of tooMuch) {
      const t0 = performance.now();
      const r = await save(editable);
      expect(r.status, path).toBe(422);
      expect((r.body as { issues: { path: string }[] }).issues.map((i) => i.path), path).toContain(path);
      // Refused quickly, not after making the service do the work.
      expect(performance.now() - t0).toBeLessThan(5000);
      // The community file is read with the same schema: check-config refuses what the API refuses.
      const asFile = { rateCards: (editable as EditableSettings).rateCards, budgets: (editable as EditableSettings).budgets };
      expect(configSchema.safeParse(asFile).success, `file ${path}`).toBe(false);
    }
    await readsAllWork();
  });

  // With one query per group budget, the hub view took 37 s at 5,000 group budgets (503s for everyone meanwhile).
  it('at every limit at once, saves and reads stay quick', async () => {
    const atLimits = {
      rateCards: Array.from({ length: LIMITS.rateCards }, (_, i) => card({ id: `c${i}`, effectiveFrom: new Date(Date.UTC(2026, 0, 1 + i)).toISOString().slice(0, 10) })),
      budgets: {
        ...base().budgets,
        users: Object.fromEntries(Array.from({ length: LIMITS.budgetUsers }, (_, i) => [`u${i}`, { limit: '1' }])),
        groups: { ...base().budgets.groups, ...Object.fromEntries(Array.from({ length: LIMITS.budgetGroups - 2 }, (_, i) => [`g${i}`, { limit: '1' }])) },
        warnAt: [10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
      },
    };
    const saved = await save(atLimits, 'at the limits');
    expect(saved.status, JSON.stringify(saved.body).slice(0, 300)).toBe(200);
    expect(saved.ms).toBeLessThan(5000);
    const t0 = performance.now();
    await readsAllWork();
    const quota = await call('GET', 'api/users/bob/quota', 'bob');
    expect(quota.status).toBe(200);
    expect(quota.ms).toBeLessThan(2000);
    // Eight reads, settings page included.
    expect(performance.now() - t0).toBeLessThan(15_000);
    console.info(`at the limits: save ${Math.round(saved.ms)} ms, 8 reads ${Math.round(performance.now() - t0)} ms, quota ${Math.round(quota.ms)} ms`);
    expect((await save(base(), 'back')).status).toBe(200);
  }, 300_000);

  it('refuses a note that PostgreSQL or JSON could not store, with a 4xx', async () => {
    for (const note of ['a\u0000b', 'half \udc00 pair']) {
      const r = await save(base(), note);
      expect(r.status).toBe(400);
      expect(r.body).toMatchObject({ statusCode: 400, error: 'Bad Request' });
    }
    await readsAllWork();
  });

  it("projects no run-out date for a budget far beyond the usage (no Invalid time value)", () => {
    const now = Date.UTC(2026, 5, 15);
    const budget = { limit: '999999999999', unit: 'currency' as const, window: 'rolling' as const, days: 366 };
    expect(() => runsOut(budget, new Decimal('0.01'), now)).not.toThrow();
    expect(runsOut(budget, new Decimal('0.01'), now)).toBeNull();
    expect(runsOut({ ...budget, limit: '100' }, new Decimal('99'), now)).toMatch(/^2026-/);
  });

  it('reads on when a stored version is not valid (stored before a limit existed): the newest valid one is in force, and an admin can save on top', async () => {
    const good = await save({ ...base(), rateCards: [card({ profileHour: { small: '2.00' } })] }, 'good');
    expect(good.status).toBe(200);
    const before = await currentSettings();
    // What an older release accepted: a date PostgreSQL can't read, and 3,000 thresholds.
    const legacy = { ...base(), rateCards: [card({ effectiveFrom: '2026-09-31' })], budgets: { ...base().budgets, warnAt: Array.from({ length: 3000 }, () => 75) } };
    const stored = await app.usageSettings.save(before.body.newest, legacy as EditableSettings, 'old-release', 'legacy');
    expect(stored.saved).toBe(true);
    await readsAllWork();
    const after = await currentSettings();
    expect(after.body.version).toBe(before.body.version);
    expect(after.body.newest).toBe(before.body.newest + 1);
    expect(after.body.skipped.map((s) => s.id)).toEqual([before.body.newest + 1]);
    expect(after.body.skipped[0]!.reason).toMatch(/effectiveFrom/);
    expect(after.body.editable.rateCards[0]!.profileHour).toEqual({ small: '2.00' });
    // The ETag names the newest (bad) version, so the admin's fix goes on top of it.
    const fixed = await save({ ...base() }, 'fixed');
    expect(fixed.status).toBe(200);
    expect((await currentSettings()).body.skipped).toEqual([]);
    await readsAllWork();
  });
});

describe('names that PostgreSQL cannot compare with are a 400, never a 500', () => {
  it.each(['api/usage?user=a%00b', 'api/usage?group=a%00b', 'api/sessions?user=a%00b', 'api/statements?group=a%00b', 'api/users/a%00b/quota', 'api/dashboard/groups/a%00b'])('%s', async (path) => {
    const r = await call('GET', path, 'root');
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ statusCode: 400, error: 'Bad Request' });
  });
});

describe('events are keyed by kind (issue 20.4)', () => {
  it("a student named like a group never reads the group's budget events", async () => {
    // bob's group chem-201 has a budget of 0: any quota call puts it at 100 %.
    const q = await call('GET', 'api/users/bob/quota', 'bob');
    expect(q.status).toBe(200);
    expect(q.body).toMatchObject({ allow_server_launch: false });
    const all = await call('GET', 'api/events', 'root');
    expect((all.body as { events: { subject_kind: string; subject: string }[] }).events.some((e) => e.subject_kind === 'group' && e.subject === 'chem-201')).toBe(true);
    const asNamesake = await call('GET', 'api/events', 'chem-201');
    expect(asNamesake.status).toBe(200);
    expect((asNamesake.body as { events: unknown[] }).events).toEqual([]);
    // The same rule as the usage API.
    expect((await call('GET', 'api/usage?group=chem-201', 'chem-201')).status).toBe(403);
  });
});

describe('the spawn refusal a student reads (issue 14c)', () => {
  it("is the budget message, verbatim, even when a group's name has a %", async () => {
    const quota = await call('GET', 'api/users/pct/quota', 'pct');
    const message = (quota.body as { message: string }).message;
    expect(message).toMatch(/^Your group "lab-100%" has used 0\.00 of 0\.00 EUR this month, so no new server can be started until the budget renews on \d{4}-\d{2}-01 \(UTC\): the budget is used up\. If you need more, ask your instructor or a hub admin\.$/);
    const refused = await hub.api<{ message: string }>('POST', '/users/pct/server', {}, tokens.pct);
    expect(refused.status).toBe(403);
    expect(refused.body.message).toContain(message);
  });
});

describe('share links (issue 20.3)', () => {
  it("stop working once their creator no longer teaches the course, within the auth cache's time", async () => {
    const created = await call('POST', 'api/dashboard/shares', 'prof', { group: 'phys', days: 7 });
    expect(created.status).toBe(201);
    const token = (created.body as { token: string }).token;
    const shared = () => app.inject({ method: 'GET', url: `${PREFIX}api/dashboard/shared`, headers: { 'x-hubside-share': token } });
    expect((await shared()).statusCode).toBe(200);
    const removed = await hub.api('DELETE', '/groups/instructors-phys/users', { users: ['prof'] });
    expect(removed.status).toBeLessThan(300);
    await waitFor(async () => (await shared()).statusCode === 403, { timeoutMs: 10_000, intervalMs: 200, what: 'the share link to stop working' });
    expect((await shared()).json()).toMatchObject({ statusCode: 403, message: expect.stringMatching(/no longer has access/) });
    // Given back, the right (and so the link) works again: it was never the link that was wrong.
    await hub.addToGroup('instructors-phys', ['prof']);
    await waitFor(async () => (await shared()).statusCode === 200, { timeoutMs: 10_000, intervalMs: 200, what: 'the share link to work again' });
  });
});

describe('the community model (issue 14a, 14d)', () => {
  it('takes the currency from the community, and refuses a section currency that differs', async () => {
    const r = await call('GET', 'api/usage', 'alice');
    expect(r.body).toMatchObject({ currency: 'EUR' });
    expect(() => resolveConfig(configSchema.parse({ currency: 'USD' }), community)).toThrow(ConfigError);
    expect(resolveConfig(configSchema.parse({ currency: 'EUR' }), community).currency).toBe('EUR');
  });

  it('community admins get the admin view, instructors their courses, others neither', async () => {
    expect((await call('GET', 'api/dashboard/hub', 'ursula')).status).toBe(200);
    expect((await call('GET', 'api/dashboard/settings', 'ursula')).status).toBe(200);
    expect((await call('GET', 'api/usage?group=bio', 'ida')).status).toBe(200);
    expect((await call('GET', 'api/dashboard/access', 'ida')).body).toMatchObject({ admin: false, groups: ['bio'] });
    expect((await call('GET', 'api/usage?group=bio', 'alice')).status).toBe(403);
    expect((await call('GET', 'api/dashboard/hub', 'ida')).status).toBe(403);
  });

  it('reports every group, profile and currency the section names, with its field', () => {
    const cfg = configSchema.parse({
      currency: 'EUR',
      profiles: { small: {} },
      rateCards: [{ id: 'a', effectiveFrom: '2026-01-01', profileHour: { large: '1' } }],
      budgets: { groups: { 'physics-101': { limit: '5' } } },
      attribution: { groupOrder: ['chem'] },
      access: { adminGroups: ['ops'], managers: { prof: ['bio'] }, managerGroups: { tas: ['geo'] } },
    });
    expect(service.references).toBe(references);
    const refs = references(cfg);
    expect(refs).toEqual(
      expect.arrayContaining([
        { kind: 'group', name: 'physics-101', field: 'usage-collector.budgets.groups.physics-101' },
        { kind: 'group', name: 'chem', field: 'usage-collector.attribution.groupOrder[0]' },
        { kind: 'group', name: 'ops', field: 'usage-collector.access.adminGroups[0]' },
        { kind: 'group', name: 'bio', field: 'usage-collector.access.managers.prof[0]' },
        { kind: 'group', name: 'tas', field: 'usage-collector.access.managerGroups.tas' },
        { kind: 'group', name: 'geo', field: 'usage-collector.access.managerGroups.tas[0]' },
        { kind: 'profile', name: 'large', field: 'usage-collector.rateCards[0].profileHour.large' },
        { kind: 'profile', name: 'small', field: 'usage-collector.profiles.small' },
        { kind: 'currency', name: 'EUR', field: 'usage-collector.currency' },
      ]),
    );
    expect(refs).toHaveLength(9);
    expect(references(configSchema.parse({})).length).toBe(0);
  });
});

describe('the price the hub recorded at spawn is the price billed (issue 14b)', () => {
  it('bills a server started with user_options.hubside at its recorded price, to the cent, and falls back on a bad record', async () => {
    const resources = { cpuGuarantee: 0.5, cpuLimit: 2, memGuaranteeGiB: 4, memLimitGiB: 4, gpus: 0 };
    // The card prices `small` at 1.00/h; the hook recorded 7.20/h (0.002 per second).
    await hub.startServer('payer', { userOptions: { profile: 'small', hubside: { profile: 'small', options: {}, price_per_hour: '7.20', currency: 'EUR', resources, profile_version: 3 } } });
    await hub.startServer('payer', { name: 'bad', userOptions: { profile: 'small', hubside: { price_per_hour: '1e9', currency: 'EUR', resources: { cpuGuarantee: -1 } } } });
    await app.usagePoller.pollOnce();
    const started = Date.now();
    await waitFor(async () => Date.now() - started > 1500, { timeoutMs: 5000, intervalMs: 100, what: 'some billed seconds' });
    await hub.stopServer('payer');
    await hub.stopServer('payer', 'bad');
    await app.usagePoller.pollOnce();
    const sessions = (await call('GET', 'api/sessions?user=payer', 'root')).body as { sessions: { server: string; started: string; stopped: string; resources: Record<string, unknown> }[] };
    const good = sessions.sessions.find((s) => s.server === '')!;
    const bad = sessions.sessions.find((s) => s.server === 'bad')!;
    expect(good.resources).toMatchObject({ ...resources, pricePerHour: '7.20' });
    expect(bad.resources).not.toHaveProperty('pricePerHour');
    const statement = (await call('GET', `api/statements?user=payer&from=${good.started.slice(0, 10)}`, 'root')).body as { users: { gross: string }[] };
    // Billed per second (incrementSeconds 1) over the observed span: 7.20/h for one, 1.00/h for the other.
    const secs = (s: { started: string; stopped: string }) => Math.ceil((Date.parse(s.stopped) - Date.parse(s.started)) / 1000 - 1e-9);
    const expected = new Decimal('7.20').times(secs(good)).div(3600).plus(new Decimal('1.00').times(secs(bad)).div(3600));
    expect(statement.users[0]!.gross).toBe(expected.toDecimalPlaces(2, Decimal.ROUND_HALF_UP).toFixed(2));
    expect(Number(statement.users[0]!.gross)).toBeGreaterThan(0);
  }, SERVER_TEST_MS);

  it('records a server whose user_options PostgreSQL could not store as they are (NUL, lone surrogate, huge), and the poll goes on', async () => {
    await hub.startServer('odd', { userOptions: { profile: 'small', note: 'a\u0000b', [`k\u0000`]: '\ud800', deep: { more: ['x\u0000'] } } });
    await hub.startServer('odd', { name: 'huge', userOptions: { profile: 'small', blob: 'x'.repeat(200_000) } });
    await hub.startServer('alice', { userOptions: { profile: 'small' } });
    const polled = await app.usagePoller.pollOnce();
    expect(polled).toMatchObject({ locked: true, servers: 3 });
    const odd = (await call('GET', 'api/sessions?user=odd', 'root')).body as { sessions: { server: string; profile: string; user_options: Record<string, unknown> }[] };
    const plain = odd.sessions.find((x) => x.server === '')!;
    expect(plain.profile).toBe('small');
    expect(plain.user_options).toMatchObject({ note: 'a\uFFFDb', 'k\uFFFD': '\uFFFD', deep: { more: ['x\uFFFD'] } });
    expect(odd.sessions.find((x) => x.server === 'huge')!.user_options).toEqual({ profile: 'small', _truncated: true });
    expect((await call('GET', 'api/sessions?user=alice', 'root')).body.sessions.length).toBe(1);
    await readsAllWork();
    await hub.stopServer('odd');
    await hub.stopServer('odd', 'huge');
    await hub.stopServer('alice');
  }, SERVER_TEST_MS);
});
