import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Kysely } from 'kysely';
import type Provider from 'oidc-provider';
import type { KoaContextLike } from 'oidc-provider';
import type { AuthBridgeConfig } from '../config.js';
import type { DB } from '../db.table.js';
import { claimsExpired, claimsTime, hubOfAccount, loadClaims } from '../accounts.js';
import { errorPage } from '../pages.js';
import { ACCESS_CODE_COOKIE } from '../routes/login.js';
import { createOidcAdapter } from './adapter.js';
import type { KeyMaterial } from './keys.js';

export interface ProviderOptions {
  config: AuthBridgeConfig;
  db: Kysely<DB>;
  keys: KeyMaterial;
  /** `{publicUrl}{prefix}oidc` */
  issuer: string;
  /** Service prefix, ending in `/`. */
  prefix: string;
  /** Client secrets by hub name, already resolved from env or files. */
  secrets: Record<string, string>;
  /** Koa's `proxy`: trust X-Forwarded-* (always set by us from the issuer, see mount). */
}

// Every claim a hub's authenticator needs, released with the `openid` scope alone, so an
// unmodified GenericOAuthenticator with `scope: [openid]` gets username and groups.
export const HUB_CLAIMS = ['sub', 'username', 'groups', 'email', 'name', 'idp', 'admin'] as const;

export async function createProvider(opts: ProviderOptions): Promise<Provider> {
  // Loaded here, not at module load: importing it prints a runtime notice on Node 20, which
  // commands that never serve logins (`hubside migrate`, `check-config`) should not show.
  const { default: ProviderClass, interactionPolicy } = await import('oidc-provider');
  const { config, db, keys, issuer, prefix, secrets } = opts;
  const hubByClient = new Map(Object.entries(config.hubs).map(([name, hub]) => [hub.clientId, name] as const));

  const policy = interactionPolicy.base();
  const login = policy.get('login');
  // A browser session belongs to the hub it logged in for: another hub's rules (domains,
  // allowed users, username derivation) have not been applied to it, so log in again.
  login.checks.add(
    new interactionPolicy.Check('other_hub', 'the session belongs to another hub', async (ctx: any) => {
      const accountId: string | undefined = ctx.oidc.session?.accountId;
      if (!accountId) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      const hub = hubByClient.get(ctx.oidc.client.clientId);
      return hubOfAccount(accountId) === hub ? interactionPolicy.Check.NO_NEED_TO_PROMPT : interactionPolicy.Check.REQUEST_PROMPT;
    }),
  );
  // A session whose account's claims are older than ttl.upstreamClaims goes back to the
  // institution, so the groups it asserts are read afresh.
  login.checks.add(
    new interactionPolicy.Check('stale_claims', 'what the institution said is too old', async (ctx: any) => {
      const accountId: string | undefined = ctx.oidc.session?.accountId;
      if (!accountId || ctx.oidc.result?.login) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      const at = await claimsTime(db, accountId);
      return at && !claimsExpired(at, config.ttl.upstreamClaims) ? interactionPolicy.Check.NO_NEED_TO_PROMPT : interactionPolicy.Check.REQUEST_PROMPT;
    }),
  );
  // An event access code must go through the code's own checks, even with a live session; but
  // not again when the authorization resumes from the login that just redeemed it (with the
  // code as an `access_code` parameter it is still there, and would be redeemed again and
  // again until used up).
  login.checks.add(
    new interactionPolicy.Check('access_code', 'an event access code was given', async (ctx: any) => {
      if (ctx.oidc.result?.login) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      return ctx.oidc.params.access_code || ctx.cookies.get(ACCESS_CODE_COOKIE, { signed: false }) ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }),
  );

  const provider = new ProviderClass(issuer, {
    adapter: (name: string) => createOidcAdapter(db, name),
    clients: Object.entries(config.hubs).map(([name, hub]) => ({
      client_id: hub.clientId,
      client_secret: secrets[name],
      client_name: hub.displayName ?? name,
      redirect_uris: hub.redirectUris,
      post_logout_redirect_uris: hub.postLogoutRedirectUris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      // Basic is registered; oidc-provider accepts client_secret_post from the same client too.
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    jwks: keys.jwks,
    cookies: {
      // Our own names: the bridge shares its host with the hub and whatever else runs there,
      // so oidc-provider's generic `_session` must not collide with another app's cookie.
      names: { session: 'hubside_auth_session', interaction: 'hubside_auth_interaction', resume: 'hubside_auth_resume' },
      keys: keys.cookieKeys,
      long: { signed: true, httpOnly: true, sameSite: 'lax' },
      short: { signed: true, httpOnly: true, sameSite: 'lax' },
    },
    findAccount: async (_ctx: unknown, id: string) => {
      const claims = await loadClaims(db, id, config.hubs, { maxAgeSeconds: config.ttl.upstreamClaims });
      if (!claims) return undefined;
      return { accountId: id, claims: async () => claims };
    },
    claims: { openid: [...HUB_CLAIMS], email: ['email'], profile: ['name', 'username'], groups: ['groups'] },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    conformIdTokenClaims: false,
    extraParams: ['idp_hint', 'access_code'],
    pkce: {
      required: (_ctx: unknown, client: { clientId: string }) => {
        const hub = hubByClient.get(client.clientId);
        return hub ? config.hubs[hub]!.requirePkce : true;
      },
    },
    interactions: {
      policy,
      url: (_ctx: unknown, interaction: { uid: string }) => `${prefix}interaction/${interaction.uid}`,
    },
    // Hubs are first-party: no consent screen. The grant covers what the hub asked for.
    loadExistingGrant: async (ctx: any) => {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) {
        const existing = await ctx.oidc.provider.Grant.find(grantId);
        if (existing) return existing;
      }
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope(String(ctx.oidc.params.scope ?? 'openid'));
      grant.addOIDCClaims([...HUB_CLAIMS]);
      await grant.save();
      return grant;
    },
    // Hub authenticators refresh without asking for offline_access.
    issueRefreshToken: async (_ctx: unknown, client: { grantTypeAllowed(g: string): boolean }) => client.grantTypeAllowed('refresh_token'),
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx: any, form: string) => {
          ctx.type = 'html';
          ctx.body = logoutPage(form);
        },
        postLogoutSuccessSource: async (ctx: any) => {
          ctx.type = 'html';
          ctx.body = errorPage({ title: 'Signed out', message: 'You are signed out of the login service.', status: 200 });
        },
      },
      revocation: { enabled: true },
      introspection: { enabled: false },
    },
    ttl: providerTtl(config.ttl),
    renderError: async (ctx: any, out: Record<string, string>) => {
      ctx.type = 'html';
      ctx.body = errorPage({
        title: 'Login refused',
        message: describeOidcError(out),
        status: ctx.status ?? 400,
      });
    },
  });
  return provider;
}

/**
 * Every lifetime oidc-provider asks for, so none of its defaults (and their start-up notices)
 * applies. The flows this bridge does not enable (client credentials, device code, CIBA,
 * pre-authorized codes) get short fixed lifetimes: nothing issues them, but a stray call
 * must not fall back to a default.
 */
export function providerTtl(ttl: AuthBridgeConfig['ttl']): Record<string, number> {
  return {
    AccessToken: ttl.accessToken,
    AuthorizationCode: ttl.authorizationCode,
    IdToken: ttl.idToken,
    Interaction: ttl.interaction,
    RefreshToken: ttl.refreshToken,
    Session: ttl.session,
    Grant: ttl.grant,
    ClientCredentials: 600,
    DeviceCode: 600,
    BackchannelAuthenticationRequest: 600,
    PreAuthorizedCode: 600,
  };
}

function describeOidcError(out: Record<string, string>): string {
  const detail = out.error_description ?? out.error ?? 'unknown error';
  if (/redirect_uri/.test(detail)) return `The hub sent a redirect_uri that is not registered for it (${detail}). Ask the hub's administrator to fix its configuration.`;
  return detail;
}

function logoutPage(form: string): string {
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign out</title>` +
    `<meta name="viewport" content="width=device-width, initial-scale=1"></head><body><main>` +
    `<h1>Sign out</h1><p>Sign out of the login service?</p>${form}` +
    `<button type="submit" form="op.logoutForm" name="logout" value="yes" autofocus>Yes, sign me out</button>` +
    `<button type="submit" form="op.logoutForm">No, stay signed in</button></main></body></html>`
  );
}

const SCOPE_SYNTAX = /^[\x21\x23-\x5B\x5D-\x7E]+(?: [\x21\x23-\x5B\x5D-\x7E]+)*$/;

/**
 * Hubs only ever need the OpenID claims, and GenericOAuthenticator sends no scope at all unless
 * configured with one (or `profile` without `openid`). Without `openid` oidc-provider would
 * answer access_denied after the person logged in at their institution, or issue a token that
 * userinfo refuses; so `openid` is always requested. Malformed or repeated scopes are left for
 * oidc-provider to refuse.
 */
function withOpenidScope(ctx: KoaContextLike): void {
  const scope: unknown = ctx.query.scope;
  if (scope !== undefined && typeof scope !== 'string') return;
  if (!scope) ctx.query = { ...ctx.query, scope: 'openid' };
  else if (SCOPE_SYNTAX.test(scope) && !scope.split(' ').includes('openid')) ctx.query = { ...ctx.query, scope: `openid ${scope}` };
}

/**
 * Hand a request to oidc-provider's Koa app. The app sees the path below its mount point, and
 * the issuer's host and scheme, so every URL it builds (discovery, redirects, cookie paths)
 * is the public one even when the request came through the hub's proxy or straight to us.
 */
export function mountedCallback(provider: Provider, issuer: string): (req: IncomingMessage, res: ServerResponse) => void {
  const url = new URL(issuer);
  const mountPath = url.pathname.replace(/\/$/, '');
  provider.proxy = true;
  provider.use(async (ctx, next) => {
    ctx.mountPath = mountPath;
    if (ctx.method === 'GET' && ctx.path === '/auth') withOpenidScope(ctx);
    await next();
    // Nothing in oidc-provider answered (an unknown path, or POST to authorize, which it keeps
    // off): say so in the service's own error format rather than Koa's plain "Not Found".
    if (ctx.status === 404 && ctx.body === undefined) {
      ctx.status = 404;
      ctx.body = { statusCode: 404, error: 'Not Found', code: 'HUBSIDE_AUTH_ERR_NOT_FOUND', message: `${ctx.method} ${mountPath}${ctx.path} is not an endpoint of this OpenID Provider` };
    }
  });
  const handler = provider.callback();
  return (req, res) => {
    const original = req.url ?? '/';
    const rest = original.startsWith(mountPath) ? original.slice(mountPath.length) : original;
    req.url = rest.startsWith('/') ? rest : `/${rest}`;
    req.headers['x-forwarded-host'] = url.host;
    req.headers['x-forwarded-proto'] = url.protocol.slice(0, -1);
    handler(req, res);
  };
}

