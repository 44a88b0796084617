import * as client from 'openid-client';
import type { UpstreamConfig } from './config.js';

export interface UpstreamChecks {
  state: string;
  nonce: string;
  codeVerifier: string;
}

export interface UpstreamResult {
  sub: string;
  claims: Record<string, unknown>;
  extraGroups: string[];
}

/** A refusal the person can act on; `reason` goes to the login log. */
export class UpstreamError extends Error {
  readonly reason: string;
  constructor(message: string, reason: string) {
    super(message);
    this.reason = reason;
  }
}

const TIMEOUT_S = 10;

function getPath(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/**
 * The relying party towards one institution. OIDC providers are found by discovery (cached;
 * a failed discovery is retried on the next login). State, nonce and PKCE S256 are always
 * sent, and `iss` in the response is checked (RFC 9207) whenever the provider can send it.
 */
export class Upstream {
  readonly name: string;
  readonly config: UpstreamConfig;
  readonly callbackUrl: string;
  readonly #secret: string;
  #configuration: Promise<client.Configuration> | undefined;

  constructor(name: string, config: UpstreamConfig, secret: string, callbackUrl: string) {
    this.name = name;
    this.config = config;
    this.#secret = secret;
    this.callbackUrl = callbackUrl;
  }

  configuration(): Promise<client.Configuration> {
    this.#configuration ??= this.#discover().catch((err: unknown) => {
      this.#configuration = undefined;
      throw err;
    });
    return this.#configuration;
  }

  async #discover(): Promise<client.Configuration> {
    const cfg = this.config;
    const insecure = (u: string) => u.startsWith('http:');
    let configuration: client.Configuration;
    if (cfg.type === 'oidc') {
      configuration = await client.discovery(new URL(cfg.issuer), cfg.clientId, undefined, client.ClientSecretPost(this.#secret), {
        execute: insecure(cfg.issuer) ? [client.allowInsecureRequests] : [],
        timeout: TIMEOUT_S,
      });
    } else {
      configuration = new client.Configuration(
        {
          issuer: cfg.issuer ?? new URL(cfg.authorizationUrl).origin,
          authorization_endpoint: cfg.authorizationUrl,
          token_endpoint: cfg.tokenUrl,
          userinfo_endpoint: cfg.userinfoUrl,
        },
        cfg.clientId,
        undefined,
        client.ClientSecretPost(this.#secret),
      );
      if ([cfg.authorizationUrl, cfg.tokenUrl, cfg.userinfoUrl].some(insecure)) client.allowInsecureRequests(configuration);
    }
    configuration.timeout = TIMEOUT_S;
    return configuration;
  }

  async authorizationUrl(checks: UpstreamChecks): Promise<URL> {
    const configuration = await this.configuration();
    return client.buildAuthorizationUrl(configuration, {
      redirect_uri: this.callbackUrl,
      response_type: 'code',
      scope: this.config.scopes.join(' '),
      state: checks.state,
      nonce: checks.nonce,
      code_challenge: await client.calculatePKCECodeChallenge(checks.codeVerifier),
      code_challenge_method: 'S256',
    });
  }

  /** Redeem the code and read who the person is. Throws UpstreamError with a readable message. */
  async finish(currentUrl: URL, checks: UpstreamChecks): Promise<UpstreamResult> {
    const configuration = await this.configuration();
    const cfg = this.config;
    let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
    try {
      tokens = await client.authorizationCodeGrant(configuration, currentUrl, {
        expectedState: checks.state,
        pkceCodeVerifier: checks.codeVerifier,
        ...(cfg.type === 'oidc' ? { expectedNonce: checks.nonce, idTokenExpected: true } : {}),
      });
    } catch (err) {
      throw describe(err, cfg.displayName);
    }
    if (cfg.type === 'oidc') {
      const idClaims = tokens.claims();
      if (!idClaims) throw new UpstreamError(`${cfg.displayName} sent no ID token.`, 'no_id_token');
      let userinfo: Record<string, unknown> = {};
      if (configuration.serverMetadata().userinfo_endpoint) {
        try {
          userinfo = await client.fetchUserInfo(configuration, tokens.access_token, idClaims.sub);
        } catch (err) {
          throw describe(err, cfg.displayName);
        }
      }
      return { sub: idClaims.sub, claims: { ...idClaims, ...userinfo }, extraGroups: [] };
    }
    const info = await this.#getJson(configuration, tokens.access_token, cfg.userinfoUrl);
    const sub = getPath(info, cfg.claims.sub);
    if ((typeof sub !== 'string' && typeof sub !== 'number') || String(sub) === '') {
      throw new UpstreamError(`${cfg.displayName} did not say who you are (no "${cfg.claims.sub}").`, 'no_subject');
    }
    const claims: Record<string, unknown> = { ...(info as Record<string, unknown>) };
    claims.sub = String(sub);
    claims.email = getPath(info, cfg.claims.email);
    claims.name = getPath(info, cfg.claims.name);
    claims.login = getPath(info, cfg.claims.login);
    const extraGroups: string[] = [];
    if (cfg.teamsUrl) {
      const teams = await this.#getJson(configuration, tokens.access_token, cfg.teamsUrl);
      if (Array.isArray(teams)) {
        for (const t of teams) {
          const org = getPath(t, 'organization.login');
          const slug = getPath(t, 'slug');
          if (typeof org === 'string' && typeof slug === 'string') extraGroups.push(`${org}:${slug}`);
        }
      }
    }
    return { sub: String(sub), claims, extraGroups };
  }

  async #getJson(configuration: client.Configuration, accessToken: string, url: string): Promise<unknown> {
    let res: Response;
    try {
      res = await client.fetchProtectedResource(configuration, accessToken, new URL(url), 'GET', undefined, new Headers({ accept: 'application/json' }));
    } catch (err) {
      throw describe(err, this.config.displayName);
    }
    if (!res.ok) throw new UpstreamError(`${this.config.displayName} refused to tell us who you are (HTTP ${res.status}).`, 'userinfo_failed');
    try {
      return await res.json();
    } catch {
      throw new UpstreamError(`${this.config.displayName} answered with something that is not JSON.`, 'userinfo_failed');
    }
  }
}

function describe(err: unknown, idp: string): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (err instanceof client.AuthorizationResponseError) {
    return new UpstreamError(`${idp} did not sign you in: ${err.error_description ?? err.error}.`, `upstream_${err.error}`);
  }
  if (err instanceof client.ResponseBodyError) {
    if (err.error === 'invalid_grant') {
      return new UpstreamError(
        `${idp} no longer accepts this login code: it was already used or has expired. Go back to the hub and log in again.`,
        'invalid_grant',
      );
    }
    return new UpstreamError(`${idp} refused the login: ${err.error_description ?? err.error}.`, `upstream_${err.error}`);
  }
  const cause = (err as { cause?: unknown }).cause;
  const message = `${err instanceof Error ? err.message : String(err)} ${cause instanceof Error ? cause.message : ''}`;
  const code = (err as { code?: string }).code ?? '';
  if (/"iss"/.test(message)) {
    return new UpstreamError(
      `This login response did not come from ${idp} (its "iss" is wrong). It may have been sent to the wrong place; go back to the hub and log in again.`,
      'iss_mismatch',
    );
  }
  if (/state/i.test(message)) return new UpstreamError('This login response does not match the login in progress (state mismatch).', 'state_mismatch');
  return new UpstreamError(`Signing in with ${idp} failed (${code || 'error'}): ${message.trim()}`, 'upstream_error');
}
