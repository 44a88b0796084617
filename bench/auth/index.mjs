// bench/auth: completed logins per second through the whole chain, against the same relying
// party talking to the university directly, plus token-endpoint and userinfo throughput.
//
//   node bench/auth/index.mjs [--quick]
//
// chain:   RP (openid-client, as a hub) -> auth-bridge -> university (oidc-provider) -> bridge -> RP
// direct:  RP -> university -> RP
// Everything runs in this process on loopback; the bridge uses an embedded PGlite database
// (or Postgres when DATABASE_URL is set). It needs a build (`npx tsc -b`), as `npm run bench` does.

import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import Provider from 'oidc-provider';
import * as client from 'openid-client';
import { createTestDatabase, freePort } from '@hubside/testing';
import { resolveSettings } from '@hubside/service-kit';
import { service } from '@hubside/auth-bridge';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..', '..');
export const name = 'auth';

const SETTINGS = {
  full: { logins: 200, concurrency: 8, seconds: 10 },
  quick: { logins: 30, concurrency: 4, seconds: 2 },
};

async function startUniversity(redirectUris) {
  const server = createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'rp',
        client_secret: 'rp-secret-0123456789',
        redirect_uris: redirectUris,
        grant_types: ['authorization_code', 'refresh_token'],
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    // Explicit lifetimes (no start-up notices) and refresh tokens for the RP, as the bridge gives hubs.
    ttl: { AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 600, RefreshToken: 86400, Session: 86400, Grant: 86400 },
    issueRefreshToken: async () => true,
    claims: { openid: ['sub'], email: ['email'], profile: ['name'] },
    features: { devInteractions: { enabled: false } },
    findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id, email: `${id}@uni.example`, name: id }) }),
    interactions: { url: (_ctx, i) => `/interaction/${i.uid}` },
    loadExistingGrant: async (ctx) => {
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid email profile');
      await grant.save();
      return grant;
    },
  });
  const handler = provider.callback();
  let n = 0;
  server.on('request', (req, res) => {
    if (req.url.startsWith('/interaction/')) {
      n += 1;
      provider.interactionFinished(req, res, { login: { accountId: `user${n % 1000}` } }, { mergeWithLastSubmission: false }).catch(() => {
        res.statusCode = 400;
        res.end();
      });
      return;
    }
    handler(req, res);
  });
  return { issuer, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

/** Follow redirects with a cookie jar until `stop` matches; returns that URL. */
async function follow(start, stop) {
  const jar = new Map();
  let url = new URL(start);
  for (let hop = 0; hop < 20; hop += 1) {
    const cookies = jar.get(url.host);
    const res = await fetch(url, { redirect: 'manual', headers: cookies ? { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') } : {} });
    const set = res.headers.getSetCookie();
    if (set.length) {
      const m = jar.get(url.host) ?? new Map();
      for (const line of set) {
        const pair = line.split(';')[0];
        const i = pair.indexOf('=');
        m.set(pair.slice(0, i), pair.slice(i + 1));
      }
      jar.set(url.host, m);
    }
    const location = res.headers.get('location');
    await res.body?.cancel();
    if (!location) throw new Error(`login stopped at ${url.href} with ${res.status}`);
    url = new URL(location, url);
    if (url.href.startsWith(stop)) return url;
  }
  throw new Error('too many redirects');
}

async function loginOnce(config, redirectUri, { nonce }) {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const n = nonce ? client.randomNonce() : undefined;
  const auth = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: 'openid email profile',
    state,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    ...(n ? { nonce: n } : {}),
  });
  const back = await follow(auth.href, redirectUri);
  const tokens = await client.authorizationCodeGrant(config, back, { pkceCodeVerifier: verifier, expectedState: state, ...(n ? { expectedNonce: n } : {}) });
  await client.fetchUserInfo(config, tokens.access_token, tokens.claims().sub);
  return tokens;
}

async function loginsPerSecond(config, redirectUri, total, concurrency, opts) {
  let next = 0;
  let failures = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next += 1;
        try {
          await loginOnce(config, redirectUri, opts);
        } catch {
          failures += 1;
        }
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  return { logins: total, failures, seconds, perSecond: (total - failures) / seconds };
}

function cannon(opts) {
  return new Promise((resolvePromise, reject) => {
    autocannon(opts, (err, result) => (err ? reject(err) : resolvePromise(result)));
  });
}

export async function run(opts = {}) {
  const cfg = opts.quick ? SETTINGS.quick : SETTINGS.full;
  const failures = [];
  const log = (s) => process.stdout.write(`${s}\n`);
  const machine = `${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, node ${process.version}`;
  const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');
  log(`machine: ${machine}`);
  log(`load average at start: ${load()}`);

  const database = await createTestDatabase({ schemas: ['auth_bridge'] });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const prefix = '/services/auth-bridge/';
  const rpRedirect = 'http://127.0.0.1:9/rp/callback';
  const uni = await startUniversity([`${base}${prefix}callback/uni`, rpRedirect]);
  const config = service.configSchema.parse({
    publicUrl: base,
    upstreams: { uni: { displayName: 'University', issuer: uni.issuer, clientId: 'rp', clientSecret: 'rp-secret-0123456789', scopes: ['openid', 'email', 'profile'] } },
    hubs: { hub: { clientId: 'hub', clientSecret: 'hub-secret-0123456789', redirectUris: [rpRedirect] } },
  });
  const settings = resolveSettings('auth-bridge', {
    HUBSIDE_PORT: String(port),
    // Full-speed token/userinfo from one address measures cost per request, not a real hub's load.
    HUBSIDE_RATE_LIMIT_ANONYMOUS: '0',
    // Saturating the service on purpose: measure its cost, not its load shedding.
    HUBSIDE_MAX_EVENT_LOOP_DELAY: '0',
    HUBSIDE_DATA_DIR: database.dataDir,
    ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
  });
  const app = await service.build({ settings, config, logger: false, defaultMetrics: false });
  await app.listen({ host: '127.0.0.1', port });
  const results = { benchmark: name, mode: opts.quick ? 'quick' : 'full', machine, database: database.kind, settings: cfg };
  try {
    const bridgeRp = await client.discovery(new URL(`${base}${prefix}oidc`), 'hub', undefined, client.ClientSecretPost('hub-secret-0123456789'), {
      execute: [client.allowInsecureRequests],
    });
    const directRp = await client.discovery(new URL(uni.issuer), 'rp', undefined, client.ClientSecretPost('rp-secret-0123456789'), {
      execute: [client.allowInsecureRequests],
    });
    // Warm both paths (discovery caches, JIT) before measuring.
    await loginOnce(bridgeRp, rpRedirect, { nonce: false });
    await loginOnce(directRp, rpRedirect, { nonce: true });

    const direct = await loginsPerSecond(directRp, rpRedirect, cfg.logins, cfg.concurrency, { nonce: true });
    const chain = await loginsPerSecond(bridgeRp, rpRedirect, cfg.logins, cfg.concurrency, { nonce: false });
    results.logins = { direct, chain, overhead: direct.perSecond / chain.perSecond };
    if (chain.failures > 0) failures.push(`${chain.failures} logins through the bridge failed`);

    // Userinfo and the refresh_token grant, each against the bridge and against the university
    // itself (the same oidc-provider, in memory, without the bridge's database and mounting).
    const bridgeTokens = await loginOnce(bridgeRp, rpRedirect, { nonce: false });
    const directTokens = await loginOnce(directRp, rpRedirect, { nonce: true });
    const userinfoRun = (url, accessToken) =>
      cannon({ url, headers: { authorization: `Bearer ${accessToken}` }, connections: 20, duration: cfg.seconds });
    const refreshRun = (url, refreshToken, clientId, secret) =>
      cannon({
        url,
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId, client_secret: secret }).toString(),
        connections: 10,
        duration: cfg.seconds,
      });
    const summary = (r) => ({ rps: r.requests.average, p99ms: r.latency.p99, non2xx: r.non2xx, errors: r.errors });
    const directMeta = directRp.serverMetadata();
    results.userinfo = {
      chain: summary(await userinfoRun(`${base}${prefix}oidc/me`, bridgeTokens.access_token)),
      direct: summary(await userinfoRun(directMeta.userinfo_endpoint, directTokens.access_token)),
    };
    results.tokenRefresh = {
      chain: summary(await refreshRun(`${base}${prefix}oidc/token`, bridgeTokens.refresh_token, 'hub', 'hub-secret-0123456789')),
      direct: summary(await refreshRun(directMeta.token_endpoint, directTokens.refresh_token, 'rp', 'rp-secret-0123456789')),
    };
    for (const [what, pair] of [['userinfo', results.userinfo], ['token (refresh_token)', results.tokenRefresh]]) {
      for (const [side, r] of Object.entries(pair)) {
        if (r.non2xx > 0 || r.errors > 0) failures.push(`${what} ${side}: ${r.non2xx} non-2xx answers, ${r.errors} errors`);
      }
      pair.ratio = pair.chain.rps / pair.direct.rps;
    }
    results.loadAverage = load();

    const f = (n) => (Number.isFinite(n) ? n.toFixed(1) : 'n/a');
    const r2 = (n) => (Number.isFinite(n) ? n.toFixed(2) : 'n/a');
    log(`completed logins (concurrency ${cfg.concurrency}, ${cfg.logins} each):`);
    log(`  RP -> university directly         ${f(direct.perSecond)} logins/s`);
    log(`  RP -> bridge -> university -> RP  ${f(chain.perSecond)} logins/s`);
    log(`  overhead ratio (direct / chain)   ${r2(results.logins.overhead)}x`);
    const row = (what, pair) =>
      log(`${what.padEnd(34)} bridge ${f(pair.chain.rps)} req/s (p99 ${pair.chain.p99ms} ms), university ${f(pair.direct.rps)} req/s (p99 ${pair.direct.p99ms} ms), bridge/university ${r2(pair.ratio)}`);
    row('userinfo (Bearer, 20 connections)', results.userinfo);
    row('refresh_token grant (10 conn)', results.tokenRefresh);
    log(`load average at end: ${results.loadAverage}`);
  } catch (err) {
    failures.push(err instanceof Error ? (err.stack ?? err.message) : String(err));
  } finally {
    await app.close();
    await uni.close();
    await database.drop();
  }
  const dir = opts.resultsDir ?? join(REPO, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const file = join(dir, `auth-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}Z${opts.quick ? '-quick' : ''}.json`);
  await writeFile(file, JSON.stringify({ ...results, failures }, null, 2));
  return { ok: failures.length === 0, failures, results, file };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, 'results-dir': { type: 'string' } } });
  const outcome = await run({ quick: values.quick, resultsDir: values['results-dir'] });
  for (const f of outcome.failures) process.stderr.write(`FAILED: ${f}\n`);
  process.exit(outcome.ok ? 0 : 1);
}
