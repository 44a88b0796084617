/** The login chooser in a real Chromium: search, keyboard use, and remembering the last IdP. */
import { createTestDatabase, freePort } from '@hubside/testing';
import type { TestDatabase } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import * as client from 'openid-client';
import { chromium } from 'playwright-core';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PREFIX, bridgeConfig, secretsEnv, startBridge, startUniversities } from './fixtures/setup.js';
import type { Universities } from './fixtures/setup.js';

// The redirect URI is any page that answers; the bridge's own health endpoint will do.
const RP = { clientId: 'hub', secret: 'hub-secret-0123456789abcdef', redirectUri: '' };

let database: TestDatabase;
let unis: Universities;
let app: FastifyInstance;
let browser: Browser;
let authorizeUrl: () => Promise<string>;

beforeAll(async () => {
  database = await createTestDatabase({ schemas: ['auth_bridge'] });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  RP.redirectUri = `${base}${PREFIX}health`;
  unis = await startUniversities(base);
  const config = bridgeConfig(unis, { hub: { displayName: 'Chooser Hub', clientId: RP.clientId, clientSecret: RP.secret, redirectUris: [RP.redirectUri] } }, base);
  app = await startBridge({ port, config, dataDir: database.dataDir, databaseUrl: database.databaseUrl, env: secretsEnv(unis) });
  const rp = await client.discovery(new URL(`${base}${PREFIX}oidc`), RP.clientId, undefined, client.ClientSecretPost(RP.secret), { execute: [client.allowInsecureRequests] });
  authorizeUrl = async () =>
    client
      .buildAuthorizationUrl(rp, {
        redirect_uri: RP.redirectUri,
        scope: 'openid',
        state: client.randomState(),
        code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
        code_challenge_method: 'S256',
      })
      .toString();
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await app?.close();
  await unis?.close();
  await database?.drop();
});

describe('the chooser page', () => {
  it('filters by name or keyword, follows the first match with Enter, and remembers the choice', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    unis.a.nextUser = 'alice';
    await page.goto(await authorizeUrl());
    await expect(page.title()).resolves.toBe('Log in to Chooser Hub');
    // The search field has focus and a label; typing a keyword narrows the list.
    await expect(page.evaluate<string>('document.activeElement && document.activeElement.id')).resolves.toBe('search');
    await expect(page.locator('label[for=search]').count()).resolves.toBe(1);
    await page.keyboard.type('aachen');
    await expect(page.locator('#idps li:not([hidden])').allInnerTexts()).resolves.toEqual(['University A']);
    await expect(page.locator('#count').innerText()).resolves.toBe('1 institution');
    await page.keyboard.press('Enter');
    await page.waitForURL((u) => u.pathname.endsWith(`${PREFIX}health`));
    expect(new URL(page.url()).searchParams.get('code')).toBeTruthy();

    // Next time, University A comes first and says it was used last; Tab reaches it from the search.
    // A live session would skip the chooser, so look at it from a new browser that has only the cookie.
    const fresh = await browser.newContext();
    await fresh.addCookies((await context.cookies()).filter((c) => c.name === 'hubside_auth_last_idp'));
    const second = await fresh.newPage();
    await second.goto(await authorizeUrl());
    await expect(second.locator('#idps li').first().innerText()).resolves.toContain('(last used)');
    await expect(second.locator('#idps li').first().innerText()).resolves.toContain('University A');
    await second.keyboard.press('Tab');
    await expect(second.evaluate<string>('document.activeElement && document.activeElement.dataset.idp')).resolves.toBe('uni-a');
    await fresh.close();
    await context.close();
  });

  it('shows a clear page for an unknown search with no match and for an expired login', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(await authorizeUrl());
    await page.keyboard.type('no such place');
    await expect(page.locator('#count').innerText()).resolves.toBe('0 institutions');
    const res = await page.goto(`${new URL(page.url()).origin}${PREFIX}interaction/not-a-real-login`);
    expect(res?.status()).toBe(400);
    await expect(page.locator('#title').innerText()).resolves.toBe('This login has expired');
    await context.close();
  });
});
