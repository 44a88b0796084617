/**
 * Property-based fuzzing of every JSON body, query string and path parameter of every route of
 * every service, through `inject`, as a normal user and as a hub admin. The oracle: a valid 2xx,
 * or a 4xx in the error format; never a 500, never a hang. (The auth-bridge's OIDC endpoints are
 * fuzzed by its own tests, with their own protocol-aware generators.)
 *
 * Seeds are printed and written to test-artifacts/fuzz-seeds.jsonl; rerun one with
 * FUZZ_SEED=<seed> (and FUZZ_RUNS to change the number of cases per route).
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { RegisteredRoute } from '@hubside/service-kit';
import fc from 'fast-check';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICES, startStack } from '../security/stack.js';
import type { Service, Stack } from '../security/stack.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 1000);
const BASE_SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));
// Longer than any configured upstream timeout (the hub's is 10 s; a spawn waits for the hub that long).
const HANG_MS = 30_000;

// Names of fields the services actually read, so generated input reaches past "unknown key".
const KEYS = [
  '__proto__', 'constructor', 'prototype',
  'dataset', 'access', 'key', 'method', 'expiresIn', 'profiles', 'message', 'profile', 'image', 'memory',
  'user', 'users', 'group', 'name', 'from', 'to', 'granularity', 'period', 'limit', 'before', 'since', 'until',
  'kind', 'page', 'per_page', 'sort', 'order', 'format', 'expires_at', 'expiresAt', 'maxUses', 'max_uses',
  'group_name', 'server', 'user_options', 'credential', 'days', 'course', 'id', 'next', 'state', 'code',
];
const tricky = fc.constantFrom(
  '', ' ', '0', '-1', '1e309', 'NaN', 'null', 'true', '__proto__', 'constructor', 'toString', '../..', '%00', '%', '\u0000',
  '2026-13-45', '2026-11-22T00:00:00Z', '9999-12-31', 'x'.repeat(5000), '💥', 'a\nb', "'; drop table sessions; --", '*', '?', '${x}',
  'home', 'physics', 'alice', 'bob', 'root', 'day', 'week', 'month', 'read', 'read-write', 'GET', 'PUT', 'datascience', '2026-11',
);
const scalar = fc.oneof(tricky, fc.string({ maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 20 }), fc.integer().map(String), fc.double().map(String));
const key = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...KEYS) }, { weight: 1, arbitrary: fc.string({ maxLength: 12 }) });
const query = fc.dictionary(key, fc.oneof(scalar, fc.array(scalar, { maxLength: 3 })), { maxKeys: 6 });
const jsonish = fc.oneof(
  { weight: 3, arbitrary: fc.dictionary(key, fc.oneof(fc.jsonValue({ maxDepth: 3 }), scalar), { maxKeys: 8 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
);
// JSON whose keys try to reach a prototype at several depths, under the names services read.
const pollutingKey = fc.constantFrom('__proto__', 'constructor', 'prototype');
const polluting: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom(...KEYS), pollutingKey, fc.constantFrom(...KEYS), fc.oneof(scalar, fc.jsonValue({ maxDepth: 2 })), fc.nat(3))
  .map(([outer, bad, inner, v, shape]) => {
    const value = JSON.stringify(v);
    return [
      `{"${bad}":{"polluted":${value}}}`,
      `{"${outer}":{"${bad}":{"${inner}":${value}}}}`,
      `{"${outer}":[{"${bad}":{"polluted":true}}],"${inner}":${value}}`,
      `{"${outer}":{"${bad}":{"prototype":{"polluted":true}}}}`,
    ][shape]!;
  });
const rawBody = fc.oneof(
  { weight: 1, arbitrary: polluting.map((payload) => ({ type: 'application/json', payload })) },
  { weight: 6, arbitrary: jsonish.map((v) => ({ type: 'application/json', payload: JSON.stringify(v) })) },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }).map((s) => ({ type: 'application/json', payload: s })) },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }).map((s) => ({ type: 'application/x-www-form-urlencoded', payload: s })) },
  { weight: 1, arbitrary: fc.string({ maxLength: 50 }).map((s) => ({ type: 'text/plain', payload: s })) },
);
const param = fc.oneof(tricky, fc.string({ minLength: 1, maxLength: 30 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 10 }));

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * Every route but HEAD/OPTIONS. The OpenID Provider and login-flow endpoints get arbitrary input
 * here like every route, and are also fuzzed around valid flows (real logins, fresh codes) by the
 * auth-bridge's own tests.
 */
function fuzzable(r: RegisteredRoute): boolean {
  return r.method !== 'HEAD' && r.method !== 'OPTIONS';
}

/**
 * Routes that read no input at all and do expensive work by design get fewer cases: the
 * bridge's key rotation makes an RSA key per call (hundreds of ms) and reads no body or query.
 */
function runsFor(service: Service, r: RegisteredRoute): number {
  if (service === 'auth-bridge' && r.url.endsWith('api/keys/rotate')) return Math.min(RUNS, 20);
  return RUNS;
}

function fill(url: string, params: string[]): string {
  let i = 0;
  return url.replace(/:[A-Za-z_]+/g, () => encodeURIComponent(params[i++ % params.length] ?? 'x')).replace(/\*$/, () => encodeURIComponent(params[0] ?? 'x'));
}

async function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_r, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${HANG_MS} ms`)), HANG_MS);
  });
  try {
    return await Promise.race([p, hang]);
  } finally {
    clearTimeout(timer);
  }
}

// The prototypes every object inherits from: a request that adds to one of them has copied a
// user's key into an object unsafely, whatever it answered.
const PROTOTYPES = [Object.prototype, Array.prototype, Function.prototype, String.prototype, Number.prototype];
const pristine = PROTOTYPES.map((p) => Reflect.ownKeys(p).map(String).sort().join('\n'));

function checkPrototypes(where: string): void {
  PROTOTYPES.forEach((p, i) => {
    const now = Reflect.ownKeys(p).map(String).sort().join('\n');
    expect(now, `${where}: a user's key reached a prototype`).toBe(pristine[i]);
  });
}

function checkAnswer(res: LightMyRequestResponse, where: string): void {
  checkPrototypes(where);
  const status = res.statusCode;
  // 502 is the gateway's documented answer when its (fake, always failing) STS is called.
  const backend = status === 502 && res.body.includes('HUBSIDE_GATEWAY_ERR_BACKEND');
  expect(status < 500 || backend, `${where} -> ${status} ${res.body.slice(0, 300)}`).toBe(true);
  if (status >= 400 && String(res.headers['content-type'] ?? '').includes('application/json')) {
    const body = res.json<Record<string, unknown>>();
    expect(body, `${where} -> ${status}: error format`).toMatchObject({ statusCode: status, error: expect.any(String), message: expect.any(String) });
  }
}

/** One service's routes, fuzzed; each test file calls this for one service so files run in parallel. */
export function fuzzService(service: Service): void {
  let stack: Stack;

  beforeAll(async () => {
    // Four services share this process and its event loop on a busy machine: load shedding has its
    // own test, and here it would only turn a slow moment into a 503.
    stack = await startStack({ env: { HUBSIDE_MAX_EVENT_LOOP_DELAY: '0' } });
    mkdirSync(ARTIFACTS, { recursive: true });
    console.log(`fuzz ${service}: base seed ${BASE_SEED}, ${RUNS} cases per route (FUZZ_SEED=${BASE_SEED} reproduces)`);
  }, 180_000);

  afterAll(async () => {
    await stack?.close();
  });

  describe(service, () => {
    it(`never answers 500 or hangs, on any route, for ${RUNS} generated requests per route`, { timeout: 600_000 }, async () => {
      const routes = stack.routes(service).filter((r) => fuzzable(r));
      expect(routes.length).toBeGreaterThan(2);
      for (const [index, r] of routes.entries()) {
        const seed = BASE_SEED + SERVICES.indexOf(service) * 1000 + index;
        appendFileSync(`${ARTIFACTS}fuzz-seeds.jsonl`, `${JSON.stringify({ at: new Date().toISOString(), service, route: `${r.method} ${r.url}`, seed, runs: runsFor(service, r) })}\n`);
        await fc.assert(
          fc.asyncProperty(
            fc.array(param, { minLength: 1, maxLength: 3 }),
            query,
            rawBody,
            fc.constantFrom<'alice' | 'root'>('alice', 'root'),
            async (params, q, body, who) => {
              const qs = new URLSearchParams();
              for (const [k, v] of Object.entries(q)) for (const x of [v].flat()) qs.append(k, x);
              const opts: InjectOptions = {
                method: r.method as InjectOptions['method'],
                url: `${fill(r.url, params)}${qs.size ? `?${qs}` : ''}`,
                headers: { authorization: `token ${stack.tokens[who]}`, ...(r.method === 'PUT' ? { 'if-match': '*' } : {}) },
              };
              if (BODY_METHODS.has(r.method)) {
                opts.headers!['content-type'] = body.type;
                opts.payload = body.payload;
              }
              const where = `${r.method} ${opts.url} as ${who} (seed ${seed})`;
              checkAnswer(await within(stack.apps[service].inject(opts), where), where);
            },
          ),
          { numRuns: runsFor(service, r), seed, endOnFailure: true },
        );
      }
    });
  });
}
