import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { LIMITS, dbText, hubName } from './text.js';

// Names end up in URL paths (`callback/<idp>`) and HTML, so keep them to a safe alphabet.
const slug = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'must be 1-63 characters of a-z, 0-9, "-" and "_"');

/** A domain (`uni-a.edu`) or a wildcard for its subdomains (`*.uni-a.edu`). */
const domainPattern = z
  .string()
  .transform((v) => v.toLowerCase())
  .pipe(z.string().regex(/^(\*\.)?([a-z0-9-]+\.)*[a-z0-9-]+$/, 'must be a domain like uni.edu or *.uni.edu'));

const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' });

/** A secret given inline, from an environment variable, or from a file (e.g. a Kubernetes secret). */
const secretFields = {
  clientSecret: z.string().min(1).optional(),
  clientSecretEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name').optional(),
  clientSecretFile: z.string().min(1).optional(),
};

const usernameRule = z
  .object({
    /** The upstream claim the username comes from. */
    claim: z.string().min(1).default('email'),
    /** `alice@uni.edu` → `alice`. */
    stripDomain: z.boolean().default(false),
    /** Prepended after stripping, e.g. `uni-b-`. */
    prefix: z.string().regex(/^[a-z0-9._-]*$/, 'must be lower-case letters, digits, ".", "_" or "-"').default(''),
  })
  .strict();

const upstreamBase = {
  displayName: dbText(200),
  clientId: z.string().min(1),
  ...secretFields,
  scopes: z.array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/)).default(['openid', 'email', 'profile']),
  username: usernameRule.prefault({}),
  /**
   * Domains this IdP speaks for. A user whose email is elsewhere is refused, so an IdP cannot
   * assert another institution's addresses. Empty: any domain.
   */
  domains: z.array(domainPattern).max(LIMITS.ruleEntries).default([]),
  /** Claims whose values become upstream groups (`groups`, `eduPersonAffiliation`, ...). */
  groupClaims: z.array(dbText(200)).max(100).default(['groups']),
  /** Extra words for the chooser's search (city, acronym). */
  keywords: z.array(dbText(200)).max(100).default([]),
};

const oidcUpstream = z
  .object({
    type: z.literal('oidc').default('oidc'),
    /** The issuer; its `/.well-known/openid-configuration` is fetched. */
    issuer: httpUrl,
    ...upstreamBase,
  })
  .strict();

const oauth2Upstream = z
  .object({
    type: z.literal('oauth2'),
    /** Used for RFC 9207 `iss` checks when the provider sends one. */
    issuer: httpUrl.optional(),
    authorizationUrl: httpUrl,
    tokenUrl: httpUrl,
    userinfoUrl: httpUrl,
    /** GitHub-style `GET /user/teams`: each `{slug, organization: {login}}` becomes the group `org:slug`. */
    teamsUrl: httpUrl.optional(),
    /** Where each standard field is found in the userinfo JSON. */
    claims: z
      .object({
        sub: z.string().default('id'),
        email: z.string().default('email'),
        name: z.string().default('name'),
        login: z.string().default('login'),
      })
      .strict()
      .prefault({}),
    ...upstreamBase,
    scopes: z.array(z.string()).default([]),
  })
  .strict();

// `type` may be left out for OIDC, the common case.
const upstream = z.union([oauth2Upstream, oidcUpstream]);

const hubClient = z
  .object({
    displayName: dbText(200).optional(),
    clientId: dbText(200),
    ...secretFields,
    /** Exact redirect URIs; nothing else is accepted. */
    redirectUris: z.array(httpUrl).min(1, 'needs at least one redirect URI'),
    postLogoutRedirectUris: z.array(httpUrl).default([]),
    /** Where the hub starts a login (its `/hub/oauth_login`); event access code links land there. */
    loginUrl: httpUrl.optional(),
    /** Refuse authorization requests without PKCE S256. */
    requirePkce: z.boolean().default(false),
    /** IdPs on this hub's chooser, in order. Empty: every IdP. */
    idps: z.array(slug).max(LIMITS.ruleEntries).default([]),
    allowedDomains: z.array(domainPattern).max(LIMITS.ruleEntries).default([]),
    allowedUsers: z.array(hubName).max(LIMITS.ruleEntries).default([]),
    /** Hub groups (after mapping) whose members may log in. */
    allowedGroups: z.array(hubName).max(LIMITS.ruleEntries).default([]),
    adminUsers: z.array(hubName).max(LIMITS.ruleEntries).default([]),
    adminGroups: z.array(hubName).max(LIMITS.ruleEntries).default([]),
    /** Upstream group value → hub group. `idp:value` keys apply to one IdP only. */
    groupMap: z
      .record(hubName, hubName)
      .refine((m) => Object.keys(m).length <= LIMITS.ruleEntries, `must map at most ${LIMITS.ruleEntries} groups`)
      .default({}),
    /** Pass upstream groups that have no mapping through unchanged. */
    keepUnmappedGroups: z.boolean().default(false),
    /**
     * Pairs of IdPs that may yield the same username on purpose (the same people at both).
     * Any other pair that could collide is refused at startup.
     */
    sharedUsernames: z.array(z.tuple([slug, slug])).default([]),
  })
  .strict();

export const configSchema = z
  .object({
    /**
     * Where browsers reach this service's prefix, without the prefix: normally the hub's public
     * URL (`https://hub.example.org`). The issuer is `{publicUrl}{prefix}oidc`.
     */
    publicUrl: httpUrl.optional(),
    upstreams: z.record(slug, upstream).default({}),
    hubs: z.record(slug, hubClient).default({}),
    /**
     * Lifetimes, in seconds, of everything oidc-provider stores. Each is set explicitly (none of
     * oidc-provider's defaults is used), and each row is stored with its expiry, so the cleanup
     * deletes it when it runs out.
     */
    ttl: z
      .object({
        /** What a hub's authenticator gets to call userinfo with; JupyterHub refreshes before it runs out. */
        accessToken: z.number().int().positive().default(3600),
        /** RFC 6749 advises at most 10 minutes; the hub redeems it at once. */
        authorizationCode: z.number().int().positive().max(600).default(60),
        idToken: z.number().int().positive().default(3600),
        /**
         * A login in progress: from the hub's redirect, through the chooser and the institution's
         * own login page, back to the hub. The pending upstream login (state, nonce, PKCE) lives as long.
         */
        interaction: z.number().int().positive().min(60).max(86_400).default(1800),
        /** How long a hub can keep refreshing a user without sending them back through a login. */
        refreshToken: z.number().int().positive().default(14 * 24 * 3600),
        /** The bridge's browser session (single sign-on across a hub's logins). */
        session: z.number().int().positive().default(14 * 24 * 3600),
        /** The grant behind a hub's tokens; refresh tokens cannot outlive it. Default: refreshToken. */
        grant: z.number().int().positive().optional(),
        /**
         * How long what an institution said at login (groups, email, name; so admin and hub
         * groups) is trusted. Past it, userinfo and refresh refuse, and the next authorization
         * sends the person back to their institution, even with a live bridge session. Default:
         * refreshToken (a hub refreshes on the login's word for that long).
         */
        upstreamClaims: z.number().int().positive().optional(),
      })
      .strict()
      .prefault({})
      .transform((ttl) => ({ ...ttl, grant: ttl.grant ?? ttl.refreshToken, upstreamClaims: ttl.upstreamClaims ?? ttl.refreshToken }))
      .refine((ttl) => ttl.grant >= ttl.refreshToken, { message: 'grant must be at least refreshToken: refresh tokens end with their grant', path: ['grant'] }),
    /** Rotate signing keys after this many days (0: only by the admin API). */
    keyRotationDays: z.number().int().min(0).default(90),
    /** How often expired rows (tokens, sessions, pending logins, code memberships) are deleted. */
    cleanupIntervalSeconds: z.number().int().min(1).max(86_400).default(600),
    /** Entries of the login log (admin API `logins`) are kept this many days. */
    loginLogDays: z.number().int().min(1).default(90),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const seenClientIds = new Map<string, string>();
    for (const [hubName, hub] of Object.entries(cfg.hubs)) {
      const other = seenClientIds.get(hub.clientId);
      if (other) ctx.addIssue({ code: 'custom', path: ['hubs', hubName, 'clientId'], message: `is also the client id of hub "${other}"` });
      seenClientIds.set(hub.clientId, hubName);
      for (const idp of hub.idps) {
        if (!cfg.upstreams[idp]) ctx.addIssue({ code: 'custom', path: ['hubs', hubName, 'idps'], message: `names "${idp}", which is not in upstreams` });
      }
      for (const problem of usernameCollisions(cfg.upstreams, hub)) {
        ctx.addIssue({ code: 'custom', path: ['hubs', hubName, 'idps'], message: problem });
      }
    }
  });

export type AuthBridgeConfig = z.output<typeof configSchema>;
export type UpstreamConfig = AuthBridgeConfig['upstreams'][string];
export type HubConfig = AuthBridgeConfig['hubs'][string];

/** The IdPs a hub offers: its own list, or all of them. */
export function hubIdps(upstreams: Record<string, UpstreamConfig>, hub: HubConfig): string[] {
  return hub.idps.length > 0 ? hub.idps : Object.keys(upstreams);
}

/** Does a domain pattern match a concrete domain? `*.x.edu` matches `a.x.edu`, not `x.edu`. */
export function domainMatches(pattern: string, domain: string): boolean {
  const d = domain.toLowerCase();
  if (pattern.startsWith('*.')) return d.endsWith(pattern.slice(1)) && d.length > pattern.length - 1;
  return d === pattern;
}

function patternsOverlap(a: string, b: string): boolean {
  const base = (p: string) => (p.startsWith('*.') ? p.slice(2) : p);
  // Two patterns overlap when some domain matches both: equal, or one covers the other's domain.
  if (a === b) return true;
  if (a.startsWith('*.') && (domainMatches(a, base(b)) || (b.startsWith('*.') && domainMatches(a, `x.${base(b)}`)))) return true;
  if (b.startsWith('*.') && (domainMatches(b, base(a)) || (a.startsWith('*.') && domainMatches(b, `x.${base(a)}`)))) return true;
  return false;
}

/**
 * Explain every pair of a hub's IdPs that could produce the same username. Usernames are
 * `prefix + value`; two IdPs are apart when neither prefix starts the other, or when both keep
 * the full address and speak for disjoint domains. Anything else lets one IdP's user take
 * another's account, so it must be allowed explicitly with `sharedUsernames`.
 */
export function usernameCollisions(upstreams: Record<string, UpstreamConfig>, hub: HubConfig): string[] {
  const idps = hubIdps(upstreams, hub).filter((n) => upstreams[n]);
  const shared = new Set(hub.sharedUsernames.flatMap(([a, b]) => [`${a}\0${b}`, `${b}\0${a}`]));
  const problems: string[] = [];
  for (let i = 0; i < idps.length; i += 1) {
    for (let j = i + 1; j < idps.length; j += 1) {
      const [na, nb] = [idps[i]!, idps[j]!];
      if (shared.has(`${na}\0${nb}`)) continue;
      const [a, b] = [upstreams[na]!.username, upstreams[nb]!.username];
      if (!a.prefix.startsWith(b.prefix) && !b.prefix.startsWith(a.prefix)) continue;
      const keepsDomain = (u: UpstreamConfig) => !u.username.stripDomain && u.username.claim === 'email';
      const da = upstreams[na]!.domains;
      const db = upstreams[nb]!.domains;
      // A stripped name never holds "@" (rules refuse one that would); a kept address always does.
      const withAt = (u: UpstreamConfig, d: string[]) => keepsDomain(u) && d.length > 0;
      if ((withAt(upstreams[na]!, da) && b.stripDomain) || (withAt(upstreams[nb]!, db) && a.stripDomain)) continue;
      if (keepsDomain(upstreams[na]!) && keepsDomain(upstreams[nb]!) && da.length > 0 && db.length > 0) {
        if (!da.some((x) => db.some((y) => patternsOverlap(x, y)))) continue;
      }
      problems.push(
        `IdPs "${na}" and "${nb}" could both yield the same username (prefixes ${JSON.stringify(a.prefix)} and ${JSON.stringify(b.prefix)}), ` +
          `so a user of one could log in as a user of the other: give them prefixes where neither starts the other, ` +
          `keep full email addresses with disjoint "domains", or list the pair in sharedUsernames if they are the same people`,
      );
    }
  }
  return problems;
}

/** Read a client secret from the config, the environment, or a file; names the field when missing. */
export function resolveSecret(
  where: string,
  entry: { clientSecret?: string | undefined; clientSecretEnv?: string | undefined; clientSecretFile?: string | undefined },
  env: NodeJS.ProcessEnv,
): string {
  if (entry.clientSecret) return entry.clientSecret;
  if (entry.clientSecretEnv) {
    const value = env[entry.clientSecretEnv];
    if (!value) throw new Error(`${where}.clientSecretEnv: the environment variable ${entry.clientSecretEnv} is not set`);
    return value;
  }
  if (entry.clientSecretFile) {
    try {
      const value = readFileSync(entry.clientSecretFile, 'utf8').trim();
      if (value) return value;
    } catch (err) {
      throw new Error(`${where}.clientSecretFile: cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    throw new Error(`${where}.clientSecretFile: the file is empty`);
  }
  throw new Error(`${where}: needs clientSecret, clientSecretEnv or clientSecretFile`);
}
