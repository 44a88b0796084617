import { randomBytes, timingSafeEqual } from 'node:crypto';
import fastifyCookie from '@fastify/cookie';
import type { CookieSerializeOptions } from '@fastify/cookie';
import { createSigner, createVerifier } from 'fast-jwt';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import {
  AuthRequiredError,
  ForbiddenError,
  HubApiError,
  HubNotConfiguredError,
  InvalidTokenError,
  MalformedAuthorizationError,
} from './errors.js';
import type { HubClient } from './hub-client.js';
import { IdentityCache } from './identity-cache.js';
import type { CacheResult } from './identity-cache.js';
import type { HubIdentity } from './models.js';
import { anyScopeSatisfied, scopeSatisfied } from './scopes.js';

/** Per-route authentication, set as `config: { auth: ... }` on a route. */
export interface RouteAuth {
  /** Scopes the caller must hold, all of them (filters allowed, e.g. `read:users!user=alice`). */
  scopes?: readonly string[] | ((request: FastifyRequest) => readonly string[]);
  /** Require one of the service's access scopes, as JupyterHub's HubAuth does. Default true. */
  access?: boolean;
  /** An HTML page: send a browser without credentials to the hub's login instead of a 401. */
  browser?: boolean;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** `false` makes a route public; anything else (including nothing) requires a hub identity. */
    auth?: RouteAuth | false;
  }
  interface FastifyRequest {
    /** The caller's hub identity, set on every authenticated route. */
    hubUser: HubIdentity | null;
  }
  interface FastifyInstance {
    hubIdentities: IdentityCache | null;
  }
}

export interface HubOAuthOptions {
  /** JUPYTERHUB_CLIENT_ID; also the name of the token cookie. */
  clientId: string;
  /** JUPYTERHUB_OAUTH_CALLBACK_URL, exactly as registered with the hub (often a path). */
  redirectUri: string;
  /** Where browsers authorize, e.g. `/hub/api/oauth2/authorize` (same origin through the proxy). */
  authorizeUrl: string;
  /** Keys for signing cookies and the OAuth state; the first signs, all verify (rotation). */
  secrets: readonly string[];
  /** `auto` marks cookies Secure when the request arrived over https. */
  secureCookies?: boolean | 'auto';
}

export interface HubAuthOptions {
  /** null when no hub is configured: protected routes then answer 503 with how to connect one. */
  hub: HubClient | null;
  /** The route prefix (JUPYTERHUB_SERVICE_PREFIX), ending in `/`. */
  prefix: string;
  /** Scopes that grant access to this service (see `defaultAccessScopes`). */
  accessScopes: readonly string[];
  cacheTtlMs?: number;
  failureTtlMs?: number;
  cacheMaxEntries?: number;
  onCacheResult?: (result: CacheResult) => void;
  oauth?: HubOAuthOptions;
}

const AUTH_HEADER = /^(token|bearer)[ \t]+([^\s]+)[ \t]*$/i;
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const STATE_TTL_S = 600;

/** Read the token from an Authorization header; undefined when there is no header. */
export function tokenFromHeader(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = AUTH_HEADER.exec(header);
  if (!match) {
    const scheme = header.trim().split(/\s+/, 1)[0] ?? '';
    const why = scheme === '' ? 'empty header' : /^(token|bearer)$/i.test(header.trim()) ? 'missing token' : `unsupported scheme "${scheme.slice(0, 20)}"`;
    throw new MalformedAuthorizationError(why);
  }
  return match[2];
}

function sameString(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

/** Only paths inside our own prefix are valid `next` targets, so login can't be an open redirect. */
export function safeNext(next: unknown, prefix: string): string {
  if (typeof next !== 'string' || next.length > 2048) return prefix;
  if (!next.startsWith(prefix) || next.startsWith('//') || next.includes('\\') || /[\u0000-\u001f]/.test(next)) return prefix;
  try {
    const parsed = new URL(next, 'http://placeholder.invalid');
    if (parsed.host !== 'placeholder.invalid' || !parsed.pathname.startsWith(prefix)) return prefix;
  } catch {
    return prefix;
  }
  return next;
}

async function hubAuthPlugin(fastify: FastifyInstance, opts: HubAuthOptions): Promise<void> {
  const { hub, prefix, oauth } = opts;
  const accessScopes = [...opts.accessScopes];
  const cache = hub
    ? new IdentityCache({
        resolve: (token) => hub.identify(token),
        ttlMs: opts.cacheTtlMs,
        failureTtlMs: opts.failureTtlMs,
        maxEntries: opts.cacheMaxEntries,
        onResult: opts.onCacheResult,
      })
    : null;
  fastify.decorate('hubIdentities', cache);
  fastify.decorateRequest('hubUser', null);

  const cookieName = oauth?.clientId;
  const stateCookieName = oauth ? `${oauth.clientId}-oauth-state` : undefined;
  if (oauth && oauth.secrets.length === 0) throw new TypeError('hub OAuth needs at least one signing secret');
  // Registered in every case, so services read and set cookies with one well-kept parser.
  if (!fastify.hasDecorator('parseCookie')) {
    await fastify.register(fastifyCookie, oauth ? { secret: [...oauth.secrets] } : {});
  }

  const cookieOptions = (request: FastifyRequest, extra: CookieSerializeOptions = {}): CookieSerializeOptions => ({
    path: prefix,
    httpOnly: true,
    sameSite: 'lax',
    secure: oauth?.secureCookies === 'auto' || oauth?.secureCookies === undefined ? request.protocol === 'https' : oauth.secureCookies,
    signed: true,
    ...extra,
  });

  const stateAudience = `${oauth?.clientId ?? ''}-oauth-state`;
  const signState = oauth
    ? createSigner({ key: oauth.secrets[0], aud: stateAudience, expiresIn: STATE_TTL_S * 1000, algorithm: 'HS256' })
    : undefined;
  const stateVerifiers = (oauth?.secrets ?? []).map((key) =>
    createVerifier({ key, allowedAud: stateAudience, algorithms: ['HS256'] }),
  );

  function credentials(request: FastifyRequest): { token: string; fromCookie: boolean } | undefined {
    const header = tokenFromHeader(request.headers.authorization);
    if (header !== undefined) return { token: header, fromCookie: false };
    if (cookieName) {
      const raw = request.cookies?.[cookieName];
      if (raw) {
        const unsigned = request.unsignCookie(raw);
        if (unsigned.valid && unsigned.value) return { token: unsigned.value, fromCookie: true };
      }
    }
    return undefined;
  }

  /** Start the hub's OAuth flow; after login the browser comes back to `next` (inside our prefix). */
  async function redirectToLogin(request: FastifyRequest, reply: FastifyReply, next: string): Promise<FastifyReply> {
    if (!oauth || !signState) throw new AuthRequiredError();
    const state = randomBytes(24).toString('base64url');
    const stateJwt = signState({ st: state, next });
    reply.setCookie(stateCookieName!, stateJwt, cookieOptions(request, { maxAge: STATE_TTL_S }));
    const target = new URL(oauth.authorizeUrl, 'http://placeholder.invalid');
    target.searchParams.set('client_id', oauth.clientId);
    target.searchParams.set('redirect_uri', oauth.redirectUri);
    target.searchParams.set('response_type', 'code');
    target.searchParams.set('state', state);
    const location = target.host === 'placeholder.invalid' ? `${target.pathname}${target.search}` : target.toString();
    return reply.redirect(location, 302);
  }

  fastify.addHook('onRequest', async (request, reply) => {
    const auth = request.routeOptions.config?.auth;
    // Unmatched URLs (404) and explicitly public routes skip authentication.
    if (auth === false || request.routeOptions.url === undefined) return;
    if (!cache) throw new HubNotConfiguredError();
    const rule: RouteAuth = auth ?? {};
    const creds = credentials(request);
    if (!creds) {
      if (rule.browser && oauth && SAFE_METHODS.has(request.method)) return redirectToLogin(request, reply, safeNext(request.url, prefix));
      throw new AuthRequiredError();
    }
    if (creds.fromCookie && !SAFE_METHODS.has(request.method)) {
      // Cookies ride along on cross-site requests; a state change needs proof it came from our pages.
      const site = request.headers['sec-fetch-site'];
      const origin = request.headers.origin;
      const host = request.headers['x-forwarded-host'] ?? request.headers.host;
      const sameOrigin = site === 'same-origin' || (typeof origin === 'string' && host !== undefined && safeHost(origin) === host);
      if (!sameOrigin) throw new ForbiddenError('cross-site request refused: use an Authorization header or the service pages');
    }
    const identity = await cache.get(creds.token);
    if (!identity) {
      if (creds.fromCookie && rule.browser && oauth && SAFE_METHODS.has(request.method)) {
        return redirectToLogin(request, reply, safeNext(request.url, prefix));
      }
      throw new InvalidTokenError();
    }
    const ctx = { groupsOfUser: (u: string) => (identity.kind === 'user' && u === identity.name ? identity.groups : undefined) };
    if ((rule.access ?? true) && accessScopes.length > 0 && !anyScopeSatisfied(identity.scopes, accessScopes, ctx)) {
      throw new ForbiddenError(`this token lacks access to the service: it needs one of ${accessScopes.join(', ')}`);
    }
    const needed = typeof rule.scopes === 'function' ? rule.scopes(request) : (rule.scopes ?? []);
    const missing = needed.filter((s) => !scopeSatisfied(identity.scopes, s, ctx));
    if (missing.length > 0) {
      throw new ForbiddenError(`this token lacks the scope${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`);
    }
    request.hubUser = identity;
  });

  if (!oauth) return;

  fastify.get(`${prefix}oauth_callback`, { config: { auth: false } }, async (request, reply) => {
    const query = request.query as Record<string, unknown>;
    if (typeof query.error === 'string') {
      throw new ForbiddenError(`the hub refused the login: ${query.error.slice(0, 200)}`);
    }
    const code = query.code;
    const state = query.state;
    if (typeof code !== 'string' || code === '' || typeof state !== 'string' || state === '') {
      return reply.code(400).send({ statusCode: 400, error: 'Bad Request', code: 'HUBSIDE_ERR_OAUTH_STATE', message: 'OAuth callback needs code and state parameters' });
    }
    const raw = request.cookies[stateCookieName!];
    const unsigned = raw ? request.unsignCookie(raw) : undefined;
    let payload: { st?: unknown; next?: unknown } | undefined;
    for (const verify of stateVerifiers) {
      if (!unsigned?.valid || !unsigned.value) break;
      try {
        payload = verify(unsigned.value) as { st?: unknown; next?: unknown };
        break;
      } catch {
        payload = undefined;
      }
    }
    reply.clearCookie(stateCookieName!, { path: prefix });
    if (!payload || typeof payload.st !== 'string' || !sameString(payload.st, state)) {
      return reply.code(400).send({
        statusCode: 400,
        error: 'Bad Request',
        code: 'HUBSIDE_ERR_OAUTH_STATE',
        message: 'OAuth state mismatch or expired login attempt; start the login again',
      });
    }
    let accessToken: string;
    try {
      accessToken = await hub!.exchangeOAuthCode({ code, clientId: oauth.clientId, redirectUri: oauth.redirectUri });
    } catch (err) {
      if (err instanceof HubApiError) throw new ForbiddenError(`the hub did not accept the login code (${err.status})`);
      throw err;
    }
    const owner = await hub!.identify(accessToken);
    if (!owner) throw new InvalidTokenError();
    cache!.remember(accessToken, owner);
    reply.setCookie(cookieName!, accessToken, cookieOptions(request));
    return reply.redirect(safeNext(payload.next, prefix), 302);
  });

  fastify.get(`${prefix}login`, { config: { auth: false } }, async (request, reply) => {
    return redirectToLogin(request, reply, safeNext((request.query as Record<string, unknown>).next, prefix));
  });

  fastify.get(`${prefix}logout`, { config: { auth: false } }, async (request, reply) => {
    const creds = (() => {
      try {
        return credentials(request);
      } catch {
        return undefined;
      }
    })();
    if (creds?.fromCookie) cache?.forget(creds.token);
    reply.clearCookie(cookieName!, { path: prefix });
    reply.clearCookie(stateCookieName!, { path: prefix });
    return reply.type('application/json').send({ loggedOut: true });
  });
}

function safeHost(origin: string): string | undefined {
  try {
    return new URL(origin).host;
  } catch {
    return undefined;
  }
}

export const hubAuth = fp(hubAuthPlugin, { name: 'hubside-hub-auth', fastify: '5.x' });
export default hubAuth;
