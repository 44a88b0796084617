/**
 * All four services built with their own `buildApp` against one real JupyterHub and one test
 * database, for tests that walk every registered route through `inject`.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { loggerOptions, resolveSettings, withoutPrototypes } from '@hubside/service-kit';
import pino from 'pino';
import type { RegisteredRoute, ServiceName } from '@hubside/service-kit';
import { createTestDatabase, startHub } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import { buildApp as buildAuthBridge, configSchema as authBridgeConfig } from '../../services/auth-bridge/src/app.js';
import { buildApp as buildGateway, configSchema as gatewayConfig } from '../../services/data-gateway/src/app.js';
import { buildApp as buildProfiles, configSchema as profileConfig } from '../../services/profile-api/src/app.js';
import { communityProfiles } from '../../services/profile-api/test/fixtures.js';
import { buildApp as buildUsage, configSchema as usageConfig } from '../../services/usage-collector/src/app.js';

export const SERVICES = ['auth-bridge', 'profile-api', 'usage-collector', 'data-gateway'] as const satisfies readonly ServiceName[];
export type Service = (typeof SERVICES)[number];

/** Long enough for HUBSIDE_COOKIE_SECRET; only ever used by these tests. */
export const COOKIE_SECRET = 'security-test-cookie-secret-0123456789abcdef';
export const UPSTREAM_SECRET = 'upstream-client-secret-6f1e2d3c4b5a';
export const HUB_CLIENT_SECRET = 'hub-client-secret-9a8b7c6d5e4f3a2b';
export const GATEWAY_KEY = 'AKIDSECURITYTEST0001';
export const GATEWAY_SECRET = 'gateway-secret-key-7d6c5b4a39281706';

export const USERS = { alice: 'alice', bob: 'bob', root: 'root', nobody: 'nobody' } as const;

/** A loopback HTTP server that records every request it gets (a canary, or a fake backend). */
export interface Recorder {
  url: string;
  requests: Array<{ method: string; url: string }>;
  /** TCP connections open to it right now. */
  connections(): number;
  close(): Promise<void>;
}

export async function startRecorder(answer: (req: IncomingMessage) => { status: number; body: string; type?: string } | 'hang' = () => ({ status: 500, body: 'no' })): Promise<Recorder> {
  const requests: Recorder['requests'] = [];
  const server: Server = createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '' });
    req.resume();
    const a = answer(req);
    if (a === 'hang') return;
    res.writeHead(a.status, { 'content-type': a.type ?? 'text/plain' }).end(a.body);
  });
  let open = 0;
  server.on('connection', (socket) => {
    open += 1;
    socket.on('close', () => (open -= 1));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    connections: () => open,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export interface Stack {
  hub: RunningHub;
  database: TestDatabase;
  apps: Record<Service, FastifyInstance>;
  tokens: Record<keyof typeof USERS, string> & { aliceNoAccess: string; aliceAccessOnly: Record<Service, string> };
  /** A fake STS the gateway's datasets point at; every call answers 500. */
  sts: Recorder;
  prefix(service: Service): string;
  routes(service: Service): RegisteredRoute[];
  /** Every secret the stack used: tokens, cookie keys, client secrets, and any a test remembered. */
  secrets(): string[];
  /** Add a secret a test made (a token, a signed cookie) to those the log check looks for. */
  remember(secret: string): string;
  /** Every log line the four services wrote, at debug level, through their real (redacting) logger. */
  logLines: string[];
  close(): Promise<void>;
}

export interface StackOptions {
  /** Extra HUBSIDE_* settings for every service. */
  env?: Record<string, string>;
  logger?: FastifyInstance['log'];
  /** Hub API URL the services use (default the hub's own); faults put a proxy in between. */
  hubApiUrl?: (hub: RunningHub) => Promise<string> | string;
  stsUrl?: string;
  gatewayTimeoutSeconds?: number;
  /** A PostgreSQL of the test's own (faults restart it); default createTestDatabase. */
  databaseUrl?: string;
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const database: TestDatabase = opts.databaseUrl
    ? { kind: 'postgres', databaseUrl: opts.databaseUrl, dataDir: '/nonexistent-hubside-data', drop: async () => undefined }
    : await createTestDatabase({ schemas: SERVICES.map((s) => s.replaceAll('-', '_')) });
  const hub = await startHub({
    users: ['alice', 'bob', 'nobody'],
    admins: ['root'],
    groups: { physics: ['alice'], chemistry: ['bob'] },
    roles: [{ name: 'hubside-users', scopes: ['access:services'], users: ['alice', 'bob', 'root'] }],
  });
  const sts = await startRecorder();
  const apiUrl = opts.hubApiUrl ? await opts.hubApiUrl(hub) : hub.hubApiUrl;
  const env = (name: Service): NodeJS.ProcessEnv => ({
    JUPYTERHUB_API_URL: apiUrl,
    JUPYTERHUB_API_TOKEN: hub.adminToken,
    JUPYTERHUB_CLIENT_ID: `service-${name}`,
    HUBSIDE_COOKIE_SECRET: COOKIE_SECRET,
    HUBSIDE_DATA_DIR: database.dataDir,
    ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
    // Each test file drives thousands of requests as one user; limits have their own tests.
    HUBSIDE_RATE_LIMIT_USER: '0',
    HUBSIDE_RATE_LIMIT_ANONYMOUS: '0',
    ...opts.env,
  });
  const logLines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  // The services' own logger options (redaction included), at debug so more is checked than in production.
  const logger = (name: Service) => pino(loggerOptions({ level: 'debug', service: name }), sink);
  const common = (name: Service) => ({ settings: resolveSettings(name, env(name)), logger: opts.logger ?? logger(name), defaultMetrics: false });
  const dataset = (prefix: string, extra: Record<string, unknown> = {}) => ({
    provider: 's3-compatible',
    bucket: 'hubside-data',
    endpoint: opts.stsUrl ?? sts.url,
    region: 'us-east-1',
    prefix,
    access: 'read-write',
    maxLifetimeSeconds: 900,
    s3: { roleArn: 'arn:aws:iam::000000000000:role/hubside', accessKeyIdEnv: 'GW_KEY', secretAccessKeyEnv: 'GW_SECRET' },
    ...extra,
  });

  // Configs go through withoutPrototypes, as loadSection does for a real service.
  const apps = {} as Record<Service, FastifyInstance>;
  try {
    apps['profile-api'] = await buildProfiles({ ...common('profile-api'), config: withoutPrototypes(profileConfig.parse({ profiles: communityProfiles, adminGroups: ['profile-editors'] })) });
    apps['usage-collector'] = await buildUsage({
      ...common('usage-collector'),
      config: withoutPrototypes(usageConfig.parse({ access: { adminGroups: [], managers: { alice: ['physics'] } } })),
      autoPoll: false,
    });
    apps['data-gateway'] = await buildGateway(
      {
        ...common('data-gateway'),
        config: withoutPrototypes(gatewayConfig.parse({
          backendTimeoutSeconds: opts.gatewayTimeoutSeconds ?? 3,
          datasets: { home: dataset('home/{username}/'), physics: dataset('groups/{group}/', { groups: ['physics'] }) },
        })),
      },
      { env: { GW_KEY: GATEWAY_KEY, GW_SECRET: GATEWAY_SECRET } },
    );
    apps['auth-bridge'] = await buildAuthBridge({
      ...common('auth-bridge'),
      config: withoutPrototypes(authBridgeConfig.parse({
        publicUrl: 'http://127.0.0.1:9',
        upstreams: { uni: { displayName: 'University', issuer: 'http://127.0.0.1:9/uni', clientId: 'bridge', clientSecret: UPSTREAM_SECRET } },
        hubs: { hub: { clientId: 'hub', clientSecret: HUB_CLIENT_SECRET, redirectUris: ['http://127.0.0.1:9/hub/oauth_callback'] } },
      })),
    });
    await Promise.all(SERVICES.map((s) => apps[s].ready()));
  } catch (err) {
    await Promise.all(Object.values(apps).map((a) => a.close()));
    await hub.stop();
    await sts.close();
    await database.drop();
    throw err;
  }

  const aliceAccessOnly = {} as Record<Service, string>;
  for (const s of SERVICES) aliceAccessOnly[s] = await hub.createToken('alice', { scopes: [`access:services!service=${s}`], note: 'access-only' });
  const tokens = {
    alice: await hub.createToken('alice', { note: 'security' }),
    bob: await hub.createToken('bob', { note: 'security' }),
    root: await hub.createToken('root', { note: 'security' }),
    nobody: await hub.createToken('nobody', { note: 'security' }),
    aliceNoAccess: await hub.createToken('alice', { scopes: ['read:users!user=alice'], note: 'no-access' }),
    aliceAccessOnly,
  };

  const remembered: string[] = [];
  return {
    hub,
    database,
    apps,
    logLines,
    remember: (secret) => {
      remembered.push(secret);
      return secret;
    },
    tokens,
    sts,
    prefix: (s) => `/services/${s}/`,
    routes: (s) => apps[s].kit.routes.filter((r) => r.method !== 'HEAD'),
    secrets: () => [
      tokens.alice,
      tokens.bob,
      tokens.root,
      tokens.nobody,
      tokens.aliceNoAccess,
      ...Object.values(aliceAccessOnly),
      hub.adminToken,
      COOKIE_SECRET,
      UPSTREAM_SECRET,
      HUB_CLIENT_SECRET,
      GATEWAY_SECRET,
      ...remembered,
    ],
    close: async () => {
      await Promise.all(SERVICES.map((s) => apps[s]?.close()));
      await hub.stop();
      await sts.close();
      await database.drop();
    },
  };
}

/** Fill a route's `:params` and wildcard; `name`-like params get `user`. */
export function fillPath(url: string, user: string): string {
  return url
    .replace(/:(name|user|username)\b/g, encodeURIComponent(user))
    .replace(/:([A-Za-z_]+)/g, (_m, p: string) => (p === 'dataset' ? 'home' : p === 'hub' ? 'hub' : p === 'idp' ? 'uni' : '1'))
    .replace(/\*$/, '.well-known/openid-configuration');
}

/** Every stored log line that contains one of the stack's secrets (whole, or its first 16 characters). */
export function leakedLines(stack: Stack): string[] {
  const needles = stack.secrets().flatMap((s) => [s, s.slice(0, 16)]).filter((n) => n.length >= 12);
  return stack.logLines.filter((line) => needles.some((n) => line.includes(n))).map((l) => l.slice(0, 300));
}
