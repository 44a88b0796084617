/**
 * The whole product, started exactly as `npm start` starts it (scripts/product/product.mjs, on free
 * ports), clicked through in Chromium by the demo people: log in, start a server from a profile,
 * see usage, the course, the budget, and a community admin's edit taking effect without a restart.
 *
 * The seams of docs/community-model.md are asserted across the services: the hub's own /hub/spawn
 * shows profile-api's form, the pre-spawn hook records `user_options.hubside`, and the price the
 * spawn page shows is the price the collector bills.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { waitFor } from '@hubside/testing';
import { chromium } from 'playwright-core';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICES, startProduct } from '../../scripts/product/product.mjs';
import type { RunningProduct } from '../../scripts/product/product.mjs';

const SHOTS = resolve('test-artifacts/product');
const HUB_TIMEOUT_MS = 180_000;
// A real hub, servers and Chromium on a shared 2-core machine: generous, but bounded.
const STEP_MS = 120_000;

let product: RunningProduct;
let browser: Browser;
let stateDir: string;

beforeAll(async () => {
  await mkdir(SHOTS, { recursive: true });
  stateDir = await mkdtemp(join(tmpdir(), 'hubside-product-'));
  product = await startProduct({ ports: 'free', stateDir, pollSeconds: 2, logLevel: 'warn', timeoutMs: HUB_TIMEOUT_MS });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}, HUB_TIMEOUT_MS + 60_000);

afterAll(async () => {
  await browser?.close();
  await product?.stop();
  // The logs of the hub and the services stay with the screenshots.
  if (product) await cp(product.logDir, join(SHOTS, 'logs'), { recursive: true }).catch(() => undefined);
  if (stateDir) await rm(stateDir, { recursive: true, force: true });
}, 60_000);

async function loginAs(name: string): Promise<Page> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${product.url}/hub/login`);
  await page.fill('#username_input', name);
  await page.click('#login_submit');
  await page.waitForURL(/\/hub\/(home|spawn|user)/);
  return page;
}

/** A same-origin request from the page, with the cookies the service set at its OAuth login. */
async function fromPage<T = unknown>(page: Page, path: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) {
  return page.evaluate(
    async ({ path, init }) => {
      const res = await fetch(path, {
        method: init.method ?? 'GET',
        headers: { accept: 'application/json', ...(init.body === undefined ? {} : { 'content-type': 'application/json' }), ...init.headers },
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
      });
      const text = await res.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // Not JSON: keep the text.
      }
      return { status: res.status, body, etag: res.headers.get('etag') };
    },
    { path, init },
  ) as Promise<{ status: number; body: T; etag: string | null }>;
}

/** The hub API, as usage-collector (list:users, read:servers) sees it. */
async function hubApi<T>(path: string): Promise<T> {
  const res = await fetch(`${product.hubApiUrl}${path}`, { headers: { authorization: `token ${product.serviceTokens['usage-collector']}` } });
  expect(res.status, `GET ${path}`).toBe(200);
  return (await res.json()) as T;
}

interface ServerModel {
  ready: boolean;
  user_options?: Record<string, unknown>;
}
async function server(user: string): Promise<ServerModel | undefined> {
  return (await hubApi<{ servers?: Record<string, ServerModel> }>(`/users/${encodeURIComponent(user)}`)).servers?.[''];
}

/** The environment of a user's running single-user server, read from /proc (same machine, simple spawner). */
function serverEnv(user: string): Record<string, string> | undefined {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let raw: string;
    try {
      raw = readFileSync(`/proc/${pid}/environ`, 'utf8');
    } catch {
      continue;
    }
    const env = Object.fromEntries(
      raw
        .split('\0')
        .filter(Boolean)
        .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
    );
    if (env.JUPYTERHUB_USER === user && env.JUPYTERHUB_SERVICE_PREFIX?.startsWith('/user/') && env.HUBSIDE_PRODUCT_SETTINGS === undefined) return env;
  }
  return undefined;
}

describe('npm start, as the demo people see it', () => {
  it('came up within its budget of time, the hub and every service through the proxy', () => {
    // The 20 s goal is measured by bench/start on a quiet machine; this bound only catches a hang.
    expect(product.timings.readyMs).toBeLessThan(HUB_TIMEOUT_MS);
    expect(product.seededSessions).toBeGreaterThan(0);
  }, STEP_MS);

  it('shows a login page that lists the demo people and labels the fallback login', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${product.url}/hub/login`);
    const rows = await page.locator('#hubside-people tbody tr').evaluateAll((trs) => trs.map((tr) => (tr as unknown as { dataset: { person?: string } }).dataset.person));
    expect(rows).toEqual(product.demo.people.map((p) => p.name));
    for (const who of [product.demo.instructor, 'alice', 'grace', 'admin']) expect(rows).toContain(who);
    if (product.login === 'fallback') {
      await expect(page.locator('#hubside-fallback-notice').textContent()).resolves.toContain('pip install oauthenticator');
    }
    await page.screenshot({ path: join(SHOTS, 'login.png'), fullPage: true });
    // Only the demo people log in.
    await page.fill('#username_input', 'mallory');
    await page.click('#login_submit');
    await expect(page.locator('.login_error').textContent()).resolves.toMatch(/invalid/i);
    await context.close();
  }, STEP_MS);

  it('lists the services by display name, and each answers through the hub', async () => {
    const page = await loginAs('alice');
    await page.goto(`${product.url}/hub/home`);
    const names = await page.locator('a.dropdown-item').allTextContents();
    expect(names.map((n) => n.trim())).toEqual(expect.arrayContaining(['Start a server', 'Usage and budget', 'Data access']));
    expect(names.map((n) => n.trim())).not.toContain('usage-collector');
    await page.screenshot({ path: join(SHOTS, 'home.png'), fullPage: true });
    for (const name of SERVICES) {
      const res = await fetch(`${product.url}/services/${name}/health`);
      expect(res.status, name).toBe(200);
      await res.body?.cancel();
    }
    // Her OAuth login to a service works (roles: access:services).
    await page.goto(`${product.url}/services/usage-collector/`);
    expect((await fromPage<{ name: string }>(page, '/services/usage-collector/api/whoami')).body.name).toBe('alice');
    await page.context().close();
  }, STEP_MS);

  it("polls the hub's users without a 403: usage-collector's role has what the poll needs", async () => {
    const metrics = async () => {
      const res = await fetch(`${product.url}/services/usage-collector/metrics`, {
        headers: { authorization: `token ${product.serviceTokens['usage-collector']}` },
      });
      return res.text();
    };
    await waitFor(async () => /hubside_usage_polls_total\{[^}]*result="ok"[^}]*\} [1-9]/.test(await metrics()), {
      timeoutMs: 30_000,
      what: 'a successful usage poll',
    });
    expect(await metrics()).not.toMatch(/hubside_usage_polls_total\{[^}]*result="error"[^}]*\} [1-9]/);
    expect(readFileSync(join(product.logDir, 'jupyterhub.log'), 'utf8')).not.toMatch(/403 GET \/hub\/api\/users\?/);
  }, STEP_MS);

  it("lets a student start a server from profile-api's page with the image she picked, and her usage then shows", async () => {
    const page = await loginAs('alice');
    await page.goto(`${product.url}/services/profile-api/`);
    const slug = product.demo.profiles.find((p) => !p.allowed_groups?.length)!.slug;
    await page.check(`#profile-${slug}`);
    const imageSelect = page.locator(`#profile-${slug}-image`);
    const images = await imageSelect.locator('option').evaluateAll((os) => os.map((o) => (o as unknown as { value: string }).value));
    const image = images.find((v) => v !== '--unlisted-choice' && v !== 'scipy') ?? images[0]!;
    await imageSelect.selectOption(image);
    await page.screenshot({ path: join(SHOTS, 'profile-api-spawn.png'), fullPage: true });
    await page.click('#start');
    await waitFor(
      async () => {
        // A refusal (the hub's 403 without servers!user) shows on the page: fail with it at once.
        const refused = await page.locator('#form-error').textContent({ timeout: 500 }).catch(() => '');
        if (refused) throw new Error(`the spawn page says: ${refused}`);
        return (await server('alice'))?.ready === true;
      },
      { timeoutMs: 60_000, what: "alice's server to be ready" },
    );
    const expected = (product.demo.profiles.find((p) => p.slug === slug)!.profile_options as Record<string, { choices: Record<string, { kubespawner_override: { image: string } }> }>)
      .image!.choices[image]!.kubespawner_override.image;
    expect(serverEnv('alice')?.HUBSIDE_IMAGE).toBe(expected);
    expect((await server('alice'))?.user_options).toMatchObject({ profile: slug, image });

    // The poll records it, and it is on her own dashboard.
    await page.goto(`${product.url}/services/usage-collector/`);
    await waitFor(
      async () => {
        const me = await fromPage<Record<string, unknown>>(page, '/services/usage-collector/api/dashboard/me');
        return me.status === 200 && JSON.stringify(me.body).includes(slug);
      },
      { timeoutMs: 30_000, what: "alice's session on her dashboard" },
    );
    await page.screenshot({ path: join(SHOTS, 'student-dashboard.png'), fullPage: true });
    await page.context().close();
  }, STEP_MS);

  it('bills her session at the price the spawn page showed (user_options.hubside)', async () => {
    const options = (await server('alice'))?.user_options;
    expect(options, 'the pre-spawn hook records user_options.hubside').toHaveProperty('hubside');
    const hubside = options!.hubside as { price_per_hour: string; currency: string };
    const page = await loginAs('alice');
    await page.goto(`${product.url}/services/profile-api/`);
    await expect(page.locator('.profile.selected .price').textContent()).resolves.toContain(Number(hubside.price_per_hour).toFixed(2));
    await page.goto(`${product.url}/services/usage-collector/`);
    const usage = await fromPage(page, '/services/usage-collector/api/usage?user=alice');
    expect(JSON.stringify(usage.body)).toContain(hubside.currency);
    await page.context().close();
  }, STEP_MS);

  it("shows the instructor their course, with the students' seeded usage", async () => {
    const { instructor, course } = product.demo;
    const page = await loginAs(instructor);
    await page.goto(`${product.url}/services/usage-collector/dashboard/course`);
    const access = await fromPage<{ groups: string[] }>(page, '/services/usage-collector/api/dashboard/access');
    expect(access.status).toBe(200);
    expect(access.body.groups).toContain(course);
    const view = await fromPage(page, `/services/usage-collector/api/dashboard/groups/${encodeURIComponent(course)}`);
    expect(view.status).toBe(200);
    expect(JSON.stringify(view.body)).toContain('bob');
    await page.waitForLoadState('networkidle');
    await page.screenshot({ path: join(SHOTS, 'instructor-course.png'), fullPage: true });
    // A student may not see the course.
    const student = await loginAs('bob');
    await student.goto(`${product.url}/services/usage-collector/`);
    expect((await fromPage(student, `/services/usage-collector/api/dashboard/groups/${encodeURIComponent(course)}`)).status).toBe(403);
    await page.context().close();
    await student.context().close();
  }, STEP_MS);

  it('shows the hub admin the hub and every service admin view', async () => {
    const page = await loginAs('admin');
    const adminPage = await page.goto(`${product.url}/hub/admin`);
    expect(adminPage?.status()).toBe(200);
    const usageAdmin = await page.goto(`${product.url}/services/usage-collector/dashboard/admin`);
    expect(usageAdmin?.status()).toBe(200);
    await page.waitForLoadState('networkidle');
    await page.screenshot({ path: join(SHOTS, 'admin-usage.png'), fullPage: true });
    await page.context().close();
  }, STEP_MS);

  it('refuses a student over budget, with the budget message on the spawn page', async () => {
    const quota = await fetch(`${product.url}/services/usage-collector/api/users/dan/quota`, {
      headers: { authorization: `token ${product.serviceTokens['usage-collector']}` },
    });
    const answer = (await quota.json()) as { allow_server_launch: boolean; message: string };
    expect(answer.allow_server_launch).toBe(false);
    const page = await loginAs('dan');
    await page.goto(`${product.url}/hub/spawn`);
    // With the hub's own form (from profile-api), submitting it is what triggers the check.
    const submit = page.locator('#spawn_form input[type=submit], #spawn_form button[type=submit]');
    if ((await submit.count()) > 0) await submit.first().click();
    try {
      await waitFor(async () => ((await page.textContent('body')) ?? '').includes(answer.message), {
        timeoutMs: 30_000,
        what: `usage-collector's budget message (${answer.message}) on dan's spawn page`,
      });
    } finally {
      await page.screenshot({ path: join(SHOTS, 'over-budget.png'), fullPage: true });
    }
    expect((await server('dan'))?.ready ?? false).toBe(false);
    await page.context().close();
  }, STEP_MS);

  it("lets a community admin edit a profile; the student's spawn page follows without a restart", async () => {
    // grace is a community admin through the community file's community.admins (not a hub admin).
    expect(product.demo.communityAdmins, 'the example community names its admins').toBeTruthy();
    const editor = 'grace';
    const page = await loginAs(editor);
    await page.goto(`${product.url}/services/profile-api/`);
    const doc = await fromPage<{ profiles: Array<Record<string, unknown>> }>(page, '/services/profile-api/api/profiles/document');
    expect(doc.status, JSON.stringify(doc.body)).toBe(200);
    const slug = product.demo.profiles.find((p) => !p.allowed_groups?.length)!.slug;
    const profiles = structuredClone(doc.body.profiles);
    const edited = profiles.find((p) => p.slug === slug)!;
    edited.description = `Edited by ${editor}: now with more memory`;
    edited.price_per_hour = 0.07;
    const put = await fromPage(page, '/services/profile-api/api/profiles', {
      method: 'PUT',
      body: { profiles, message: 'price up' },
      headers: { 'if-match': doc.etag ?? '' },
    });
    expect([200, 201], JSON.stringify(put.body)).toContain(put.status);
    await page.context().close();

    const student = await loginAs('bob');
    await student.goto(`${product.url}/services/profile-api/`);
    await expect(student.locator(`.profile[data-slug="${slug}"] .meta`).first().textContent()).resolves.toContain(`Edited by ${editor}`);
    await expect(student.locator(`.profile[data-slug="${slug}"] .price`).textContent()).resolves.toContain('0.07');
    await student.screenshot({ path: join(SHOTS, 'after-admin-edit.png'), fullPage: true });
    await student.context().close();
  }, STEP_MS);

  it("offers the hub's own /hub/spawn form from profile-api, and starts the server with the profile picked there", async () => {
    const page = await loginAs('bob');
    await page.goto(`${product.url}/hub/spawn`);
    expect(await page.locator('#spawn_form').count(), "profile-api's form on the hub's /hub/spawn").toBeGreaterThan(0);
    const text = (await page.textContent('#spawn_form')) ?? '';
    for (const p of product.demo.profiles.filter((x) => !x.allowed_groups?.length)) expect(text).toContain(String(p.display_name));
    await page.screenshot({ path: join(SHOTS, 'hub-spawn-form.png'), fullPage: true });
    await page.locator('#spawn_form input[type=submit], #spawn_form button[type=submit]').first().click();
    await waitFor(async () => (await server('bob'))?.ready === true, { timeoutMs: 60_000, what: "bob's server to be ready" });
    const options = (await server('bob'))?.user_options as { hubside?: { profile: string; price_per_hour: string } } | undefined;
    expect(options?.hubside?.profile).toBeTruthy();
    // The edit above is what bob is billed at.
    expect(options?.hubside?.price_per_hour).toBe('0.07');
    await page.context().close();
  }, STEP_MS);
});
