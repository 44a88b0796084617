/** The standalone test browser: cookies across redirects, form posts, and stopping at a redirect. */
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestBrowser } from '../src/index.js';

let server: Server;
let base: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/start') {
      res.writeHead(303, { location: '/set', 'set-cookie': 'a=1; Path=/' }).end();
    } else if (url.pathname === '/set') {
      res.writeHead(302, { location: '/show', 'set-cookie': 'b=2; Path=/; HttpOnly' }).end();
    } else if (url.pathname === '/show') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(req.headers.cookie ?? '');
    } else if (url.pathname === '/away') {
      res.writeHead(302, { location: 'http://client.invalid/cb?code=xyz' }).end();
    } else if (url.pathname === '/form' && req.method === 'POST') {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => res.writeHead(200, { 'content-type': 'text/plain' }).end(body));
    } else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

describe('createTestBrowser', () => {
  it('keeps cookies across redirects and lists every hop', async () => {
    const browser = createTestBrowser({ baseUrl: base });
    const page = await browser.get('/start');
    expect(page.status).toBe(200);
    expect(page.url).toBe(`${base}/show`);
    expect(page.body).toBe('a=1; b=2');
    expect(page.redirects).toEqual([`${base}/start`, `${base}/set`]);
    expect(browser.cookies('/')).toEqual({ a: '1', b: '2' });
  });

  it('stops before a redirect whose target matches stopAt, and returns that target', async () => {
    const browser = createTestBrowser({ stopAt: /^http:\/\/client\.invalid\// });
    const page = await browser.get(`${base}/away`);
    expect(page.status).toBe(302);
    expect(new URL(page.url).searchParams.get('code')).toBe('xyz');
    expect(page.redirects).toEqual([`${base}/away`]);
    // stopAt can change between requests; without it the unreachable host is fetched and fails.
    browser.stopAt = undefined;
    await expect(browser.get(`${base}/away`)).rejects.toThrow();
  });

  it('posts forms urlencoded, repeating array fields', async () => {
    const page = await createTestBrowser().post(`${base}/form`, { x: 'a b', s: ['1', '2'] });
    expect(page.body).toBe('x=a+b&s=1&s=2');
  });
});
