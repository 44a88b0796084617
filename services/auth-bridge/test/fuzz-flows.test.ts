/**
 * Fuzzing around valid requests. Each case starts from a request that works (the registered hub,
 * a fresh authorization code, a live token, a real pending upstream login) and changes a few of
 * its fields. An oracle says what the answer must be, so the cases reach the success paths as
 * well as every kind of refusal, and the answer is checked, not only "not a 500".
 *
 * Seeds: every property uses HUBSIDE_FUZZ_SEED (printed at the start; random when unset), so a
 * failure is replayed with the same seed. HUBSIDE_FUZZ_RUNS changes the number of cases.
 */
import { randomInt } from 'node:crypto';
import { createTestBrowser, createTestDatabase, freePort } from '@hubside/testing';
import type { TestBrowser, TestDatabase } from '@hubside/testing';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PREFIX, bridgeConfig, rpLogin, secretsEnv, startBridge, startUniversities } from './fixtures/setup.js';
import type { Universities } from './fixtures/setup.js';

const RUNS = Number(process.env.HUBSIDE_FUZZ_RUNS ?? 1000);
// Redeeming a code needs a fresh code, and the upstream callback a real login at the
// university, for every case: fewer of those.
// Every case of these needs a fresh code or a real upstream login of its own; on a quiet 2-core
// machine 1,000 of each take about 13 s and 22 s.
const CODE_RUNS = RUNS;
const CALLBACK_RUNS = RUNS;
const SEED = process.env.HUBSIDE_FUZZ_SEED ? Number(process.env.HUBSIDE_FUZZ_SEED) : randomInt(2 ** 31);
const HUB = { clientId: 'fuzz-hub', secret: 'fuzz-hub-secret-0123456789abcdef', redirectUri: 'http://rp.invalid/hub/oauth_callback' };
const VERIFIER = client.randomPKCECodeVerifier();

let database: TestDatabase;
let unis: Universities;
let app: FastifyInstance;
let base: string;
let issuer: string;
let sessionCookie: string;
let challenge: string;
let tokens: client.TokenEndpointResponse;

beforeAll(async () => {
  database = await createTestDatabase({ schemas: ['auth_bridge'] });
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  issuer = `${base}${PREFIX}oidc`;
  unis = await startUniversities(base);
  const config = bridgeConfig(unis, { fuzz: { clientId: HUB.clientId, clientSecret: HUB.secret, redirectUris: [HUB.redirectUri], requirePkce: true, idps: ['uni-a'] } }, base);
  // Thousands of requests from one address: the anonymous rate limit would answer 429 instead.
  app = await startBridge({ port, config, dataDir: database.dataDir, databaseUrl: database.databaseUrl, env: secretsEnv(unis), settings: { HUBSIDE_RATE_LIMIT_ANONYMOUS: '0' } });
  // One real login: the browser session lets later authorizations answer with a code at once.
  unis.a.nextUser = 'alice';
  const browser = createTestBrowser();
  const flow = await rpLogin(browser, issuer, { clientId: HUB.clientId, secret: HUB.secret, redirectUri: HUB.redirectUri });
  tokens = await client.authorizationCodeGrant(flow.config, new URL(flow.page.url), { pkceCodeVerifier: flow.verifier, expectedState: flow.state });
  sessionCookie = Object.entries(browser.cookies(`${issuer}/auth`))
    .filter(([name]) => name.startsWith('hubside_auth_'))
    .map(([name, value]) => `${name}=${value}`)
    .join('; ');
  expect(sessionCookie).toContain('hubside_auth_session=');
  challenge = await client.calculatePKCECodeChallenge(VERIFIER);
  console.info(`fuzz-flows: seed ${SEED}, ${RUNS} cases per route (${CODE_RUNS} code redemptions, ${CALLBACK_RUNS} upstream callbacks); replay with HUBSIDE_FUZZ_SEED=${SEED}`);
}, 60_000);

afterAll(async () => {
  await app?.close();
  await unis?.close();
  await database?.drop();
});

// ---------------------------------------------------------------------------------------------
// Mutations of a valid parameter list

type Mutation = { op: 'drop'; key: string } | { op: 'set' | 'dup' | 'extra'; key: string; value: string };

const printable = fc.string({ unit: fc.constantFrom(...'abcXYZ019-._~+/=%&?# :@!"\'<>\\'.split('')), maxLength: 60 });
const anyText = fc.oneof(printable, fc.string({ maxLength: 30 }), fc.string({ maxLength: 12, unit: 'grapheme' }), fc.constantFrom('', ' ', 'None', 'null', '0'));

function mutationsOf(keys: string[], extraKeys: string[], values: fc.Arbitrary<string> = anyText): fc.Arbitrary<Mutation[]> {
  const one = fc.oneof(
    fc.record({ op: fc.constant('drop' as const), key: fc.constantFrom(...keys) }),
    fc.record({ op: fc.constant('set' as const), key: fc.constantFrom(...keys), value: values }),
    fc.record({ op: fc.constant('dup' as const), key: fc.constantFrom(...keys), value: values }),
    fc.record({ op: fc.constant('extra' as const), key: fc.constantFrom(...extraKeys), value: values }),
  );
  // About one case in four leaves the valid request as it is, so success paths stay covered.
  return fc.oneof({ weight: 1, arbitrary: fc.constant<Mutation[]>([]) }, { weight: 3, arbitrary: fc.array<Mutation>(one, { minLength: 1, maxLength: 3 }) });
}

function apply(valid: Record<string, string>, mutations: Mutation[]): [string, string][] {
  let pairs = Object.entries(valid);
  for (const m of mutations) {
    if (m.op === 'drop') pairs = pairs.filter(([k]) => k !== m.key);
    else if (m.op === 'set') pairs = [...pairs.filter(([k]) => k !== m.key), [m.key, m.value]];
    else pairs = [...pairs, [m.key, m.value]];
  }
  return pairs;
}

/** What oidc-provider makes of the parameters: empty means absent; `dup` when given twice. */
function view(pairs: [string, string][]) {
  const all = new Map<string, string[]>();
  for (const [k, v] of pairs) all.set(k, [...(all.get(k) ?? []), v]);
  const value = (k: string): string | undefined => {
    const vs = all.get(k);
    return vs && vs.length === 1 && vs[0] !== '' ? vs[0] : undefined;
  };
  const dup = (k: string) => (all.get(k)?.length ?? 0) > 1;
  return { value, dup, dups: (keys: string[]) => keys.filter(dup) };
}

// RFC 6749's scope syntax, as oidc-provider checks it.
const SCOPE_SYNTAX = /^[\x21\x23-\x5B\x5D-\x7E]+(?: [\x21\x23-\x5B\x5D-\x7E]+)*$/u;
/** How many cases of a property succeeded and how many were refused: both must be common. */
function tally() {
  const counts = { ok: 0, refused: 0 };
  return {
    counts,
    expectBoth(runs: number) {
      console.info(`  ${counts.ok} succeeded, ${counts.refused} refused`);
      expect(counts.ok).toBeGreaterThan(runs / 10);
      expect(counts.refused).toBeGreaterThan(runs / 10);
    },
  };
}

const form = (pairs: [string, string][]) => new URLSearchParams(pairs).toString();
const describeCase = (pairs: [string, string][], extra = '') => `${JSON.stringify(pairs)} ${extra}`;

// ---------------------------------------------------------------------------------------------

describe('authorize, around a valid hub request', () => {
  const KNOWN = ['client_id', 'redirect_uri', 'response_type', 'scope', 'state', 'code_challenge', 'code_challenge_method', 'idp_hint', 'access_code', 'nonce'];

  it('redirects to the hub with a code, to the login, or with an error, exactly as the parameters say', async () => {
    const valid = () => ({
      client_id: HUB.clientId,
      redirect_uri: HUB.redirectUri,
      response_type: 'code',
      scope: 'openid',
      state: 'st-1',
      code_challenge: challenge,
      code_challenge_method: 'S256',
      idp_hint: 'uni-a',
    });
    const outcomes = tally();
    await fc.assert(
      fc.asyncProperty(
        mutationsOf(Object.keys(valid()), ['nonce', 'access_code', 'foo', 'data']),
        fc.constantFrom('GET', 'POST'),
        fc.boolean(),
        async (mutations, method, withSession) => {
          const pairs = apply(valid(), mutations);
          const p = view(pairs);
          const res = await app.inject({
            method,
            url: `${PREFIX}oidc/auth${method === 'GET' ? `?${form(pairs)}` : ''}`,
            headers: { ...(withSession ? { cookie: sessionCookie } : {}), ...(method === 'POST' ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
            ...(method === 'POST' ? { payload: form(pairs) } : {}),
          });
          const where = describeCase(pairs, `${method} session=${withSession} -> ${res.statusCode} ${String(res.headers.location ?? res.body.slice(0, 160))}`);
          expect(res.statusCode, where).toBeLessThan(500);
          outcomes.counts[res.statusCode === 303 && !String(res.headers.location).includes('error=') ? 'ok' : 'refused'] += 1;
          if (method === 'POST') {
            // oidc-provider keeps POST to authorize off (hubs redirect with GET): a 404 in our format.
            expect(res.statusCode, where).toBe(404);
            expect(JSON.parse(res.body), where).toMatchObject({ statusCode: 404, code: 'HUBSIDE_AUTH_ERR_NOT_FOUND' });
            return;
          }
          const location = typeof res.headers.location === 'string' ? new URL(res.headers.location, base) : undefined;
          const toHub = location?.href.startsWith(`${HUB.redirectUri}?`) ?? false;

          // Unknown client or redirect URI: a page, never a redirect anywhere.
          // Leaving out redirect_uri means the hub's only registered one (oidc-provider's
          // allowOmittingSingleRegisteredRedirectUri); any other value is refused.
          const redirectOk = p.value('redirect_uri') === undefined || p.value('redirect_uri') === HUB.redirectUri;
          // A repeated redirect_uri counts as none: the error then goes to the registered one.
          const trusted = !p.dup('client_id') && p.value('client_id') === HUB.clientId && (p.dup('redirect_uri') || redirectOk);
          if (!trusted) {
            expect(res.statusCode, where).toBe(400);
            expect(res.headers['content-type'], where).toMatch(/text\/html/);
            expect(location, where).toBeUndefined();
            return;
          }
          // No scope, or one without openid, still logs in: the bridge always adds openid.
          // Every check this request fails, with the error each one gives; the answer must name
          // one of them (which check runs first is oidc-provider's business).
          const scope = p.value('scope');
          const errors = [
            ...(p.dups(KNOWN).length > 0 ? ['invalid_request'] : []),
            ...(p.value('response_type') === undefined ? ['invalid_request'] : p.value('response_type') !== 'code' ? ['unsupported_response_type'] : []),
            ...(scope !== undefined && !SCOPE_SYNTAX.test(scope) ? ['invalid_scope'] : []),
            ...(!/^[A-Za-z0-9._~-]{43,128}$/.test(p.value('code_challenge') ?? '') || p.value('code_challenge_method') !== 'S256' ? ['invalid_request'] : []),
          ];
          const error = errors.length > 0 ? errors.join('|') : undefined;
          if (error) {
            // Refusals go back to the (verified) hub, with the error, the hub's state and our iss.
            expect(res.statusCode === 400 || toHub, where).toBe(true);
            if (toHub) {
              expect(String(location!.searchParams.get('error')), where).toMatch(new RegExp(`^(${error})$`));
              expect(location!.searchParams.get('iss'), where).toBe(issuer);
              if (p.value('state') !== undefined && !p.dup('state')) expect(location!.searchParams.get('state'), where).toBe(p.value('state'));
              expect(location!.searchParams.get('code'), where).toBeNull();
            }
            return;
          }
          // A valid request: with a session (and no access code to check) the hub gets a code at once.
          if (withSession && p.value('access_code') === undefined) {
            expect(res.statusCode, where).toBe(303);
            expect(toHub, where).toBe(true);
            expect(String(location!.searchParams.get('code')), where).toMatch(/^[\w-]{20,}$/);
            expect(location!.searchParams.get('state'), where).toBe(p.value('state') ?? null);
            expect(location!.searchParams.get('iss'), where).toBe(issuer);
          } else {
            expect(res.statusCode, where).toBe(303);
            expect(location?.pathname, where).toMatch(new RegExp(`^${PREFIX}interaction/[\\w-]+$`));
          }
        },
      ),
      { seed: SEED, numRuns: RUNS },
    );
    outcomes.expectBoth(RUNS);
  }, 300_000);
});

/** A fresh code for the fuzz hub, from the live browser session. */
async function freshCode(): Promise<string> {
  const query = new URLSearchParams({
    client_id: HUB.clientId,
    redirect_uri: HUB.redirectUri,
    response_type: 'code',
    scope: 'openid',
    code_challenge: challenge,
    code_challenge_method: 'S256',
  });
  const res = await app.inject({ method: 'GET', url: `${PREFIX}oidc/auth?${query}`, headers: { cookie: sessionCookie } });
  const code = new URL(String(res.headers.location), base).searchParams.get('code');
  if (!code) throw new Error(`no code: ${res.statusCode} ${String(res.headers.location)}`);
  return code;
}

type TokenAnswer = { statusCode: number; json: Record<string, unknown>; where: string };

async function postToken(pairs: [string, string][], basic: boolean): Promise<TokenAnswer> {
  const res = await app.inject({
    method: 'POST',
    url: `${PREFIX}oidc/token`,
    headers: {
      // As oauthenticator sends it.
      'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
      accept: 'application/json',
      ...(basic ? { authorization: `Basic ${Buffer.from(`${encodeURIComponent(HUB.clientId)}:${encodeURIComponent(HUB.secret)}`).toString('base64')}` } : {}),
    },
    payload: form(pairs),
  });
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(res.body) as Record<string, unknown>;
  } catch {
    /* checked below */
  }
  return { statusCode: res.statusCode, json, where: describeCase(pairs, `basic=${basic} -> ${res.statusCode} ${res.body.slice(0, 200)}`) };
}

function expectTokenAnswer(answer: TokenAnswer, error: string | undefined, outcomes: ReturnType<typeof tally>): void {
  const { statusCode, json, where } = answer;
  expect(statusCode, where).toBeLessThan(500);
  outcomes.counts[statusCode === 200 ? 'ok' : 'refused'] += 1;
  if (error === undefined) {
    expect(statusCode, where).toBe(200);
    expect(json.token_type, where).toBe('Bearer');
    expect(json.access_token, where).toEqual(expect.any(String));
    expect(json.refresh_token, where).toEqual(expect.any(String));
    return;
  }
  expect([400, 401], where).toContain(statusCode);
  expect(String(json.error), where).toMatch(new RegExp(`^(${error})$`));
  expect(json.access_token, where).toBeUndefined();
}

/** Client authentication, the same for both grants: the errors it gives, if any. */
function clientErrors(p: ReturnType<typeof view>, basic: boolean): string[] {
  if (basic) {
    // Credentials in the header and again in the body are refused (one mechanism only).
    if (p.value('client_secret') !== undefined || p.dup('client_secret')) return ['invalid_request', 'invalid_client'];
    if (p.dup('client_id') || (p.value('client_id') !== undefined && p.value('client_id') !== HUB.clientId)) return ['invalid_request', 'invalid_client'];
    return [];
  }
  if (p.dup('client_id') || p.dup('client_secret') || p.value('client_id') === undefined) return ['invalid_request', 'invalid_client'];
  if (p.value('client_id') !== HUB.clientId || p.value('client_secret') !== HUB.secret) return ['invalid_client'];
  return [];
}

describe('the login in progress (chooser and upstream start), around a real interaction', () => {
  it('sends the browser to the institution only for its own login and an offered IdP', async () => {
    const outcomes = tally();
    const start = async () => {
      const query = new URLSearchParams({ client_id: HUB.clientId, redirect_uri: HUB.redirectUri, response_type: 'code', scope: 'openid', code_challenge: challenge, code_challenge_method: 'S256' });
      const res = await app.inject({ method: 'GET', url: `${PREFIX}oidc/auth?${query}` });
      const uid = /\/interaction\/([\w-]+)$/.exec(String(res.headers.location))?.[1];
      const cookie = ([] as string[]).concat(res.headers['set-cookie'] ?? []).map((c) => c.split(';')[0]).join('; ');
      if (!uid || !cookie.includes('hubside_auth_interaction=')) throw new Error(`no interaction: ${res.statusCode} ${String(res.headers.location)}`);
      return { uid, cookie };
    };
    // Whole "." and ".." segments are left out: clients resolve them, so they name other routes.
    const segment = fc.oneof(
      { weight: 3, arbitrary: fc.constant<string | null>(null) },
      printable.filter((v) => v.length > 0 && v !== '.' && v !== '..'),
      fc.constantFrom('uni-b', 'UNI-A', 'uni-a ', '..x', '%2e%2e'),
    );
    await fc.assert(
      fc.asyncProperty(segment, segment, fc.boolean(), fc.boolean(), async (uidMutation, idpMutation, withCookie, withLogin) => {
        const { uid, cookie } = await start();
        const pathUid = uidMutation ?? uid;
        const idp = idpMutation ?? 'uni-a';
        const url = `${PREFIX}interaction/${encodeURIComponent(pathUid)}${withLogin ? `/login/${encodeURIComponent(idp)}` : ''}`;
        const res = await app.inject({ method: 'GET', url, headers: withCookie ? { cookie } : {} });
        const location = String(res.headers.location ?? '');
        const what = `${url} cookie=${withCookie} -> ${res.statusCode} ${location || res.body.slice(0, 160)}`;
        expect(res.statusCode, what).toBeLessThan(500);
        outcomes.counts[res.statusCode === 303 ? 'ok' : 'refused'] += 1;
        // Without its cookie, or under another uid, a login cannot be continued.
        const own = withCookie && pathUid === uid;
        if (!own) {
          expect([400, 404], what).toContain(res.statusCode);
          return;
        }
        if (!withLogin) {
          // This hub offers one IdP, so there is no chooser: straight to its start.
          expect(res.statusCode, what).toBe(303);
          expect(location, what).toBe(`${PREFIX}interaction/${uid}/login/uni-a`);
          return;
        }
        if (idp !== 'uni-a') {
          expect(res.statusCode, what).toBe(400);
          expect(res.body, what).toContain('does not offer that institution');
          return;
        }
        // To University A, with fresh state, nonce and PKCE, and our own callback.
        expect(res.statusCode, what).toBe(303);
        const upstream = new URL(location);
        expect(upstream.origin, what).toBe(unis.a.issuer);
        expect(upstream.searchParams.get('redirect_uri'), what).toBe(`${base}${PREFIX}callback/uni-a`);
        expect(upstream.searchParams.get('code_challenge_method'), what).toBe('S256');
        expect(upstream.searchParams.get('state'), what).toMatch(/^[\w-]{20,}$/);
        expect(upstream.searchParams.get('nonce'), what).toMatch(/^[\w-]{20,}$/);
      }),
      { seed: SEED, numRuns: RUNS },
    );
    outcomes.expectBoth(RUNS);
  }, 300_000);
});

describe('token endpoint, around valid requests', () => {
  it('redeems a fresh code only when every field is right (client_secret_post or _basic)', async () => {
    const outcomes = tally();
    await fc.assert(
      fc.asyncProperty(mutationsOf(['grant_type', 'code', 'redirect_uri', 'code_verifier', 'client_id', 'client_secret'], ['data', 'foo']), fc.boolean(), async (mutations, basic) => {
        const code = await freshCode();
        const valid: Record<string, string> = { grant_type: 'authorization_code', code, redirect_uri: HUB.redirectUri, code_verifier: VERIFIER };
        if (!basic) Object.assign(valid, { client_id: HUB.clientId, client_secret: HUB.secret });
        // oauthenticator also sends `data=None`: an unknown parameter must not matter.
        const pairs = apply(valid, mutations);
        const p = view(pairs);
        const known = ['grant_type', 'code', 'redirect_uri', 'code_verifier'];
        const grantType = p.value('grant_type');
        const errors = [
          ...clientErrors(p, basic),
          ...(p.dups(known).length > 0 ? ['invalid_request'] : []),
          ...(grantType === undefined ? ['invalid_request'] : grantType !== 'authorization_code' ? ['unsupported_grant_type', 'invalid_request'] : []),
          ...(p.value('code') === undefined ? ['invalid_request'] : p.value('code') !== code ? ['invalid_grant'] : []),
          // Left out, redirect_uri means the only registered one (allowOmittingSingleRegisteredRedirectUri).
          ...((p.value('redirect_uri') ?? HUB.redirectUri) !== HUB.redirectUri ? ['invalid_grant'] : []),
          ...(p.value('code_verifier') !== VERIFIER ? ['invalid_grant', 'invalid_request'] : []),
        ];
        const error = errors.length > 0 ? errors.join('|') : undefined;
        expectTokenAnswer(await postToken(pairs, basic), error, outcomes);
      }),
      { seed: SEED, numRuns: CODE_RUNS },
    );
    outcomes.expectBoth(CODE_RUNS);
  }, 300_000);

  it('refreshes only with the right refresh token and client', async () => {
    const outcomes = tally();
    await fc.assert(
      fc.asyncProperty(mutationsOf(['grant_type', 'refresh_token', 'client_id', 'client_secret'], ['data', 'foo']), fc.boolean(), async (mutations, basic) => {
        const valid: Record<string, string> = { grant_type: 'refresh_token', refresh_token: tokens.refresh_token! };
        if (!basic) Object.assign(valid, { client_id: HUB.clientId, client_secret: HUB.secret });
        const pairs = apply(valid, mutations);
        const p = view(pairs);
        const grantType = p.value('grant_type');
        const errors = [
          ...clientErrors(p, basic),
          ...(p.dups(['grant_type', 'refresh_token']).length > 0 ? ['invalid_request'] : []),
          ...(grantType === undefined ? ['invalid_request'] : grantType !== 'refresh_token' ? ['unsupported_grant_type', 'invalid_request'] : []),
          ...(p.value('refresh_token') === undefined ? ['invalid_request'] : p.value('refresh_token') !== tokens.refresh_token ? ['invalid_grant'] : []),
        ];
        const error = errors.length > 0 ? errors.join('|') : undefined;
        expectTokenAnswer(await postToken(pairs, basic), error, outcomes);
      }),
      { seed: SEED, numRuns: RUNS },
    );
    outcomes.expectBoth(RUNS);
  }, 300_000);
});

describe('userinfo, around a valid Bearer request', () => {
  it('answers the claims only for one well-formed presentation of the live token', async () => {
    const headerSafe = fc.string({ unit: fc.constantFrom(...'abcXYZ019-._~+/= '.split('')), maxLength: 50 });
    const tokenArb = fc.oneof(
      { weight: 3, arbitrary: fc.constant(tokens.access_token) },
      fc.constant(`${tokens.access_token}x`),
      fc.constant(tokens.access_token.slice(0, -1)),
      headerSafe,
    );
    const outcomes = tally();
    await fc.assert(
      fc.asyncProperty(
        // Weighted towards what hubs send (GET, one "Bearer <token>" header), so about a
        // fifth of the cases are valid and the rest differ from a valid one in a detail or two.
        fc.oneof({ weight: 4, arbitrary: fc.constant('Bearer') }, fc.constantFrom('bearer', 'BEARER', 'Basic', 'Token', 'DPoP', '')),
        fc.oneof({ weight: 4, arbitrary: fc.constant(' ') }, fc.constant('  ')),
        tokenArb,
        fc.oneof(
          { weight: 3, arbitrary: fc.constant<('header' | 'query' | 'body')[]>(['header']) },
          fc.constant<('header' | 'query' | 'body')[]>(['body']),
          fc.subarray(['header', 'query', 'body'] as const),
        ),
        fc.oneof({ weight: 2, arbitrary: fc.constant('GET') }, fc.constant('POST')),
        async (scheme, sep, token, where, method) => {
          const inBody = where.includes('body') && method === 'POST';
          const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'JupyterHub' };
          if (where.includes('header')) headers.authorization = `${scheme}${sep}${token}`;
          if (method === 'POST') headers['content-type'] = 'application/x-www-form-urlencoded';
          const query = where.includes('query') ? `?${new URLSearchParams({ access_token: token })}` : '';
          const res = await app.inject({ method, url: `${PREFIX}oidc/me${query}`, headers, ...(method === 'POST' ? { payload: inBody ? form([['access_token', token]]) : 'unrelated=field' } : {}) });
          const what = `${method} ${where.join('+')} ${JSON.stringify(headers.authorization ?? '')} token=${JSON.stringify(token)} -> ${res.statusCode} ${res.body.slice(0, 160)}`;
          expect(res.statusCode, what).toBeLessThan(500);
          outcomes.counts[res.statusCode === 200 ? 'ok' : 'refused'] += 1;

          const used = [
            ...(headers.authorization !== undefined && headers.authorization !== '' ? ['header'] : []),
            ...(where.includes('query') && token !== '' ? ['query'] : []),
            ...(inBody && token !== '' ? ['body'] : []),
          ];
          const parts = (headers.authorization ?? '').split(' ');
          const wellFormed =
            used.length === 1 &&
            (used[0] === 'body' || (used[0] === 'header' && parts.length === 2 && parts[0]!.toLowerCase() === 'bearer'));
          if (!wellFormed) {
            expect([400, 401], what).toContain(res.statusCode);
            return;
          }
          const presented = used[0] === 'header' ? parts[1] : token;
          if (presented !== tokens.access_token) {
            expect(res.statusCode, what).toBe(401);
            expect(res.headers['www-authenticate'], what).toMatch(/invalid_token/);
            return;
          }
          expect(res.statusCode, what).toBe(200);
          expect(res.headers['content-type'], what).toMatch(/application\/json/);
          expect(JSON.parse(res.body), what).toMatchObject({ username: 'alice', idp: 'uni-a', sub: expect.any(String) });
        },
      ),
      { seed: SEED, numRuns: RUNS },
    );
    outcomes.expectBoth(RUNS);
  }, 300_000);
});

describe('the upstream callback, around a real pending login', () => {
  /** A real login at University A, stopped just before its response reaches the bridge. */
  async function pendingCallback(): Promise<{ browser: TestBrowser; params: Record<string, string> }> {
    const browser = createTestBrowser({ stopAt: /\/callback\/uni-a\?/ });
    const query = new URLSearchParams({
      client_id: HUB.clientId,
      redirect_uri: HUB.redirectUri,
      response_type: 'code',
      scope: 'openid',
      state: 'hub-state',
      code_challenge: challenge,
      code_challenge_method: 'S256',
    });
    const page = await browser.get(`${issuer}/auth?${query}`);
    const url = new URL(page.url);
    if (url.pathname !== `${PREFIX}callback/uni-a`) throw new Error(`the login stopped at ${page.url} (${page.status})`);
    return { browser, params: Object.fromEntries(url.searchParams) };
  }

  it('finishes the login only for the untouched response, with a clear page otherwise', async () => {
    unis.a.nextUser = 'alice';
    const outcomes = tally();
    await fc.assert(
      fc.asyncProperty(mutationsOf(['code', 'state', 'iss'], ['foo', 'session_state'], printable), async (mutations) => {
        const { browser, params } = await pendingCallback();
        const pairs = apply(params, mutations);
        const p = view(pairs);
        browser.stopAt = new RegExp(`^${HUB.redirectUri.replace(/[.?]/g, '\\$&')}`);
        const page = await browser.get(`${base}${PREFIX}callback/uni-a?${form(pairs)}`);
        const what = describeCase(pairs, `-> ${page.status} ${page.url} ${page.body.slice(0, 200)}`);
        expect(page.status, what).toBeLessThan(500);
        outcomes.counts[page.url.startsWith(`${HUB.redirectUri}?`) ? 'ok' : 'refused'] += 1;
        // Which checks fail, in the words each refusal page uses.
        const failing: string[] = [];
        // A repeated state is no state at all.
        if (p.dup('state') || p.value('state') !== params.state) failing.push('state mismatch');
        if (p.dup('iss') || p.value('iss') !== params.iss) failing.push('did not come from University A', 'University A');
        if (p.dup('code') || p.value('code') !== params.code) failing.push('no longer accepts this login code', 'University A');
        if (failing.length === 0) {
          expect(page.url.startsWith(`${HUB.redirectUri}?`), what).toBe(true);
          expect(new URL(page.url).searchParams.get('code'), what).toBeTruthy();
          expect(new URL(page.url).searchParams.get('state'), what).toBe('hub-state');
          return;
        }
        expect(page.status, what).toBe(400);
        expect(page.url.startsWith(HUB.redirectUri), what).toBe(false);
        expect(failing.some((words) => page.body.includes(words)), what).toBe(true);
      }),
      { seed: SEED, numRuns: CALLBACK_RUNS },
    );
    outcomes.expectBoth(CALLBACK_RUNS);
  }, 300_000);
});
