import { hkdfSync } from 'node:crypto';
import { HubClient, defaultAccessScopes, hubAuth } from '@hubside/hub-client';
import escapeHtml from 'escape-html';
import Fastify from 'fastify';
import type { FastifyBaseLogger, FastifyInstance, FastifyServerOptions } from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { ServiceSettings } from './config.js';
import { databasePlugin } from './database/index.js';
import type { MigrationSet } from './database/index.js';
import { errorBody, installErrorHandlers } from './errors.js';
import { loggerOptions } from './logging.js';
import { createMetrics } from './metrics.js';
import { registerProtection } from './protection.js';
import type { KitMetrics } from './metrics.js';

export interface ServiceKit {
  settings: ServiceSettings;
  /** null when no hub is configured (e.g. `npm start` on a laptop). */
  hub: HubClient | null;
  metrics: KitMetrics;
  startedAt: Date;
  /** Every route the service registered, so security tests can reach all of them, including new ones. */
  routes: RegisteredRoute[];
}

export interface RegisteredRoute {
  method: string;
  url: string;
  config: Readonly<Record<string, unknown>>;
}

declare module 'fastify' {
  interface FastifyInstance {
    kit: ServiceKit;
  }
}

export interface CreateServiceAppOptions {
  settings: ServiceSettings;
  /** false silences logs (unit tests); a pino instance or options override the default JSON logger. */
  logger?: boolean | FastifyBaseLogger | FastifyServerOptions['logger'];
  version?: string;
  /** Collect process metrics (off in unit tests that build many apps). */
  defaultMetrics?: boolean;
  /** Serve a minimal signed-in page at `{prefix}`; services with their own UI turn it off. */
  landingPage?: boolean;
  /** The service's own database schema and migrations, applied at start. */
  database?: { schema: string; migrations: MigrationSet };
}

export type ServiceApp = FastifyInstance & { withTypeProvider: FastifyInstance['withTypeProvider'] };

// Generous for APIs and spawn forms, small enough that a hostile body can't hurt.
const BODY_LIMIT = 1024 * 1024;

function cookieSecrets(settings: ServiceSettings): string[] {
  if (settings.cookieSecrets && settings.cookieSecrets.length > 0) return settings.cookieSecrets;
  // Replicas share the hub token, so a key derived from it verifies cookies across them all.
  const key = hkdfSync('sha256', settings.hub!.token, 'hubside-cookie-v1', `${settings.name}:${settings.oauth!.clientId}`, 32);
  return [Buffer.from(key).toString('base64url')];
}

/**
 * A Fastify instance with everything a Hubside service shares: JSON logging with redaction,
 * zod validation, the error format, metrics, health, and hub authentication.
 */
export async function createServiceApp(opts: CreateServiceAppOptions): Promise<FastifyInstance> {
  const { settings } = opts;
  const { protection } = settings;
  const metrics = createMetrics(settings.name, { defaultMetrics: opts.defaultMetrics ?? true });
  const hub = settings.hub
    ? new HubClient({
        apiUrl: settings.hub.apiUrl,
        token: settings.hub.token,
        timeoutMs: settings.hub.timeoutMs,
        observe: (event) => metrics.observeHubCall(event),
      })
    : null;

  const logger = opts.logger === undefined || opts.logger === true ? loggerOptions({ level: settings.logLevel, service: settings.name }) : opts.logger;
  const isInstance = typeof logger === 'object' && logger !== null && 'child' in logger && typeof logger.child === 'function';
  const app = Fastify({
    ...(isInstance ? { loggerInstance: logger as FastifyBaseLogger } : { logger: logger as FastifyServerOptions['logger'] }),
    trustProxy: settings.trustProxy,
    bodyLimit: BODY_LIMIT,
    // Slow clients (slowloris) are cut off rather than holding sockets open forever: the whole
    // request must arrive within requestTimeout, and Node checks open requests that often.
    requestTimeout: protection.requestTimeoutMs,
    http: {
      headersTimeout: Math.min(protection.requestTimeoutMs, 20_000),
      connectionsCheckingInterval: Math.max(250, Math.min(5000, protection.requestTimeoutMs / 4)),
    },
    connectionTimeout: 60_000,
    keepAliveTimeout: 65_000,
    return503OnClosing: true,
    // The first start of an embedded database creates it, which can take a while on a busy laptop.
    pluginTimeout: 120_000,
    routerOptions: { maxParamLength: 500 },
    genReqId: () => crypto.randomUUID(),
  }).withTypeProvider<ZodTypeProvider>();

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandlers(app);

  const routes: RegisteredRoute[] = [];
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) routes.push({ method, url: route.url, config: (route.config ?? {}) as Record<string, unknown> });
  });
  app.decorate('kit', { settings, hub, metrics, startedAt: new Date(), routes });

  // No JupyterHub name, group or id contains NUL, and PostgreSQL text cannot hold it: refuse it
  // in paths and queries here rather than as a database error deep inside a route.
  app.addHook('preValidation', async (request, reply) => {
    const where = nulIn(request.params, 'params') ?? nulIn(request.query, 'query');
    if (where) return reply.code(400).send(errorBody(400, `${where}: must not contain NUL characters`, 'HUBSIDE_ERR_VALIDATION'));
  });

  app.addHook('onResponse', async (request, reply) => {
    metrics.httpDuration.observe(
      { method: request.method, route: request.routeOptions.url ?? 'unmatched', status_code: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });
  app.addHook('onClose', async () => {
    await hub?.close();
  });

  if (opts.database) {
    await app.register(databasePlugin, {
      databaseUrl: settings.databaseUrl,
      dataDir: settings.dataDir,
      schema: opts.database.schema,
      migrations: opts.database.migrations,
    });
  }

  // Before authentication, so an overloaded service sheds requests before asking the hub anything.
  await registerProtection(app, protection);

  if (!hub) {
    // Without a hub every page needs a login that cannot happen: the home page says, for people,
    // how to connect one (APIs keep answering 503 JSON). Whatever the service serves there itself.
    const home = new Set([settings.prefix, settings.prefix.replace(/\/+$/, '')].filter(Boolean));
    app.addHook('onRequest', async (request, reply) => {
      if (request.method !== 'GET' && request.method !== 'HEAD') return;
      const path = request.url.split('?', 1)[0] ?? '';
      if (!home.has(path)) return;
      return reply
        .code(503)
        .type('text/html; charset=utf-8')
        .header('retry-after', '5')
        .header('cache-control', 'no-store')
        .header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'")
        .send(noHubPage(settings.name, settings.prefix));
    });
  }

  await app.register(hubAuth, {
    hub,
    prefix: settings.prefix,
    accessScopes: settings.accessScopes ?? defaultAccessScopes({}, settings.name),
    cacheTtlMs: settings.authCacheTtlMs,
    onCacheResult: (result) => metrics.observeCache(result),
    ...(settings.oauth && hub
      ? { oauth: { ...settings.oauth, secrets: cookieSecrets(settings), secureCookies: 'auto' as const } }
      : {}),
  });

  app.get(`${settings.prefix}health`, { config: { auth: false, shed: false, rateLimit: false } }, async () => ({
    status: 'ok',
    service: settings.name,
    version: opts.version ?? '0.0.0',
    uptimeSeconds: Math.round((Date.now() - app.kit.startedAt.getTime()) / 1000),
    hub: hub ? 'configured' : 'not configured',
  }));

  app.get(
    `${settings.prefix}metrics`,
    // Like the hub's own /hub/metrics: a token with read:metrics unless opened explicitly.
    { config: { auth: settings.metricsPublic ? false : { access: false, scopes: ['read:metrics'] }, shed: false, rateLimit: false } },
    async (_request, reply) => {
      const body = await metrics.registry.metrics();
      return reply.type(metrics.registry.contentType).send(body);
    },
  );

  app.get(
    `${settings.prefix}api/whoami`,
    { schema: { response: { 200: whoamiSchema } } },
    async (request) => {
      const user = request.hubUser!;
      return { kind: user.kind, name: user.name, admin: user.admin, groups: user.groups, scopes: user.scopes };
    },
  );

  if (opts.landingPage ?? true) {
    app.get(settings.prefix, { config: { auth: { browser: true } } }, async (request, reply) => {
      const user = request.hubUser!;
      const name = escapeHtml(user.name);
      return reply
        .type('text/html; charset=utf-8')
        .header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'")
        .send(
          `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Hubside ${settings.name}</title>` +
            `<meta name="viewport" content="width=device-width, initial-scale=1"></head><body>` +
            `<main><h1>Hubside ${settings.name}</h1><p>Signed in as <strong id="user">${name}</strong>.</p>` +
            `<p><a href="${settings.prefix}logout">Log out</a></p></main></body></html>`,
        );
    });
  }

  return app;
}

/** The home page of a service that runs without a hub: what it is and how to connect one. */
export function noHubPage(name: string, prefix: string): string {
  const n = escapeHtml(name);
  const p = escapeHtml(prefix);
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Hubside ${n}: no hub connected</title>` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44em;margin:2em auto;padding:0 1em}code,pre{background:#f3f3f3}pre{padding:.6em;overflow:auto}</style>` +
    `</head><body><main id="no-hub"><h1>Hubside ${n} is running, without a hub</h1>` +
    `<p>Its pages need a JupyterHub login, and no hub is connected. <a href="${p}health">${p}health</a> answers.</p>` +
    `<h2>Connect a hub</h2><ul>` +
    `<li>The whole product on this machine: install JupyterHub (<code>apt-get install jupyterhub</code> on Debian/Ubuntu) and run <code>npm start</code> again; it starts a hub at <code>http://127.0.0.1:8000</code> with all four services and demo people.</li>` +
    `<li>Your own hub: add this service to <code>c.JupyterHub.services</code> (see the README's <em>Running beside an existing hub</em>), ` +
    `or start it with the variables the hub would set:</li></ul>` +
    `<pre>JUPYTERHUB_API_URL=http://127.0.0.1:8081/hub/api \\\n` +
    `JUPYTERHUB_API_TOKEN=&lt;this service's api_token&gt; \\\n` +
    `npx hubside ${n}</pre></main></body></html>`
  );
}

function nulIn(value: unknown, path: string): string | undefined {
  if (typeof value === 'string') return value.includes('\u0000') ? path : undefined;
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const found = nulIn(v, `${path}.${k.includes('\u0000') ? '(key)' : k}`) ?? (k.includes('\u0000') ? path : undefined);
      if (found) return found;
    }
  }
  return undefined;
}

/** The caller's hub identity, as every service reports it at `{prefix}api/whoami`. */
export const whoamiSchema = z.object({
  kind: z.enum(['user', 'service']),
  name: z.string(),
  admin: z.boolean(),
  groups: z.array(z.string()),
  scopes: z.array(z.string()),
});
