/**
 * The usage dashboards in real headless Chromium behind a real JupyterHub's OAuth login: a student,
 * an instructor and an admin each log in through the hub, and every number checked on a page is the
 * JSON API's number for the same fixture (which is itself checked against the statement and quota
 * APIs). A student gets a 403 page for the instructor and admin views; share links work until they
 * expire or an admin revokes them. Screenshots go to test-artifacts/usage-collector/.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveSettings } from '@hubside/service-kit';
import { createTestDatabase, freePort, startHub } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import fc from 'fast-check';
import { createSigner } from 'fast-jwt';
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import { chromium } from 'playwright-core';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shareKeyFrom } from '../../src/dashboard/index.js';
import { SHARE_AUDIENCE } from '../../src/dashboard/shares.js';
import type { SharesDB } from '../../src/dashboard/shares.js';
import { buildApp, configSchema } from '../../src/index.js';

const SHOTS = fileURLToPath(new URL('../../../../test-artifacts/usage-collector/', import.meta.url));
const PREFIX = '/services/usage-collector/';
const SERVICE_TOKEN = randomBytes(24).toString('hex');
const USERS = ['alice', 'bob', 'carol', 'prof', 'ursula'];
const DAY = 86_400_000;

const config = configSchema.parse({
  currency: 'EUR',
  profiles: { small: { cpuGuarantee: 0.5, memGuaranteeGiB: 1 }, large: { cpuGuarantee: 2, memGuaranteeGiB: 8 } },
  rateCards: [{ id: '2026', effectiveFrom: '2026-01-01', profileHour: { small: '0.60', large: '3.60' }, incrementSeconds: 60, freeAllowancePerMonth: '1.00' }],
  attribution: { rule: 'split' },
  access: { adminGroups: ['usage-admins'], managers: { prof: ['phys'] } },
  budgets: { default: { limit: '20', unit: 'currency', window: 'rolling', days: 30 }, users: { carol: { limit: '10', unit: 'currency', window: 'rolling', days: 30 }, bob: { limit: '1', unit: 'currency', window: 'rolling', days: 30 } } },
});

let hub: RunningHub;
let db: TestDatabase;
let app: FastifyInstance;
let browser: Browser;
const tokens: Record<string, string> = {};
const contexts: BrowserContext[] = [];

const utcDay = (t: number) => new Date(t).toISOString().slice(0, 10);
// The page's "Last 30 days": [today - 29, tomorrow).
const today = utcDay(Date.now());
const FROM = utcDay(Date.parse(`${today}T00:00:00Z`) - 29 * DAY);
const TO = utcDay(Date.parse(`${today}T00:00:00Z`) + DAY);

// A little after the test starts, so the window has moved past it by the time budgets are read.
const WINDOW_START = Date.now() - 30 * DAY + 60_000;

async function fixture(): Promise<void> {
  const base = Date.parse(`${today}T00:00:00Z`) - 3 * DAY;
  const h = 3_600_000;
  const rows: [string, string, number, number, string[], number | null][] = [
    // user, profile, start, stop, groups, last activity
    ['alice', 'small', base + 9 * h, base + 12 * h + 20 * 60_000, ['phys'], base + 11 * h],
    ['alice', 'large', base + DAY + 10 * h, base + DAY + 11 * h + 30 * 60_000, ['phys'], null],
    ['carol', 'large', base + 8 * h, base + 10 * h + 45 * 60_000, ['chem', 'phys'], base + 9 * h],
    ['bob', 'small', base + DAY + 13 * h, base + DAY + 14 * h, ['chem'], null],
    ['prof', 'small', base + 2 * DAY + 7 * h, base + 2 * DAY + 8 * h, [], null],
    // Straddles the start of bob's rolling 30-day budget window: only its last hour counts there.
    ['bob', 'small', WINDOW_START - 2 * h, WINDOW_START + h, ['chem'], null],
  ];
  await app.db
    .insertInto('sessions')
    .values(
      rows.map(([user, profile, start, stop, groups, activity]) => ({
        user_name: user,
        server_name: '',
        started: new Date(start),
        profile,
        user_options: JSON.stringify({ profile }),
        resources: JSON.stringify(config.profiles[profile]),
        groups: JSON.stringify(groups),
        last_activity: activity === null ? new Date(stop) : new Date(activity),
        first_seen: new Date(start),
        last_seen: new Date(stop),
        stopped: new Date(stop),
        stop_observed: new Date(stop),
        stop_source: 'poll',
      })),
    )
    .execute();
}

beforeAll(async () => {
  await mkdir(SHOTS, { recursive: true });
  db = await createTestDatabase({ schemas: ['usage_collector'] });
  const port = await freePort();
  hub = await startHub({
    users: USERS,
    groups: { phys: ['alice', 'carol'], chem: ['bob', 'carol'], 'usage-admins': ['ursula'] },
    roles: [
      { name: 'usage-readers', scopes: ['access:services!service=usage-collector'], users: USERS },
      { name: 'usage-collector', scopes: ['list:users', 'read:users', 'read:groups', 'list:groups'], services: ['usage-collector'] },
    ],
    services: [{ name: 'usage-collector', url: `http://127.0.0.1:${port}`, apiToken: SERVICE_TOKEN, oauth_no_confirm: true }],
    waitForServices: false,
  });
  const settings = resolveSettings('usage-collector', {
    JUPYTERHUB_API_URL: hub.hubApiUrl,
    JUPYTERHUB_API_TOKEN: SERVICE_TOKEN,
    // The hub names a service's OAuth client `service-<name>`, with {prefix}oauth_callback as its redirect.
    JUPYTERHUB_CLIENT_ID: 'service-usage-collector',
    HUBSIDE_DATA_DIR: db.dataDir,
    // In-process PGlite on a shared, busy machine delays the event loop; this test is not about shedding load.
    HUBSIDE_MAX_EVENT_LOOP_DELAY: '0',
    ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}),
  });
  app = await buildApp({ settings, config, logger: false, defaultMetrics: false, autoPoll: false });
  await app.listen({ host: '127.0.0.1', port });
  await fixture();
  for (const u of USERS) tokens[u] = await hub.createToken(u, { note: 'dashboard test' });
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
}, 150_000);

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => undefined);
  await browser?.close();
  await app?.close();
  await hub?.stop();
  await db?.drop();
});

async function api<T = Record<string, unknown>>(path: string, user: string): Promise<{ status: number; body: T }> {
  const res = await app.inject({ method: 'GET', url: `${PREFIX}${path}`, headers: { authorization: `token ${tokens[user]}` } });
  return { status: res.statusCode, body: (String(res.headers['content-type']).includes('json') ? res.json() : res.body) as T };
}

async function newPage(width = 1280): Promise<Page> {
  const ctx = await browser.newContext({ viewport: { width, height: 900 } });
  contexts.push(ctx);
  return ctx.newPage();
}

/** Through the hub's login form and OAuth, to `path` under the service. */
async function login(user: string, path: string, width = 1280): Promise<Page> {
  const page = await newPage(width);
  await page.goto(`${hub.url}${PREFIX}${path}`, { timeout: 60_000 });
  await page.fill('#username_input', user);
  await page.fill('#password_input', 'any');
  await page.click('#login_submit');
  // Back from the hub's OAuth: the student view at the prefix itself, or another dashboard page.
  await page.waitForURL((u) => u.pathname === PREFIX || u.pathname.startsWith(`${PREFIX}dashboard/`), { timeout: 60_000 });
  return page;
}

async function loaded(page: Page): Promise<void> {
  await page.waitForSelector('body[data-loaded]', { timeout: 30_000 });
  const state = await page.getAttribute('body', 'data-loaded');
  if (state?.startsWith('error')) throw new Error(`page error: ${await page.textContent('#error')}`);
}

/** Waits until the page has rendered again after `before` (its data-loaded counter moved on). */
async function reloaded(page: Page, before: string | null): Promise<void> {
  await page.waitForSelector(`body[data-loaded]:not([data-loaded="${before ?? ''}"])`, { timeout: 30_000 });
}

/**
 * The lowest WCAG contrast ratio of any visible text on the page, with the element it belongs to:
 * text colour against the first opaque background behind it.
 */
async function lowestContrast(page: Page): Promise<{ ratio: number; text: string }> {
  return page.$$eval('h1, h2, h3, p, th, td, label, a, button, summary, caption, li, span, strong, code, option', (els) => {
    const parse = (c: string) => (c.match(/[\d.]+/g) ?? []).map(Number);
    const lum = ([r, g, b]: number[]) => {
      const f = (v: number) => {
        const x = v / 255;
        return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * f(r!) + 0.7152 * f(g!) + 0.0722 * f(b!);
    };
    // The test type-checks without the DOM library: name just what is used.
    type El = { childNodes: ArrayLike<{ nodeType: number; textContent: string | null }>; offsetParent: unknown; parentElement: El | null; textContent: string | null };
    const css = (e: El) => (globalThis as unknown as { getComputedStyle(e: El): { color: string; backgroundColor: string } }).getComputedStyle(e);
    let worst = { ratio: 21, text: '' };
    for (const el of els as unknown as El[]) {
      const own = Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent!.trim() !== '');
      if (!own || el.offsetParent === null) continue;
      const style = css(el);
      let bg = [255, 255, 255];
      for (let e: El | null = el; e; e = e.parentElement) {
        const c = parse(css(e).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] === 1)) {
          bg = c.slice(0, 3);
          break;
        }
      }
      const [l1, l2] = [lum(parse(style.color)), lum(bg)].sort((a, b) => b - a);
      const ratio = (l1! + 0.05) / (l2! + 0.05);
      if (ratio < worst.ratio) worst = { ratio, text: (el.textContent ?? '').trim().slice(0, 40) };
    }
    return worst;
  });
}

/** WCAG AA for text: 4.5:1. Below 21 proves something was measured (black on white is 21). */
async function expectAA(page: Page): Promise<void> {
  const worst = await lowestContrast(page);
  expect(worst.ratio, `lowest contrast at "${worst.text}"`).toBeGreaterThanOrEqual(4.5);
  expect(worst.ratio).toBeLessThan(21);
}

const field = (page: Page, name: string) => page.textContent(`#content [data-field="${name}"]`);
/** An hours figure: the API's exact value in the element's `value`, and what a person reads. */
const hoursField = async (page: Page, name: string) => {
  const el = page.locator(`#content data[data-field="${name}"]`);
  return { value: await el.getAttribute('value'), text: await el.textContent() };
};
/** Hours to the minute, written independently of the page's script: 7.5833 h reads "7 h 35 min". */
function readable(hours: string): string {
  const minutes = Math.round(Number(hours) * 60);
  const [hh, mm] = [Math.floor(minutes / 60), minutes % 60];
  if (hh === 0) return `${mm} min`;
  return mm === 0 ? `${hh.toLocaleString('en-US')} h` : `${hh.toLocaleString('en-US')} h ${mm} min`;
}
const HOURS = new Set(['hours', 'idle_hours']);
/** Compares a page's totals with the API's: money and counts as they are, hours as people read them. */
async function expectTotals(page: Page, totals: Record<string, string | number>, keys: readonly string[]) {
  for (const k of keys) {
    if (HOURS.has(k)) expect(await hoursField(page, `totals.${k}`)).toEqual({ value: String(totals[k]), text: readable(String(totals[k])) });
    else expect(await field(page, `totals.${k}`)).toBe(String(totals[k]));
  }
}
const column = (page: Page, table: string, name: string) => page.$$eval(`#${table} tbody td[data-field="${name}"]`, (tds) => tds.map((td) => td.textContent));

type Student = { totals: Record<string, string>; by_profile: { profile: string; hours: string; cost: string }[]; by_day: { day: string; cost: string; hours: string }[]; budget: Record<string, string> };
type Course = { totals: Record<string, string | number>; students: { rows: { user: string; net: string; hours: string; gross: string; budget_used: string | null }[]; total: number }; at_risk: { user: string }[] };

describe('a student', () => {
  let page: Page;
  it('logs in through the hub and sees their own numbers, equal to the API', async () => {
    page = await login('alice', '?period=last-30');
    await loaded(page);
    // The student view is the service's home page, not service-kit's landing page.
    expect(new URL(page.url()).pathname).toBe(PREFIX);
    expect(await page.getAttribute('body', 'data-view')).toBe('student');
    expect(await page.textContent('#user')).toBe('alice');
    expect(await page.getAttribute('#nav a[aria-current="page"]', 'href')).toBe(PREFIX);
    const { status, body } = await api<Student>(`api/dashboard/me?from=${FROM}&to=${TO}`, 'alice');
    expect(status).toBe(200);
    // The API's figures are the statement's and the quota's.
    const st = await api<{ users: { user: string; hours: string; gross: string; net: string }[] }>(`api/statements?user=alice&from=${FROM}&to=${TO}`, 'alice');
    expect(st.body.users).toEqual([expect.objectContaining({ user: 'alice', hours: body.totals.hours, gross: body.totals.gross, net: body.totals.net })]);
    // 3h20 small (2.00) + 1h30 large (5.40).
    expect(body.totals).toMatchObject({ hours: '4.8333', gross: '7.40' });
    const quota = await api<{ used: string; limit: string }>('api/users/alice/quota', 'alice');
    expect(body.budget).toMatchObject({ used: quota.body.used, limit: quota.body.limit });
    const usage = await api<{ rows: { period: string; cost: string }[] }>(`api/usage?user=alice&from=${FROM}&to=${TO}&granularity=day`, 'alice');
    const nonZero = body.by_day.filter((d) => d.hours !== '0.0000').map((d) => ({ period: d.day, cost: d.cost }));
    expect(nonZero).toEqual(usage.body.rows.map((r) => ({ period: r.period, cost: r.cost })));

    await expectTotals(page, body.totals, ['gross', 'net', 'hours', 'idle_hours']);
    expect(await field(page, 'totals.hours')).toBe('4 h 50 min');
    for (const k of ['used', 'limit', 'remaining']) expect(await field(page, `budget.${k}`)).toBe(body.budget[k]);
    expect(await column(page, 'by-profile', 'cost')).toEqual(body.by_profile.map((p) => p.cost));
    expect(await page.$$eval('#sessions tbody tr', (rows) => rows.length)).toBe(2);
    expect(await page.locator('#projection').textContent()).toMatch(/budget/);
    await page.waitForSelector('canvas');
    await expectAA(page);
    await page.screenshot({ path: join(SHOTS, 'student-1280.png'), fullPage: true });
  }, 120_000);

  it('works at 390 px wide without horizontal scrolling of the page', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload();
    await loaded(page);
    expect(await page.$eval('html', (el) => el.scrollWidth)).toBeLessThanOrEqual(390);
    await page.screenshot({ path: join(SHOTS, 'student-390.png'), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it('changes the period from the keyboard and shows the empty state', async () => {
    await page.focus('#period');
    await page.keyboard.press('Home'); // This month
    await page.selectOption('#period', 'custom');
    await page.fill('#from', '2026-01-01');
    await page.fill('#to', '2026-01-31');
    await page.focus('#apply');
    const before = await page.getAttribute('body', 'data-loaded');
    await page.keyboard.press('Enter');
    await reloaded(page, before);
    await loaded(page);
    expect(await page.textContent('#content')).toContain('No usage in this period.');
    expect(page.url()).toContain('from=2026-01-01');
    await page.screenshot({ path: join(SHOTS, 'student-empty.png'), fullPage: true });
  });

  it('shows an error in words for a period the API refuses', async () => {
    // The view's first address, dashboard/, still works: it redirects to the prefix with its query.
    await page.goto(`${hub.url}${PREFIX}dashboard/?period=custom&from=2020-01-01&to=2026-01-01`);
    expect(new URL(page.url()).pathname).toBe(PREFIX);
    await page.waitForSelector('body[data-loaded^="error"]');
    expect(await page.textContent('#error')).toMatch(/at most 400 days/);
  });

  it('gets a 403 page for the instructor and admin views, and 403 from their API', async () => {
    for (const path of ['dashboard/course', 'dashboard/admin']) {
      const res = await page.goto(`${hub.url}${PREFIX}${path}`);
      expect(res?.status()).toBe(403);
      expect(await page.textContent('h1')).toContain('403');
      expect(await page.getAttribute('main a', 'href')).toBe(PREFIX);
    }
    await page.screenshot({ path: join(SHOTS, 'student-403.png') });
    expect((await api('api/dashboard/groups/phys', 'alice')).status).toBe(403);
    expect((await api('api/dashboard/hub', 'alice')).status).toBe(403);
    expect((await api('api/dashboard/settings', 'alice')).status).toBe(403);
  });
});

let shareUrl = '';

describe('an instructor', () => {
  let page: Page;
  it('sees their course, equal to the API, and only the course they manage', async () => {
    page = await login('prof', 'dashboard/course?group=phys&period=last-30');
    await loaded(page);
    const { status, body } = await api<Course>(`api/dashboard/groups/phys?from=${FROM}&to=${TO}`, 'prof');
    expect(status).toBe(200);
    const st = await api<{ total: Record<string, string>; users: { user: string; net: string }[] }>(`api/statements?group=phys&from=${FROM}&to=${TO}`, 'prof');
    expect(body.totals).toMatchObject({ hours: st.body.total.hours, gross: st.body.total.gross, net: st.body.total.net, students: 2 });
    await expectTotals(page, body.totals, ['students', 'hours', 'gross', 'net', 'idle_hours']);
    expect(await column(page, 'students', 'net')).toEqual(body.students.rows.map((r) => r.net));
    // carol: 2h45 large = 9.90 of a 10.00 budget.
    expect(body.at_risk.map((r) => r.user)).toEqual(['carol']);
    const carolQuota = await api<{ used: string }>('api/users/carol/quota', 'carol');
    expect(body.students.rows.find((r) => r.user === 'carol')).toMatchObject({ budget_used: carolQuota.body.used });
    expect(await page.textContent('#at-risk')).toContain('carol');
    await expectAA(page);
    expect((await api('api/dashboard/groups/chem', 'prof')).status).toBe(403);
    await page.screenshot({ path: join(SHOTS, 'instructor-1280.png'), fullPage: true });
  }, 120_000);

  it('sorts the student table from the keyboard', async () => {
    await page.focus('button[data-sort="user"]');
    const before = await page.getAttribute('body', 'data-loaded');
    await page.keyboard.press('Enter');
    await reloaded(page, before);
    const users = await page.$$eval('#students tbody th', (ths) => ths.map((t) => t.textContent));
    expect(users).toEqual(['carol', 'alice']);
    expect(await page.getAttribute('button[data-sort="user"]', 'data-sort')).toBe('user');
    expect(await page.$eval(':focus', (el) => el.getAttribute('data-sort'))).toBe('user');
  });

  it('exports the table as CSV, the same lines as the API', async () => {
    const href = await page.getAttribute('#csv', 'href');
    const csv = await page.evaluate(async (u) => (await fetch(u!)).text(), href);
    const lines = csv.trim().split('\r\n');
    expect(lines[0]).toBe('user,hours,gross_EUR,net_EUR,idle_hours,budget_used,budget_limit,budget_unit,budget_percent');
    const { body } = await api<Course>(`api/dashboard/groups/phys?from=${FROM}&to=${TO}&sort=user&order=asc`, 'prof');
    expect(lines.slice(1).map((l) => l.split(',').slice(0, 4).join(','))).toEqual(body.students.rows.map((r) => [r.user, r.hours, r.gross, r.net].join(',')));
  });

  it('creates a read-only share link that works without a hub login', async () => {
    await page.click('#share-create');
    await page.waitForSelector('#share-url');
    shareUrl = await page.inputValue('#share-url');
    expect(shareUrl).toContain(`${PREFIX}dashboard/shared#`);
    const anon = await newPage(390);
    await anon.goto(shareUrl.replace(/^https?:\/\/[^/]+/, hub.url));
    await loaded(anon);
    const { body } = await api<Course>(`api/dashboard/groups/phys?from=${FROM}&to=${TO}`, 'prof');
    await anon.selectOption('#period', 'last-30');
    const before = await anon.getAttribute('body', 'data-loaded');
    await anon.click('#apply');
    await reloaded(anon, before);
    expect(await field(anon, 'totals.net')).toBe(body.totals.net);
    expect(await anon.$('#csv')).toBeNull();
    await anon.screenshot({ path: join(SHOTS, 'shared-390.png'), fullPage: true });
  }, 60_000);
});

describe('an admin', () => {
  let page: Page;
  it('sees the whole hub, equal to the API', async () => {
    page = await login('ursula', 'dashboard/admin?period=last-30');
    await loaded(page);
    const { body } = await api<{ totals: Record<string, string | number>; forecast: Record<string, string>; budgets_at_risk: { rows: { subject: string }[] }; groups: { group: string; net: string }[] }>(
      `api/dashboard/hub?from=${FROM}&to=${TO}`,
      'ursula',
    );
    const st = await api<{ total: Record<string, string>; groups: { group: string; net: string }[] }>(`api/statements?from=${FROM}&to=${TO}`, 'ursula');
    expect(body.totals).toMatchObject({ users: 4, hours: st.body.total.hours, gross: st.body.total.gross, net: st.body.total.net });
    expect(body.groups).toEqual(st.body.groups);
    await expectTotals(page, body.totals, ['users', 'hours', 'gross', 'net']);
    expect(await field(page, 'forecast.projected')).toBe(body.forecast.projected);
    expect(await column(page, 'groups', 'net')).toEqual(body.groups.map((g) => g.net));
    expect(body.budgets_at_risk.rows.map((r) => r.subject)).toContain('carol');
    // The hub's budget figures are the quota API's, including a session cut by the window's start.
    const rows = body.budgets_at_risk.rows as unknown as { subject: string; used: string }[];
    const carolQuota = await api<{ used: string }>('api/users/carol/quota', 'carol');
    expect(rows.find((r) => r.subject === 'carol')?.used).toBe(carolQuota.body.used);
    // bob: 1 h inside the window (0.60) plus the part of the straddling session after the window's
    // start, about an hour (the window moves with the clock, so the two reads may differ by a
    // billing increment); counting the whole straddling session would give 2.40.
    const bobQuota = Number((await api<{ used: string }>('api/users/bob/quota', 'bob')).body.used);
    const bobHub = Number(rows.find((r) => r.subject === 'bob')?.used);
    expect(Math.abs(bobHub - bobQuota)).toBeLessThanOrEqual(0.011);
    expect(bobHub).toBeGreaterThan(1.0);
    expect(bobHub).toBeLessThanOrEqual(1.21);
    expect(await page.textContent('#budgets-at-risk')).toContain('carol');
    expect(await page.locator('canvas').count()).toBe(3);
    await expectAA(page);
    await page.screenshot({ path: join(SHOTS, 'admin-1280.png'), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload();
    await loaded(page);
    expect(await page.$eval('html', (el) => el.scrollWidth)).toBeLessThanOrEqual(390);
    await page.screenshot({ path: join(SHOTS, 'admin-390.png'), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
  }, 120_000);

  it('validates rate card and budget settings and names the bad field', async () => {
    const draft = await page.inputValue('#settings-draft');
    // The draft is the version in force: the community file's, recorded at start.
    expect(JSON.parse(draft).budgets.users.bob.limit).toBe('1');
    expect(await page.textContent('#settings-version')).toContain('Version 1, from the community file');
    await page.fill('#settings-draft', JSON.stringify({ currency: 'euro', rateCards: [], budgets: { default: { limit: '-3' } } }));
    await page.click('#settings-validate');
    await page.waitForSelector('#settings-result [role="alert"]');
    const text = await page.textContent('#settings-result');
    expect(text).toContain('currency');
    expect(text).toContain('budgets.default.limit');
    await page.fill('#settings-draft', draft);
    await page.click('#settings-validate');
    await page.waitForSelector('#settings-result .good');
  });

  it('saves a new budget from the page: prices, budgets and the quota API follow at once', async () => {
    const before = await api<{ students: { rows: { user: string; budget_limit: string }[] } }>(`api/dashboard/groups/chem?from=${FROM}&to=${TO}`, 'ursula');
    expect(before.body.students.rows.find((r) => r.user === 'bob')?.budget_limit).toBe('1.00');
    const edited = JSON.parse(await page.inputValue('#settings-draft'));
    edited.budgets.users.bob.limit = '2.50';
    await page.fill('#settings-draft', JSON.stringify(edited, null, 2));
    await page.fill('#settings-note', 'bob gets a project extension');
    await page.click('#settings-save');
    await page.waitForSelector('#settings-result :text("Saved as version 2")');
    expect(await page.textContent('#settings-version')).toContain('Version 2, from the dashboard (ursula');
    expect(await page.textContent('#settings-history')).toContain('bob gets a project extension');
    await page.screenshot({ path: join(SHOTS, 'admin-settings-saved.png'), fullPage: true });

    const settings = await api<{ version: number; author: string; editable: { budgets: { users: Record<string, { limit: string }> } } }>('api/dashboard/settings', 'ursula');
    expect(settings.body).toMatchObject({ version: 2, author: 'ursula' });
    expect(settings.body.editable.budgets.users.bob!.limit).toBe('2.50');
    const after = await api<{ students: { rows: { user: string; budget_limit: string }[] } }>(`api/dashboard/groups/chem?from=${FROM}&to=${TO}`, 'ursula');
    expect(after.body.students.rows.find((r) => r.user === 'bob')?.budget_limit).toBe('2.50');
    expect((await api<{ limit: string }>('api/users/bob/quota', 'bob')).body.limit).toBe('2.50');
  });

  it('refuses a save without the version edited, on top of a newer one, with bad settings, or by a non-admin', async () => {
    const put = (user: string, body: unknown, ifMatch?: string) =>
      app.inject({ method: 'PUT', url: `${PREFIX}api/dashboard/settings`, headers: { authorization: `token ${tokens[user]}`, ...(ifMatch ? { 'if-match': ifMatch } : {}) }, payload: body as object });
    const current = (await api<{ editable: unknown }>('api/dashboard/settings', 'ursula')).body.editable;
    const noVersion = await put('ursula', { editable: current });
    expect(noVersion.statusCode).toBe(428);
    expect(noVersion.json()).toMatchObject({ statusCode: 428, error: 'Precondition Required' });
    // Version 1 was edited into version 2 already: saving on top of 1 would undo that unseen.
    const stale = await put('ursula', { editable: current }, '"v1"');
    expect(stale.statusCode).toBe(412);
    expect(stale.json().message).toContain('version 2 is in force');
    const invalid = await put('ursula', { editable: { rateCards: [{ id: 'x', effectiveFrom: 'soon' }], budgets: {} } }, '"v2"');
    expect(invalid.statusCode).toBe(422);
    expect(invalid.json()).toMatchObject({ statusCode: 422, error: 'Unprocessable Entity' });
    expect(invalid.json().issues.map((i: { path: string }) => i.path)).toContain('rateCards.0.effectiveFrom');
    expect((await put('prof', { editable: current }, '"v2"')).statusCode).toBe(403);
    expect((await api('api/dashboard/settings', 'prof')).status).toBe(403);
    // None of these changed anything.
    expect((await api<{ version: number }>('api/dashboard/settings', 'ursula')).body.version).toBe(2);
  });

  it('revokes the share link; the link is then refused', async () => {
    await page.waitForSelector('#admin-shares button.revoke');
    await page.click('#admin-shares button.revoke');
    await page.waitForSelector('#admin-shares :text("revoked by ursula")');
    const anon = await newPage();
    await anon.goto(shareUrl.replace(/^https?:\/\/[^/]+/, hub.url));
    await anon.waitForSelector('body[data-loaded^="error"]');
    expect(await anon.textContent('#error')).toContain('revoked');
    const token = decodeURIComponent(new URL(shareUrl).hash.slice(1));
    const res = await app.inject({ method: 'GET', url: `${PREFIX}api/dashboard/shared`, headers: { 'x-hubside-share': token } });
    expect(res.statusCode).toBe(403);
    expect(res.json()).toMatchObject({ statusCode: 403, code: 'HUBSIDE_USAGE_ERR_SHARE' });
  });
});

describe('share links', () => {
  it('refuses an expired link, a forged one and a missing one; only admins or the creator revoke', async () => {
    const key = shareKeyFrom(SERVICE_TOKEN);
    const id = randomUUID();
    const past = new Date(Date.now() - 2 * DAY);
    await (app.db as unknown as Kysely<SharesDB>)
      .insertInto('dashboard_shares')
      .values({ id, group_name: 'phys', created_by: 'prof', created_at: past, expires_at: new Date(Date.now() - DAY), revoked_at: null, revoked_by: null })
      .execute();
    const sign = (k: string, exp: number) => createSigner({ key: k, algorithm: 'HS256' })({ grp: 'phys', jti: id, aud: SHARE_AUDIENCE, iat: Math.floor(past.getTime() / 1000), exp });
    const shared = (token?: string) =>
      app.inject({ method: 'GET', url: `${PREFIX}api/dashboard/shared`, headers: token === undefined ? {} : { 'x-hubside-share': token } });
    const expired = await shared(sign(key, Math.floor((Date.now() - DAY) / 1000)));
    expect(expired.statusCode).toBe(403);
    expect(expired.json().message).toContain('expired');
    // A still-valid signature over a row that has expired is refused as well.
    const rowExpired = await shared(sign(key, Math.floor((Date.now() + DAY) / 1000)));
    expect(rowExpired.json().message).toContain('expired');
    const forged = await shared(sign('not-the-key', Math.floor((Date.now() + DAY) / 1000)));
    expect(forged.statusCode).toBe(403);
    expect(forged.json().message).toContain('not valid');
    expect((await shared()).statusCode).toBe(403);
    expect((await shared('garbage')).statusCode).toBe(403);

    const made = await app.inject({ method: 'POST', url: `${PREFIX}api/dashboard/shares`, headers: { authorization: `token ${tokens.prof}` }, payload: { group: 'phys', days: 1 } });
    expect(made.statusCode).toBe(201);
    const mine = made.json() as { id: string };
    const byStudent = await app.inject({ method: 'DELETE', url: `${PREFIX}api/dashboard/shares/${mine.id}`, headers: { authorization: `token ${tokens.alice}` } });
    expect(byStudent.statusCode).toBe(403);
    expect((await app.inject({ method: 'POST', url: `${PREFIX}api/dashboard/shares`, headers: { authorization: `token ${tokens.alice}` }, payload: { group: 'phys' } })).statusCode).toBe(403);
    expect((await app.inject({ method: 'POST', url: `${PREFIX}api/dashboard/shares`, headers: { authorization: `token ${tokens.prof}` }, payload: { group: 'phys', days: 1000 } })).statusCode).toBe(400);
  });
});

describe('bad input', () => {
  it.each([
    ['api/dashboard/me?from=2026-02-30', 'alice'],
    ['api/dashboard/me?from=2026-05-01&to=2026-04-01', 'alice'],
    ['api/dashboard/me?bogus=1', 'alice'],
    ['api/dashboard/groups/phys?page=0', 'prof'],
    ['api/dashboard/groups/phys?per_page=100000', 'prof'],
    ['api/dashboard/groups/phys?sort=password', 'prof'],
    ['api/dashboard/hub?from=1999-12-31', 'ursula'],
  ])('%s → 400 JSON', async (path, user) => {
    const res = await api<{ statusCode: number; code: string }>(path, user);
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ statusCode: 400, code: expect.any(String) });
  });

  it('an admin asking for an unknown group gets 404, never a 5xx for any query string', async () => {
    expect((await api('api/dashboard/groups/no-such-group', 'ursula')).status).toBe(404);
    // Names that are also Object.prototype's keys find no budget or group (the fuzzer found these once).
    for (const g of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) expect((await api(`api/dashboard/groups/${g}`, 'ursula')).status).toBe(404);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('api/dashboard/me', 'api/dashboard/groups/phys', 'api/dashboard/hub', 'api/dashboard/groups/phys/students.csv'),
        fc.constantFrom('from', 'to', 'page', 'per_page', 'sort', 'order', 'x'),
        fc.string({ maxLength: 40 }),
        async (route, key, value) => {
          const res = await api(`${route}?${key}=${encodeURIComponent(value)}`, 'ursula');
          expect(res.status).toBeLessThan(500);
        },
      ),
      { numRuns: 40 },
    );
  });
});
