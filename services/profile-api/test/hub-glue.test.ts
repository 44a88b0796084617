/**
 * hub/profile_list.py inside a real JupyterHub with the simple spawner: the hub takes each user's
 * list from profile-api, a REST spawn with valid user_options starts a server with the overrides
 * applied, an invalid selection fails the spawn with profile-api's message, and while
 * profile-api is stopped the hub keeps working from the last good list.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, freePort, startHub, waitFor } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import { chromium } from 'playwright-core';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { optionField } from '../src/routes/spawn-form-html.js';
import { buildTestApp } from './fixtures.js';

const HUB_DIR = fileURLToPath(new URL('../../../hub/', import.meta.url));
let hub: RunningHub;
let database: TestDatabase;
let app: FastifyInstance | undefined;
let port: number;
const serviceToken = randomBytes(32).toString('hex');

async function startProfileApi(): Promise<void> {
  app = await buildTestApp({ dataDir: database.dataDir, databaseUrl: database.databaseUrl, hub: { apiUrl: hub.hubApiUrl, token: serviceToken } });
  await app.listen({ host: '127.0.0.1', port });
}

/** The environment of a user's running single-user server, read from /proc. */
async function serverEnv(user: string, server = ''): Promise<Record<string, string>> {
  const res = await hub.api<{ servers: Record<string, { state: { pid?: number } }> }>('GET', `/users/${user}`);
  const pid = res.body.servers[server]?.state?.pid;
  if (!pid) throw new Error(`no pid for ${user}/${server}: ${JSON.stringify(res.body)}`);
  const env: Record<string, string> = {};
  for (const entry of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return env;
}

beforeAll(async () => {
  database = await createTestDatabase({ schemas: ['profile_api'] });
  port = await freePort();
  const glue = {
    hubDir: HUB_DIR,
    url: `http://127.0.0.1:${port}/services/profile-api/`,
    token: serviceToken,
  };
  hub = await startHub({
    users: ['alice', 'bob', 'broke'],
    groups: { 'gpu-users': ['alice'] },
    services: [{ name: 'profile-api', url: `http://127.0.0.1:${port}`, apiToken: serviceToken }],
    roles: [
      { name: 'profile-api', scopes: ['read:users', 'list:groups', 'read:groups', 'access:services!service=profile-api'], services: ['profile-api'] },
      { name: 'hubside-users', scopes: ['access:services!service=profile-api', 'servers!user', 'read:servers!user'], users: ['bob', 'broke'] },
    ],
    // Values arrive as JSON, so nothing is pasted into Python source unquoted.
    extraConfig: `
import sys as _sys
_glue = json.loads(${JSON.stringify(JSON.stringify(glue))})
_sys.path.insert(0, _glue['hubDir'])
from profile_list import ProfileApi
_profiles = ProfileApi(url=_glue['url'], token=_glue['token'], timeout=2)

async def _hubside_pre_spawn(spawner):
    # Without KubeSpawner, prove the profile_list callable by recording what it returned.
    listed = await _profiles.profile_list(spawner)
    spawner.environment = dict(spawner.environment or {}, HUBSIDE_PROFILE_SLUGS=','.join(p['slug'] for p in listed))
    await _profiles.pre_spawn_hook(spawner)
    # Stands in for usage_quota.py's budget check: a refusal with the refuser's own message.
    if spawner.user.name == 'broke':
        from profile_list import Refused
        raise Refused(403, 'over budget: physics-101 has used its 100 EUR this month')

c.Spawner.pre_spawn_hook = _hubside_pre_spawn
c.Spawner.options_form = _profiles.options_form
c.Spawner.options_from_form = _profiles.options_from_form
`,
  });
  await startProfileApi();
}, 120_000);

afterAll(async () => {
  await app?.close();
  await hub?.stop();
  await database?.drop();
});

describe('the hub with profile-api', () => {
  it('a REST spawn with valid user_options starts a server with the overrides applied', async () => {
    await hub.startServer('bob', { name: 'ok', userOptions: { profile: 'datascience', image: 'r', memory: '8G' }, timeoutMs: 60_000 });
    const env = await serverEnv('bob', 'ok');
    expect(env).toMatchObject({
      HUBSIDE_PROFILE_SLUGS: 'datascience',
      HUBSIDE_IMAGE: 'quay.io/jupyter/r-notebook:2024-10-07',
      HUBSIDE_PROFILE: 'datascience',
      MEM_LIMIT: String(8 * 1024 ** 3),
      CPU_LIMIT: '2.0',
    });
    await hub.stopServer('bob', 'ok');
  }, 120_000);

  it('the hook records the resolved price, currency, resources and version in user_options.hubside, over what the request carried', async () => {
    const forged = { profile: 'datascience', profile_version: 0, price_per_hour: '0', currency: 'XXX', resources: {} };
    await hub.startServer('bob', { name: 'billed', userOptions: { profile: 'datascience', image: 'r', memory: '8G', hubside: forged }, timeoutMs: 60_000 });
    const expected = {
      profile: 'datascience',
      options: { image: 'r', memory: '8G' },
      price_per_hour: '0.15',
      currency: 'USD',
      resources: { cpuGuarantee: 0.5, cpuLimit: 2, memGuaranteeGiB: 8, memLimitGiB: 8, gpus: 0 },
      profile_version: 1,
    };
    const model = await hub.api<{ servers: Record<string, { user_options: Record<string, unknown> }> }>('GET', '/users/bob');
    expect(model.body.servers.billed!.user_options).toEqual({ profile: 'datascience', image: 'r', memory: '8G', hubside: expected });
    // Persisted in the hub's database too, so it survives a hub restart.
    const stored = execFileSync('/usr/bin/python3', ['-c', 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select user_options from spawners where name=?", ("billed",)).fetchone()[0])', join(hub.dir, 'jupyterhub.sqlite')], { encoding: 'utf8' });
    expect(JSON.parse(stored).hubside).toEqual(expected);
    await hub.stopServer('bob', 'billed');
  }, 120_000);

  it('the list the hub gets depends on the user\'s groups', async () => {
    await hub.startServer('alice', { name: 'gpu', userOptions: { profile: 'gpu' }, timeoutMs: 60_000 });
    const env = await serverEnv('alice', 'gpu');
    expect(env.HUBSIDE_PROFILE_SLUGS).toBe('datascience,gpu');
    expect(env.HUBSIDE_IMAGE).toBe('quay.io/jupyter/pytorch-notebook:cuda12-2024-10-07');
    await hub.stopServer('alice', 'gpu');
  }, 120_000);

  it('an invalid selection fails the spawn with the clear message', async () => {
    const gpu = await hub.api<{ message: string }>('POST', '/users/bob/servers/bad', { profile: 'gpu' });
    expect(gpu.status).toBe(403);
    expect(gpu.body.message).toContain('not available to your groups');
    const image = await hub.api<{ message: string }>('POST', '/users/bob/servers/bad', { profile: 'datascience', 'image--unlisted-choice': 'no-tag' });
    expect(image.status).toBe(422);
    expect(image.body.message).toContain('an image name with a tag');
  }, 120_000);

  it('profile-api\'s spawn page relays whoever refused the spawn, with their message and status', async () => {
    const token = await hub.createToken('broke');
    const res = await app!.inject({ method: 'POST', url: '/services/profile-api/api/spawn', headers: { authorization: `token ${token}` }, payload: { profile: 'datascience' } });
    expect(res.statusCode).toBe(403);
    expect(res.json().message).toContain('over budget: physics-101 has used its 100 EUR this month');
    expect(res.json().message).not.toContain('oauth_client_allowed_scopes');
  }, 60_000);

  it('while profile-api is stopped, the hub keeps working from the last good list', async () => {
    await app!.close();
    app = undefined;
    await waitFor(async () => fetch(`http://127.0.0.1:${port}/`).then(() => false, () => true), { timeoutMs: 5_000, what: 'profile-api to stop' });
    await hub.startServer('bob', { name: 'down', userOptions: { profile: 'datascience', 'image--unlisted-choice': 'ghcr.io/me/img:1.0', memory: '4G' }, timeoutMs: 60_000 });
    const env = await serverEnv('bob', 'down');
    expect(env).toMatchObject({ HUBSIDE_PROFILE_SLUGS: 'datascience', HUBSIDE_IMAGE: 'ghcr.io/me/img:1.0', MEM_LIMIT: String(4 * 1024 ** 3) });
    await hub.stopServer('bob', 'down');
    // The last good list is bob's own: the GPU profile stays out of reach while profile-api is down.
    const refused = await hub.api<{ message: string }>('POST', '/users/bob/servers/bad2', { profile: 'gpu' });
    expect(refused.status).toBe(404);
    expect(refused.body.message).toContain('no such profile');
    expect(hub.logTail(400)).toContain('serving the last good profile list of bob');
    await startProfileApi();
  }, 120_000);
});

describe('the hub\'s own /hub/spawn shows profile-api\'s form', () => {
  let browser: Browser;
  let page: Page;
  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  }, 60_000);
  afterAll(async () => browser?.close());

  const field = (option: string) => optionField('datascience', option);
  async function login(user: string) {
    page = await (await browser.newContext()).newPage();
    await page.goto(`${hub.url}/hub/login`, { timeout: 60_000 });
    await page.fill('#username_input', user);
    await page.fill('#password_input', 'any');
    await page.click('#login_submit');
    await page.waitForURL(/\/hub\/(home|spawn)/);
    await page.goto(`${hub.url}/hub/spawn`);
  }

  it('shows the user\'s profiles inside the hub\'s form; a hidden field is never used', async () => {
    await login('bob');
    await page.waitForSelector('#spawn_form .hubside-spawn');
    expect(await page.$$eval('.hubside-profile', (els) => els.map((e) => e.getAttribute('data-slug')))).toEqual(['datascience']);
    const image = page.locator(`select[name="${field('image')}"]`);
    const own = page.locator(`input[name="${field('image')}--unlisted-choice"]`);
    expect(await own.isVisible()).toBe(false);
    await image.selectOption('--unlisted-choice');
    await expect.poll(() => own.isVisible()).toBe(true);
    await own.fill('ghcr.io/me/hidden:1');
    // Back to a listed image: the typed value disappears from view, so it must not be used.
    await image.selectOption('r');
    await expect.poll(() => own.isVisible()).toBe(false);
    await page.locator(`select[name="${field('memory')}"]`).selectOption('8G');
    expect(await page.textContent('.hubside-total')).toBe('Price: 0.15 USD per hour');
    await page.click('#spawn_form input[type=submit]');
    await waitFor(async () => (await hub.api<{ servers: Record<string, { ready: boolean }> }>('GET', '/users/bob')).body.servers['']?.ready === true, { timeoutMs: 60_000, what: 'bob\'s server to be ready' });
    const env = await serverEnv('bob');
    expect(env.HUBSIDE_IMAGE).toBe('quay.io/jupyter/r-notebook:2024-10-07');
    const model = await hub.api<{ servers: Record<string, { user_options: Record<string, any> }> }>('GET', '/users/bob');
    expect(model.body.servers['']!.user_options.hubside).toMatchObject({ options: { image: 'r', memory: '8G' }, price_per_hour: '0.15' });
    await page.goto('about:blank');
    await hub.stopServer('bob');
  }, 120_000);

  it('a refusal reaches the person on the hub\'s page with the refuser\'s message', async () => {
    await login('bob');
    await page.waitForSelector('#spawn_form .hubside-spawn');
    await page.locator(`select[name="${field('image')}"]`).selectOption('--unlisted-choice');
    await page.locator(`input[name="${field('image')}--unlisted-choice"]`).fill('no-tag');
    await page.click('#spawn_form input[type=submit]');
    await expect.poll(() => page.textContent('body'), { timeout: 30_000 }).toContain('an image name with a tag, like repo/image:tag');
    await login('broke');
    await page.waitForSelector('#spawn_form .hubside-spawn');
    await page.click('#spawn_form input[type=submit]');
    await expect.poll(() => page.textContent('body'), { timeout: 30_000 }).toContain('over budget: physics-101 has used its 100 EUR this month');
  }, 120_000);
});
