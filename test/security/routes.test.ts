/**
 * Security checks over every route each service registers (read from `app.kit.routes`, so a
 * route added later is checked too), through `inject`, with tokens from a real JupyterHub.
 */
import type { RegisteredRoute } from '@hubside/service-kit';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fillPath, leakedLines, SERVICES, startRecorder, startStack } from './stack.js';
import type { Recorder, Service, Stack } from './stack.js';

let stack: Stack;
let canary: Recorder;

beforeAll(async () => {
  canary = await startRecorder(() => ({ status: 200, body: '{}', type: 'application/json' }));
  stack = await startStack();
  // Bob has a running server, so the collector records a session of his that must not leak to alice.
  await stack.hub.startServer('bob');
  await (stack.apps['usage-collector'] as unknown as { usagePoller: { pollOnce(): Promise<unknown> } }).usagePoller.pollOnce();
}, 180_000);

afterAll(async () => {
  await stack?.close();
  await canary?.close();
});

/**
 * Routes that answer without a hub identity, each for a reason. A new public route fails the
 * first test below until someone adds it here, which is the point.
 */
const PUBLIC: Record<Service, RegExp[]> = {
  'auth-bridge': [/^static\/chooser\.js$/, /^oidc(\/\*)?$/, /^interaction\/:uid(\/login\/:idp)?$/, /^callback\/:idp$/, /^code\/:code$/],
  'profile-api': [/^static\/spawn\.js$/],
  // Static assets, and the shared course view whose credential is a signed share token (header).
  // `dashboard/` only redirects to the student view at the prefix (its first address).
  'usage-collector': [/^dashboard\/$/, /^dashboard\/assets\/:file$/, /^dashboard\/shared$/, /^api\/dashboard\/shared$/],
  'data-gateway': [],
};
const PUBLIC_EVERYWHERE = [/^health$/, /^login$/, /^logout$/, /^oauth_callback$/];

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

function rel(service: Service, r: RegisteredRoute): string {
  return r.url.slice(stack.prefix(service).length);
}
function isPublic(r: RegisteredRoute): boolean {
  return r.config.auth === false;
}
function isBrowser(r: RegisteredRoute): boolean {
  const auth = r.config.auth as { browser?: boolean } | undefined;
  return Boolean(auth && typeof auth === 'object' && auth.browser);
}
function protectedRoutes(service: Service): RegisteredRoute[] {
  return stack.routes(service).filter((r) => !isPublic(r) && r.method !== 'OPTIONS');
}

function call(service: Service, r: RegisteredRoute, opts: { token?: string; user?: string; query?: Record<string, string>; headers?: Record<string, string>; payload?: unknown } = {}): Promise<LightMyRequestResponse> {
  const qs = opts.query ? `?${new URLSearchParams(opts.query).toString()}` : '';
  const inject: InjectOptions = {
    method: r.method as InjectOptions['method'],
    url: fillPath(r.url, opts.user ?? 'alice') + qs,
    headers: { ...(opts.token ? { authorization: `token ${opts.token}` } : {}), ...opts.headers },
  };
  if (BODY_METHODS.has(r.method)) inject.payload = (opts.payload ?? {}) as InjectOptions['payload'];
  return stack.apps[service].inject(inject);
}

const describeEach = (service: Service) => `${service} ${'(every route)'}`;

describe.each(SERVICES)('%s', (service) => {
  it('registers its routes where the checks can see them, and every public one is on the reviewed list', () => {
    const routes = stack.routes(service);
    expect(routes.length, describeEach(service)).toBeGreaterThan(3);
    expect(routes.some((r) => rel(service, r) === 'health')).toBe(true);
    const unreviewed = routes
      .filter(isPublic)
      .map((r) => rel(service, r))
      .filter((p) => ![...PUBLIC_EVERYWHERE, ...PUBLIC[service]].some((re) => re.test(p)));
    expect(unreviewed, 'public routes nobody reviewed').toEqual([]);
  });

  it('refuses every protected route without credentials: 401 JSON, or a page redirect to the hub login', async () => {
    for (const r of protectedRoutes(service)) {
      const res = await call(service, r);
      const where = `${r.method} ${r.url}`;
      if (isBrowser(r) && SAFE.has(r.method)) {
        expect(res.statusCode, where).toBe(302);
        expect(String(res.headers.location), where).toMatch(/^\/hub\/api\/oauth2\/authorize\?/);
      } else {
        expect(res.statusCode, where).toBe(401);
        expect(res.json(), where).toMatchObject({ statusCode: 401, code: expect.stringMatching(/^HUBSIDE_ERR_AUTH/) });
      }
    }
  });

  it('refuses every protected route to a user without access to the service, and to a token without the access scope', async () => {
    for (const r of protectedRoutes(service)) {
      // `access: false` routes (metrics, the bridge's admin API) need another right instead: a
      // scope or hub admin. They may reject a malformed request first, but never serve it.
      const needsAccess = (r.config.auth as { access?: boolean } | undefined)?.access !== false;
      for (const token of [stack.tokens.nobody, stack.tokens.aliceNoAccess]) {
        const res = await call(service, r, { token });
        const where = `${r.method} ${r.url} -> ${res.statusCode}`;
        if (needsAccess || res.statusCode !== 400) {
          expect(res.statusCode, where).toBe(403);
          expect(res.json()).toMatchObject({ statusCode: 403, code: expect.stringMatching(/_ERR_FORBIDDEN$|_ERR_ADMIN_ONLY$/) });
        }
      }
    }
  });

  it('refuses a token that holds access to the service but lacks exactly the scope a route declares', async () => {
    let checked = 0;
    for (const r of protectedRoutes(service)) {
      const scopes = (r.config.auth as { scopes?: unknown } | undefined)?.scopes;
      if (!Array.isArray(scopes) || scopes.length === 0) continue;
      checked += 1;
      const res = await call(service, r, { token: stack.tokens.aliceAccessOnly[service] });
      expect(res.statusCode, `${r.method} ${r.url}`).toBe(403);
      expect(res.json<{ message: string }>().message).toContain(scopes[0] as string);
    }
    // Every service has at least its metrics route, which needs read:metrics.
    expect(checked).toBeGreaterThan(0);
  });

  it("never answers alice with bob's data: routes naming a user refuse, and ?user=bob never returns bob", async () => {
    for (const r of protectedRoutes(service)) {
      const where = `${r.method} ${r.url}`;
      if (/:(name|user|username)\b/.test(r.url)) {
        const res = await call(service, r, { token: stack.tokens.alice, user: 'bob' });
        expect([403, 404], `${where} as alice for bob -> ${res.statusCode} ${res.body.slice(0, 200)}`).toContain(res.statusCode);
      }
      if (r.method !== 'GET') continue;
      for (const key of ['user', 'username', 'name', 'group', 'users']) {
        const res = await call(service, r, { token: stack.tokens.alice, query: { [key]: key === 'group' ? 'chemistry' : 'bob' } });
        if (res.statusCode < 300) {
          expect(res.body, `${where}?${key}=bob leaked bob's data`).not.toMatch(/\bbob\b|chemistry/);
        } else {
          expect(res.statusCode, where).toBeLessThan(500);
        }
      }
    }
  });

  it("serves none of bob's data on public routes, whatever the query asks for", async () => {
    for (const r of stack.routes(service).filter((x) => isPublic(x) && x.method === 'GET')) {
      for (const key of ['user', 'username', 'name', 'group']) {
        const res = await call(service, r, { user: 'bob', query: { [key]: key === 'group' ? 'chemistry' : 'bob' } });
        expect(res.statusCode, `${r.method} ${r.url}`).toBeLessThan(500);
        if (res.statusCode < 300) expect(res.body, `${r.method} ${r.url}?${key}=bob`).not.toMatch(/"bob"|chemistry/);
      }
    }
  });

  it('never redirects to another site, whatever next / redirect_uri / return_to say', async () => {
    const evil = ['https://evil.example/x', '//evil.example/x', '/\\evil.example/x', 'http:evil.example', 'https://evil.example@127.0.0.1/'];
    for (const r of stack.routes(service).filter((x) => x.method === 'GET')) {
      for (const target of evil) {
        for (const token of [undefined, stack.tokens.alice]) {
          const res = await call(service, r, { ...(token ? { token } : {}), query: { next: target, redirect_uri: target, return_to: target, url: target } });
          if (res.statusCode < 300 || res.statusCode >= 400) continue;
          const location = String(res.headers.location ?? '');
          const host = new URL(location, 'http://service.invalid').host;
          expect(host, `${r.method} ${r.url} redirected to ${location}`).not.toMatch(/evil\.example/);
          // A redirect to the hub's authorize endpoint carries our own callback, never the attacker's.
          expect(decodeURIComponent(location), `${r.method} ${r.url}`).not.toMatch(/evil\.example/);
        }
      }
    }
  });

  it('refuses cookie-authenticated state changes from other sites (CSRF), and accepts them from its own pages', async () => {
    const app = stack.apps[service];
    const cookie = `service-${service}=${encodeURIComponent(stack.remember(app.signCookie(stack.tokens.alice)))}`;
    const writes = protectedRoutes(service).filter((r) => !SAFE.has(r.method));
    for (const r of writes) {
      for (const headers of [{}, { 'sec-fetch-site': 'cross-site' }, { origin: 'https://evil.example' }, { origin: 'null' }] as Array<Record<string, string>>) {
        const res = await call(service, r, { headers: { cookie, ...headers } });
        expect(res.statusCode, `${r.method} ${r.url} ${JSON.stringify(headers)}`).toBe(403);
        expect(res.json<{ message: string }>().message).toMatch(/cross-site/);
      }
      const same = await call(service, r, { headers: { cookie, 'sec-fetch-site': 'same-origin' } });
      expect(same.json<{ message?: string }>().message ?? '', `${r.method} ${r.url}`).not.toMatch(/cross-site|Authentication required/);
    }
    // A GET with the cookie works (the cookie itself is accepted), so the refusals above are CSRF, not auth.
    const whoami = await app.inject({ method: 'GET', url: `${stack.prefix(service)}api/whoami`, headers: { cookie } });
    expect(whoami.statusCode).toBe(200);
  });

  it('sets login cookies HttpOnly, SameSite=Lax, scoped to the prefix, and Secure behind https', async () => {
    const app = stack.apps[service];
    for (const proto of ['http', 'https']) {
      const res = await app.inject({ method: 'GET', url: `${stack.prefix(service)}login`, headers: { 'x-forwarded-proto': proto }, remoteAddress: '127.0.0.1' });
      expect(res.statusCode).toBe(302);
      const cookies = ([] as string[]).concat(res.headers['set-cookie'] ?? []);
      expect(cookies.length).toBeGreaterThan(0);
      for (const c of cookies) {
        expect(c).toMatch(/; HttpOnly/i);
        expect(c).toMatch(/; SameSite=Lax/i);
        expect(c).toContain(`; Path=${stack.prefix(service)}`);
        if (proto === 'https') expect(c).toMatch(/; Secure/i);
        else expect(c).not.toMatch(/; Secure/i);
      }
    }
    // The login's token cookie is only set after the hub's OAuth callback; it uses the same options
    // (see hub-auth), and a forged one is not accepted.
    const forged = await app.inject({ method: 'GET', url: `${stack.prefix(service)}api/whoami`, headers: { cookie: `service-${service}=${stack.tokens.alice}` } });
    expect(forged.statusCode).toBe(401);
  });

  it('fetches no URL a caller supplies (SSRF), in any query, body or forwarding header', async () => {
    const before = canary.requests.length;
    const url = `${canary.url}/ssrf`;
    const keys = ['url', 'uri', 'endpoint', 'issuer', 'redirect_uri', 'request_uri', 'callback', 'webhook', 'next', 'target', 'jwks_uri', 'logo_uri', 'sector_identifier_uri', 'image', 'href', 'link', 'source', 'prometheus'];
    const fields = Object.fromEntries(keys.map((k) => [k, url]));
    const host = new URL(canary.url).host;
    for (const r of stack.routes(service)) {
      for (const token of [undefined, stack.tokens.alice]) {
        await call(service, r, {
          ...(token ? { token } : {}),
          query: fields,
          headers: { 'x-forwarded-host': host, 'x-forwarded-proto': 'http', referer: url },
          payload: { ...fields, dataset: 'home', key: url, profiles: [{ slug: 'x', display_name: url, kubespawner_override: { image: url } }] },
        });
      }
    }
    expect(canary.requests.slice(before), 'requests that reached the canary').toEqual([]);
  });

  it('answers an oversized body on every write route with 413 JSON, never a 500', async () => {
    const big = JSON.stringify({ x: 'a'.repeat(1024 * 1024 + 10) });
    for (const r of stack.routes(service).filter((x) => BODY_METHODS.has(x.method))) {
      const res = await stack.apps[service].inject({
        method: r.method as InjectOptions['method'],
        url: fillPath(r.url, 'alice'),
        headers: { authorization: `token ${stack.tokens.alice}`, 'content-type': 'application/json' },
        payload: big,
      });
      // Routes that refuse before reading the body (auth, method) may answer 4xx too; never 5xx.
      expect(res.statusCode, `${r.method} ${r.url}`).toBeGreaterThanOrEqual(400);
      expect(res.statusCode, `${r.method} ${r.url}`).toBeLessThan(500);
    }
  });
});

describe('the logs of this run', () => {
  it('contain none of the tokens, cookies and secrets it used', () => {
    expect(stack.logLines.length, 'the services logged something').toBeGreaterThan(0);
    expect(leakedLines(stack)).toEqual([]);
  });
});
