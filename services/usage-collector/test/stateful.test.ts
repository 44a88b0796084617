/**
 * A model-based test (fast-check commands) of usage-collector's writable state against a real
 * JupyterHub 3.0: admins save and restore rate cards and budgets (valid and hostile), instructors
 * gain and lose their courses, students join and leave course groups, share links are made,
 * revoked and opened, and students, instructors and admins call the quota API and read usage.
 * After every step: no 5xx, no read slower than READ_BOUND_MS, and nobody sees what their rights
 * at that moment don't allow (a share link: its creator's rights, once the auth cache has expired).
 */
import { randomBytes } from 'node:crypto';
import { communitySchema, resolveSettings } from '@hubside/service-kit';
import { createTestDatabase, freePort, startHub } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configSchema } from '../src/config.js';
import { buildApp } from '../src/index.js';

const PREFIX = '/services/usage-collector/';
const SERVICE_TOKEN = randomBytes(24).toString('hex');
const COURSES = ['c1', 'c2'] as const;
// A student named like a course group: nothing of the group's may reach them by name.
const STUDENTS = ['s1', 'c2'] as const;
const INSTRUCTORS = ['t1', 't2'] as const;
const ADMIN = 'root';
const USERS = [ADMIN, ...STUDENTS, ...INSTRUCTORS];
/**
 * The auth cache (and so a share link's check of its creator) in this test: short enough that
 * every step sees the rights of the step before (hostile.test.ts checks the cache's own window).
 */
const AUTH_TTL_MS = 1;
/** A read slower than this is a failure: settings must not be able to make reads slow. */
const READ_BOUND_MS = 3000;

type Course = (typeof COURSES)[number];
type User = string;

const community = communitySchema.parse({
  name: 'Model community',
  currency: 'EUR',
  courses: Object.fromEntries(COURSES.map((c) => [c, { instructors: { groups: [`teach-${c}`] } }])),
});

let hub: RunningHub;
let db: TestDatabase;
let app: FastifyInstance;

beforeAll(async () => {
  db = await createTestDatabase({ schemas: ['usage_collector'] });
  const port = await freePort();
  hub = await startHub({
    users: USERS,
    admins: [ADMIN],
    groups: { c1: [], c2: [], 'teach-c1': [], 'teach-c2': [] },
    roles: [
      { name: 'usage-readers', scopes: ['access:services!service=usage-collector'], users: USERS },
      {
        name: 'usage-collector',
        scopes: ['list:users', 'read:users', 'read:servers', 'read:groups', 'list:groups', 'access:services!service=usage-collector'],
        services: ['usage-collector'],
      },
    ],
    services: [{ name: 'usage-collector', url: `http://127.0.0.1:${port}`, apiToken: SERVICE_TOKEN }],
  });
  const settings = resolveSettings('usage-collector', {
    JUPYTERHUB_API_URL: hub.hubApiUrl,
    JUPYTERHUB_API_TOKEN: SERVICE_TOKEN,
    HUBSIDE_DATA_DIR: db.dataDir,
    HUBSIDE_AUTH_CACHE_TTL: String(AUTH_TTL_MS / 1000),
    ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}),
  });
  const config = configSchema.parse({ rateCards: [{ id: 'base', effectiveFrom: '2026-01-01', profileHour: { small: '1' } }] });
  app = await buildApp({ settings, config, community, logger: false, defaultMetrics: false, autoPoll: false });
  await app.ready();
}, 120_000);

afterAll(async () => {
  await app?.close();
  await hub?.stop();
  await db?.drop();
});

// --- The model -----------------------------------------------------------------------------

interface ShareModel {
  id: string;
  token: string;
  creator: User;
  course: Course;
  revoked: boolean;
}
interface Model {
  /** Course groups each student is in. */
  member: Map<User, Set<Course>>;
  /** Courses each instructor teaches (through `teach-<course>`). */
  teaches: Map<User, Set<Course>>;
  /** When each user's rights last changed (a share link may lag its creator's by the auth cache). */
  changedAt: Map<User, number>;
  shares: ShareModel[];
  /** Editable settings saved so far (for restores). */
  saved: unknown[];
}

interface Real {
  /** A fresh token for each request: the reader's rights are the hub's now, not a cached identity's. */
  call(method: 'GET' | 'PUT' | 'POST' | 'DELETE', path: string, user: User, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: any; ms: number; etag?: string }>;
}

const real: Real = {
  async call(method, path, user, body, headers = {}) {
    const token = await hub.createToken(user, { note: 'model', expiresIn: 600 });
    const t0 = performance.now();
    const res = await app.inject({ method, url: `${PREFIX}${path}`, headers: { authorization: `token ${token}`, ...headers }, ...(body !== undefined ? { payload: body as object } : {}) });
    const ms = performance.now() - t0;
    const json = String(res.headers['content-type'] ?? '').includes('json') ? res.json() : res.body;
    return { status: res.statusCode, body: json, ms, ...(typeof res.headers.etag === 'string' ? { etag: res.headers.etag } : {}) };
  },
};

const isAdmin = (u: User) => u === ADMIN;
const teachesNow = (m: Model, u: User, c: Course) => isAdmin(u) || (m.teaches.get(u)?.has(c) ?? false);
const settled = (m: Model, u: User) => Date.now() - (m.changedAt.get(u) ?? 0) > AUTH_TTL_MS;

function sane(r: { status: number; ms: number; body: unknown }, what: string): void {
  expect(r.status, `${what}: ${JSON.stringify(r.body).slice(0, 300)}`).toBeLessThan(500);
  expect(r.ms, `${what} took ${Math.round(r.ms)} ms`).toBeLessThan(READ_BOUND_MS);
  if (r.status >= 400) expect(r.body, what).toMatchObject({ statusCode: r.status, error: expect.any(String), message: expect.any(String) });
}

// --- Settings, valid and hostile -----------------------------------------------------------

const VALID_DAYS = ['2026-01-01', '2026-03-01', '2028-02-29', '2030-12-31'];

const cardArb = fc.record({
  id: fc.constantFrom('a', 'b', 'autumn'),
  effectiveFrom: fc.constantFrom(...VALID_DAYS),
  profileHour: fc.dictionary(fc.constantFrom('small', 'large'), fc.constantFrom('0', '0.05', '3.60', '999999999999')),
  incrementSeconds: fc.constantFrom(1, 60, 3600),
});
const budgetArb = fc.record({
  limit: fc.constantFrom('0', '1', '5.00', '999999999999'),
  unit: fc.constantFrom('currency', 'hours'),
  window: fc.constantFrom('month', 'rolling'),
  days: fc.constantFrom(1, 30, 366),
});
const validArb = fc.record({
  rateCards: fc.uniqueArray(cardArb, { maxLength: 3, selector: (c) => c.effectiveFrom }),
  budgets: fc.record({
    default: fc.option(budgetArb, { nil: undefined }),
    groups: fc.dictionary(fc.constantFrom(...COURSES), budgetArb),
    users: fc.dictionary(fc.constantFrom(...STUDENTS), budgetArb),
    warnAt: fc.oneof(fc.constantFrom([75, 90, 100], [50], []), fc.uniqueArray(fc.integer({ min: 1, max: 100 }), { maxLength: 10 })),
    stopOverLimit: fc.constant(false),
  }),
});
type Settings = typeof validArb extends fc.Arbitrary<infer T> ? T : never;

/** One hostile change each: what issue 20 and 14 found accepted, and what must be refused. */
const FAULTS: Record<string, (s: Settings) => unknown> = {
  'day 45': (s) => ({ ...s, rateCards: [{ id: 'x', effectiveFrom: '2026-12-45' }] }),
  'September 31st': (s) => ({ ...s, rateCards: [{ id: 'x', effectiveFrom: '2026-09-31' }] }),
  'year 0': (s) => ({ ...s, rateCards: [{ id: 'x', effectiveFrom: '0000-01-01' }] }),
  '201 rate cards': (s) => ({ ...s, rateCards: Array.from({ length: 201 }, (_, i) => ({ id: `c${i}`, effectiveFrom: new Date(Date.UTC(2026, 0, 1 + i)).toISOString().slice(0, 10) })) }),
  '3000 thresholds': (s) => ({ ...s, budgets: { ...s.budgets, warnAt: Array.from({ length: 3000 }, (_, i) => (i % 100) + 1) } }),
  'a million days': (s) => ({ ...s, budgets: { ...s.budgets, default: { limit: '1', window: 'rolling', days: 1_000_000 } } }),
  'NUL in a card id': (s) => ({ ...s, rateCards: [{ id: 'nul\u0000', effectiveFrom: '2026-01-01' }] }),
  'lone surrogate in a user': (s) => ({ ...s, budgets: { ...s.budgets, users: { 'half\ud800': { limit: '1' } } } }),
};
const settingsArb = fc.tuple(validArb, fc.option(fc.constantFrom(...Object.keys(FAULTS)), { nil: null, freq: 2 })).map(([s, fault]) => ({ fault, body: fault ? FAULTS[fault]!(s) : s }));
type SettingsInput = { fault: string | null; body: unknown };

// --- Commands ------------------------------------------------------------------------------

type Cmd = fc.AsyncCommand<Model, Real>;
const cmd = (name: string, check: (m: Readonly<Model>) => boolean, run: (m: Model, r: Real) => Promise<void>): Cmd => ({
  check,
  run,
  toString: () => name,
});

const saveSettings = (input: SettingsInput) =>
  cmd(`save(${input.fault ?? JSON.stringify(input.body).slice(0, 120)})`, () => true, async (m, r) => {
    const s = input.body;
    const cur = await r.call('GET', 'api/dashboard/settings', ADMIN);
    sane(cur, 'settings read');
    const put = await r.call('PUT', 'api/dashboard/settings', ADMIN, { editable: s, note: 'model' }, { 'if-match': cur.etag! });
    sane(put, 'settings save');
    expect(put.status, JSON.stringify(put.body).slice(0, 300)).toBe(input.fault === null ? 200 : 422);
    if (put.status === 200) m.saved.push(s);
    await readsAfterSettings(r);
  });

const restoreSettings = (i: number) =>
  cmd(`restore(${i})`, (m) => m.saved.length > 0, async (m, r) => {
    const s = m.saved[i % m.saved.length];
    const cur = await r.call('GET', 'api/dashboard/settings', ADMIN);
    const put = await r.call('PUT', 'api/dashboard/settings', ADMIN, { editable: s, note: 'restore' }, { 'if-match': cur.etag! });
    sane(put, 'restore');
    expect(put.status).toBe(200);
    await readsAfterSettings(r);
  });

async function readsAfterSettings(r: Real): Promise<void> {
  for (const [user, path] of [
    [STUDENTS[0], 'api/dashboard/me'],
    [STUDENTS[0], `api/users/${STUDENTS[0]}/quota`],
    [ADMIN, 'api/dashboard/hub'],
    [ADMIN, 'api/statements'],
    [ADMIN, 'api/dashboard/groups/c1'],
  ] as const) {
    const res = await r.call('GET', path, user);
    sane(res, `${user} ${path}`);
    expect(res.status, `${user} ${path}`).toBe(200);
  }
}

const toggleMember = (student: User, course: Course) =>
  cmd(`toggleMember(${student}, ${course})`, () => true, async (m) => {
    const set = m.member.get(student)!;
    const method = set.has(course) ? 'DELETE' : 'POST';
    expect((await hub.api(method, `/groups/${course}/users`, { users: [student] })).status).toBeLessThan(300);
    if (set.has(course)) set.delete(course);
    else set.add(course);
    m.changedAt.set(student, Date.now());
  });

const toggleTeach = (instructor: User, course: Course) =>
  cmd(`toggleTeach(${instructor}, ${course})`, () => true, async (m) => {
    const set = m.teaches.get(instructor)!;
    const method = set.has(course) ? 'DELETE' : 'POST';
    expect((await hub.api(method, `/groups/teach-${course}/users`, { users: [instructor] })).status).toBeLessThan(300);
    if (set.has(course)) set.delete(course);
    else set.add(course);
    m.changedAt.set(instructor, Date.now());
  });

const createShare = (creator: User, course: Course) =>
  cmd(`createShare(${creator}, ${course})`, () => true, async (m, r) => {
    const res = await r.call('POST', 'api/dashboard/shares', creator, { group: course, days: 1 });
    sane(res, 'create share');
    expect(res.status).toBe(teachesNow(m, creator, course) ? 201 : 403);
    if (res.status === 201) m.shares.push({ id: res.body.id, token: res.body.token, creator, course, revoked: false });
  });

const revokeShare = (i: number, byAdmin: boolean) =>
  cmd(`revokeShare(${i}, ${byAdmin ? 'admin' : 'creator'})`, (m) => m.shares.length > 0, async (m, r) => {
    const share = m.shares[i % m.shares.length]!;
    const res = await r.call('DELETE', `api/dashboard/shares/${share.id}`, byAdmin ? ADMIN : share.creator);
    sane(res, 'revoke share');
    expect(res.status).toBe(200);
    share.revoked = true;
  });

/** Links opened after their creator lost the course: the run must include some, or it proves nothing about them. */
let lostRightOpens = 0;
const openShare = (i: number) =>
  cmd(`openShare(${i})`, (m) => m.shares.length > 0, async (m) => {
    const share = m.shares[i % m.shares.length]!;
    const t0 = performance.now();
    const res = await app.inject({ method: 'GET', url: `${PREFIX}api/dashboard/shared`, headers: { 'x-hubside-share': share.token } });
    sane({ status: res.statusCode, ms: performance.now() - t0, body: res.json() }, 'open share');
    const allowed = !share.revoked && teachesNow(m, share.creator, share.course);
    // Revocation is at once; a creator's lost (or regained) right within the auth cache's time.
    if (!share.revoked && !allowed) lostRightOpens += 1;
    if (share.revoked || settled(m, share.creator)) expect(res.statusCode, `share of ${share.creator} for ${share.course}`).toBe(allowed ? 200 : 403);
    if (res.statusCode === 200) expect(res.json()).toMatchObject({ shared: expect.any(Object) });
  });

/** An instructor makes a link to their course, then loses the course; the link is opened at once after. */
const linkOutlivesRight = (instructor: User, course: Course) =>
  cmd(`linkOutlivesRight(${instructor}, ${course})`, () => true, async (m, r) => {
    if (!teachesNow(m, instructor, course)) await toggleTeach(instructor, course).run(m, r);
    await createShare(instructor, course).run(m, r);
    await toggleTeach(instructor, course).run(m, r);
    await openShare(m.shares.length - 1).run(m, r);
  });

const readCourse = (reader: User, course: Course, via: 'usage' | 'dashboard') =>
  cmd(`readCourse(${reader}, ${course}, ${via})`, () => true, async (m, r) => {
    const res = await r.call('GET', via === 'usage' ? `api/usage?group=${course}` : `api/dashboard/groups/${course}`, reader);
    sane(res, `${reader} reads ${course}`);
    expect(res.status, `${reader} reads ${course}`).toBe(teachesNow(m, reader, course) ? 200 : 403);
  });

const readUser = (reader: User, whose: User) =>
  cmd(`readUser(${reader}, ${whose})`, () => true, async (m, r) => {
    const res = await r.call('GET', `api/usage?user=${whose}`, reader);
    sane(res, `${reader} reads ${whose}`);
    const maySee = reader === whose || isAdmin(reader) || [...(m.member.get(whose) ?? [])].some((c) => teachesNow(m, reader, c));
    expect(res.status, `${reader} reads ${whose}`).toBe(maySee ? 200 : 403);
    if (res.status === 200) for (const row of res.body.rows as { user: string }[]) expect(row.user).toBe(whose);
  });

const quota = (student: User, asService: boolean) =>
  cmd(`quota(${student}${asService ? ', service' : ''})`, () => true, async (_m, r) => {
    const t0 = performance.now();
    const res = asService
      ? await app.inject({ method: 'GET', url: `${PREFIX}api/users/${student}/quota`, headers: { authorization: `token ${SERVICE_TOKEN}` } })
      : undefined;
    const out = res ? { status: res.statusCode, body: res.json(), ms: performance.now() - t0 } : await r.call('GET', `api/users/${student}/quota`, student);
    sane(out, `quota ${student}`);
    // A student asks for their own quota; the hub's pre-spawn hook asks with the service's token.
    expect(out.status).toBe(200);
  });

const readEvents = (reader: User) =>
  cmd(`events(${reader})`, () => true, async (m, r) => {
    const res = await r.call('GET', 'api/events', reader);
    sane(res, 'events');
    expect(res.status).toBe(200);
    for (const e of res.body.events as { subject_kind: string; subject: string }[]) {
      const ok = isAdmin(reader) || (e.subject_kind === 'user' && e.subject === reader) || (e.subject_kind === 'group' && teachesNow(m, reader, e.subject as Course));
      expect(ok, `${reader} sees ${e.subject_kind} ${e.subject}`).toBe(true);
    }
  });

/** A course's budget is used up (a limit of 0) and one of its students asks for their quota: group events exist. */
const groupOverBudget = (student: User, course: Course) =>
  cmd(`groupOverBudget(${student}, ${course})`, () => true, async (m, r) => {
    if (!m.member.get(student)!.has(course)) await toggleMember(student, course).run(m, r);
    const cur = await r.call('GET', 'api/dashboard/settings', ADMIN);
    const editable = cur.body.editable as Settings;
    const body = { ...editable, budgets: { ...editable.budgets, groups: { ...editable.budgets.groups, [course]: { limit: '0', unit: 'currency', window: 'month', days: 30 } }, warnAt: [100] } };
    await saveSettings({ fault: null, body }).run(m, r);
    const q = await r.call('GET', `api/users/${student}/quota`, student);
    sane(q, 'quota');
    expect(q.body).toMatchObject({ allow_server_launch: false });
    for (const u of USERS) await readEvents(u).run(m, r);
  });

const readHub = (reader: User) =>
  cmd(`hub(${reader})`, () => true, async (_m, r) => {
    const res = await r.call('GET', 'api/dashboard/hub', reader);
    sane(res, 'hub view');
    expect(res.status).toBe(isAdmin(reader) ? 200 : 403);
  });

const anyUser = fc.constantFrom(...USERS);
const course = fc.constantFrom(...COURSES);
// Rights changes and share links are weighted up: the interesting sequences chain them.
const teach = fc.tuple(fc.constantFrom(...INSTRUCTORS), course).map(([t, c]) => toggleTeach(t, c));
const share = fc.tuple(fc.constantFrom(...INSTRUCTORS, ADMIN, STUDENTS[0]), course).map(([u, c]) => createShare(u, c));
const open = fc.nat().map(openShare);
const commands = [
  settingsArb.map(saveSettings),
  teach,
  teach,
  share,
  share,
  open,
  fc.tuple(fc.constantFrom(...INSTRUCTORS), course).map(([t, c]) => linkOutlivesRight(t, c)),
  fc.tuple(fc.constantFrom(...STUDENTS), course).map(([s, c]) => groupOverBudget(s, c)),
  fc.nat().map(restoreSettings),
  fc.tuple(fc.constantFrom(...STUDENTS), course).map(([s, c]) => toggleMember(s, c)),
  fc.tuple(fc.constantFrom(...INSTRUCTORS), course).map(([t, c]) => toggleTeach(t, c)),
  fc.tuple(fc.constantFrom(...INSTRUCTORS, ADMIN, STUDENTS[0]), course).map(([u, c]) => createShare(u, c)),
  fc.tuple(fc.nat(), fc.boolean()).map(([i, a]) => revokeShare(i, a)),
  fc.nat().map(openShare),
  fc.tuple(anyUser, course, fc.constantFrom('usage' as const, 'dashboard' as const)).map(([u, c, v]) => readCourse(u, c, v)),
  fc.tuple(anyUser, fc.constantFrom(...STUDENTS)).map(([u, w]) => readUser(u, w)),
  fc.tuple(fc.constantFrom(...STUDENTS), fc.boolean()).map(([s, a]) => quota(s, a)),
  anyUser.map(readEvents),
  anyUser.map(readHub),
];

/** The hub back to no memberships, and a model to match (settings and shares carry over: the model only needs their effects). */
async function reset(): Promise<Model> {
  for (const c of COURSES) {
    await hub.api('DELETE', `/groups/${c}/users`, { users: [...STUDENTS] });
    await hub.api('DELETE', `/groups/teach-${c}/users`, { users: [...INSTRUCTORS] });
  }
  // Links from an earlier run are revoked, so each run's model knows every live link.
  for (const s of (await real.call('GET', 'api/dashboard/shares', ADMIN)).body.shares as { id: string; revoked_at: string | null }[]) {
    if (!s.revoked_at) await real.call('DELETE', `api/dashboard/shares/${s.id}`, ADMIN);
  }
  const now = Date.now();
  return {
    member: new Map(STUDENTS.map((s) => [s, new Set<Course>()])),
    teaches: new Map(INSTRUCTORS.map((t) => [t, new Set<Course>()])),
    changedAt: new Map(USERS.map((u) => [u, now])),
    shares: [],
    saved: [],
  };
}

describe('usage-collector under sequences of saves, membership changes, share links and reads', () => {
  it('never answers 5xx, never slowly, and never shows what current rights do not allow', async () => {
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 20 }), async (cmds) => {
        const model = await reset();
        await fc.asyncModelRun(() => ({ model, real }), cmds);
      }),
      { numRuns: 20, endOnFailure: true },
    );
    expect(lostRightOpens, 'links opened after their creator lost the course').toBeGreaterThan(0);
  }, 240_000);
});
