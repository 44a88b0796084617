/**
 * The spawn page in real headless Chromium, behind a real JupyterHub's OAuth login, with
 * profile-api as a hub-managed service: group-filtered profiles with resources and prices,
 * live validation of the unlisted image, keyboard use, the hub spawn with progress, and the
 * remembered last choice. Screenshots go to test-artifacts/profile-api/.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, freePort, startHub, waitFor } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import { chromium } from 'playwright-core';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { communityProfiles } from './fixtures.js';

const CLI = fileURLToPath(new URL('../../../packages/cli/bin/hubside.js', import.meta.url));
const SHOTS = fileURLToPath(new URL('../../../test-artifacts/profile-api/', import.meta.url));
let hub: RunningHub;
let database: TestDatabase;
let browser: Browser;
let page: Page;
let configDir: string;

beforeAll(async () => {
  await mkdir(SHOTS, { recursive: true });
  database = await createTestDatabase({ schemas: ['profile_api'] });
  configDir = await mkdtemp(join(tmpdir(), 'hubside-profile-page-'));
  const configFile = join(configDir, 'community.yaml');
  // JSON is YAML: the community file with the profiles.
  await writeFile(configFile, JSON.stringify({ community: { name: 'Spawn page test', currency: 'EUR' }, 'profile-api': { profiles: communityProfiles } }));
  const port = await freePort();
  hub = await startHub({
    users: ['bob', 'alice'],
    groups: { 'gpu-users': ['alice'] },
    roles: [
      // JupyterHub 3.0 grants an OAuth client the intersection of *raw* role scopes: `self` does not
      // count as `servers!user`, so users hold the spawn-page scopes explicitly.
      { name: 'hubside-users', scopes: ['access:services!service=profile-api', 'servers!user', 'read:servers!user'], users: ['bob', 'alice'] },
      { name: 'profile-api', scopes: ['read:users', 'list:groups', 'read:groups'], services: ['profile-api'] },
    ],
    services: [
      {
        name: 'profile-api',
        url: `http://127.0.0.1:${port}`,
        command: [process.execPath, CLI, 'profile-api'],
        oauth_no_confirm: true,
        // The page starts the user's own server with the user's token.
        oauth_client_allowed_scopes: ['servers!user', 'read:servers!user', 'access:services!service=profile-api'],
        environment: {
          HUBSIDE_CONFIG: configFile,
          HUBSIDE_DATA_DIR: database.dataDir,
          ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
          HUBSIDE_LOG_LEVEL: 'warn',
        },
      },
    ],
  });
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await hub?.stop();
  await database?.drop();
  if (configDir) await rm(configDir, { recursive: true, force: true });
});

describe('the spawn page', () => {
  it('logs in through the hub and shows only the profiles the user may use, with resources and price', async () => {
    await page.goto(`${hub.url}/services/profile-api/`, { timeout: 60_000 });
    await page.fill('#username_input', 'bob');
    await page.fill('#password_input', 'any');
    await page.click('#login_submit');
    await page.waitForURL(`${hub.url}/services/profile-api/`);
    await page.waitForSelector('.profile');
    expect(await page.textContent('#user')).toBe('bob');
    const slugs = await page.$$eval('.profile', (els) => els.map((e) => e.getAttribute("data-slug")));
    expect(slugs).toEqual(['datascience']);
    const meta = await page.textContent('.profile .price');
    expect(meta).toBe('2 CPU · 2 GiB RAM · 0.05 EUR per hour');
    const memory = await page.$$eval('#profile-datascience-memory option', (os) => os.map((o) => o.getAttribute("value")));
    expect(memory).toEqual(['2G', '4G', '8G']);
    // The price of the selection is computed by resolve's own function: 0.05 + 0.1, exactly.
    expect(await page.textContent('#total')).toBe('Price: 0.05 EUR per hour');
    await page.selectOption('#profile-datascience-memory', '8G');
    expect(await page.textContent('#total')).toBe('Price: 0.15 EUR per hour');
    await page.selectOption('#profile-datascience-memory', '2G');
    await page.screenshot({ path: join(SHOTS, '01-profiles.png'), fullPage: true });
  }, 90_000);

  it('validates the unlisted image live and refuses to submit a bad one', async () => {
    await page.selectOption('#profile-datascience-image', '--unlisted-choice');
    const input = page.locator('#profile-datascience-image--unlisted');
    await expect.poll(() => input.isVisible()).toBe(true);
    await input.fill('no-tag');
    expect(await input.getAttribute('aria-invalid')).toBe('true');
    expect(await page.textContent('#profile-datascience-image--unlisted-error')).toBe('an image name with a tag, like repo/image:tag');
    await page.screenshot({ path: join(SHOTS, '02-unlisted-invalid.png'), fullPage: true });
    await page.click('#start');
    expect(await page.textContent('#form-error')).toContain('fix the highlighted field');
    await input.fill('ghcr.io/me/img:1.0');
    expect(await input.getAttribute('aria-invalid')).toBe('false');
  });

  it('starts the server from the keyboard, follows progress and lands on the server', async () => {
    await page.focus('#profile-datascience-memory');
    await page.keyboard.press('ArrowDown'); // 2G → 4G
    expect(await page.inputValue('#profile-datascience-memory')).toBe('4G');
    await page.focus('#start');
    await page.keyboard.press('Enter');
    await page.screenshot({ path: join(SHOTS, '03-starting.png'), fullPage: true });
    let error: string | null = null;
    await waitFor(
      async () => {
        error = /\/user\/bob\//.test(page.url()) ? null : await page.locator('#form-error').textContent({ timeout: 200 }).catch(() => null);
        return Boolean(error) || /\/user\/bob\//.test(page.url());
      },
      { timeoutMs: 90_000, intervalMs: 200, what: 'the browser to land on the server' },
    );
    expect(error).toBeFalsy();
    // The notebook UI is heavy and not under test: leave it, so a busy machine isn't slowed further.
    await page.goto('about:blank');
    // No screenshot of the server's own page: Playwright waits for its web fonts, which a busy machine takes long to load.
    const user = await hub.api<{ servers: Record<string, { user_options: Record<string, unknown> }> }>('GET', '/users/bob');
    expect(user.body.servers['']?.user_options).toEqual({ profile: 'datascience', 'image--unlisted-choice': 'ghcr.io/me/img:1.0', memory: '4G' });
  }, 120_000);

  it('remembers the last choice', async () => {
    await hub.stopServer('bob');
    await page.goto(`${hub.url}/services/profile-api/`, { timeout: 60_000 });
    await page.waitForSelector('.profile', { timeout: 30_000 });
    expect(await page.inputValue('#profile-datascience-image')).toBe('--unlisted-choice');
    expect(await page.inputValue('#profile-datascience-image--unlisted')).toBe('ghcr.io/me/img:1.0');
    expect(await page.inputValue('#profile-datascience-memory')).toBe('4G');
    await page.screenshot({ path: join(SHOTS, '04-remembered.png'), fullPage: true });
  }, 120_000);

  it('refuses through the page what the API refuses: a choice outside the user\'s groups', async () => {
    const res = await page.evaluate(async () => {
      const r = await fetch('/services/profile-api/api/spawn', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ profile: 'gpu' }) });
      return { status: r.status, body: (await r.json()) as { field?: string } };
    });
    expect(res.status).toBe(403);
    expect(res.body.field).toBe('profile');
  });
});
