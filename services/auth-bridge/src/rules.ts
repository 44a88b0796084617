import type { HubConfig, UpstreamConfig } from './config.js';
import { domainMatches } from './config.js';
import type { HubIdentity } from './accounts.js';
import { LONE_SURROGATE, hubName } from './text.js';

export type RuleOutcome =
  | { ok: true; identity: HubIdentity }
  | { ok: false; title: string; message: string; reason: string };

export interface RuleInput {
  hubName: string;
  hub: HubConfig;
  idpName: string;
  idp: UpstreamConfig;
  /** Claims from the upstream (ID token + userinfo, or mapped OAuth2 userinfo). */
  claims: Record<string, unknown>;
  /** Groups the upstream reported outside claims (GitHub teams as `org:team`). */
  extraGroups?: string[];
  /** An event access code admits its holder whatever the hub's allow lists say. */
  accessCode?: { group: string } | undefined;
}

const refuse = (title: string, message: string, reason: string): RuleOutcome => ({ ok: false, title, message, reason });

function stringsOf(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string');
  return [];
}

// JupyterHub takes almost any name, but not these: a "/" breaks its URLs, controls break logs.
const BAD_USERNAME = /[/\\\p{Cc}\s]/u;

/** Free text from an institution that we store (name, email): what the database can hold, or nothing. */
const storableText = (v: string | null): string | null => (v !== null && v.length <= 1000 && !v.includes('\0') && !LONE_SURROGATE.test(v) ? v : null);

/** Apply one hub's rules to one upstream login: the hub username and groups, or why not. */
export function applyRules(input: RuleInput): RuleOutcome {
  const { hub, idp, claims, idpName } = input;
  const rule = idp.username;
  const raw = claims[rule.claim];
  if (typeof raw !== 'string' || raw.trim() === '') {
    return refuse('Login refused', `${idp.displayName} did not tell us your "${rule.claim}", which this hub needs as your username.`, 'missing_username_claim');
  }
  const email = typeof claims.email === 'string' ? claims.email.toLowerCase() : raw.includes('@') ? raw.toLowerCase() : null;
  const domain = email && email.includes('@') ? email.slice(email.lastIndexOf('@') + 1) : null;

  if (idp.domains.length > 0 && !(domain && idp.domains.some((p) => domainMatches(p, domain)))) {
    return refuse(
      'Your domain is not allowed',
      `${idp.displayName} may only sign in addresses at ${idp.domains.join(', ')}${domain ? `, not ${domain}` : ''}.`,
      'idp_domain',
    );
  }
  if (!input.accessCode && hub.allowedDomains.length > 0 && !(domain && hub.allowedDomains.some((p) => domainMatches(p, domain)))) {
    return refuse(
      'Your domain is not allowed on this hub',
      `This hub admits addresses at ${hub.allowedDomains.join(', ')}${domain ? `; yours is at ${domain}` : ', and your institution sent no email address'}.`,
      'hub_domain',
    );
  }

  let value = raw.trim().toLowerCase();
  if (rule.stripDomain) {
    if (value.includes('@')) value = value.slice(0, value.lastIndexOf('@'));
    // The collision check relies on stripped names never holding "@".
    if (value.includes('@')) return refuse('Login refused', `Your "${rule.claim}" holds more than one "@".`, 'bad_username');
  }
  const username = `${rule.prefix}${value}`;
  if (value === '' || username.length > 255 || BAD_USERNAME.test(username) || LONE_SURROGATE.test(username)) {
    return refuse('Login refused', `The username derived from your "${rule.claim}" is not one a hub can use.`, 'bad_username');
  }

  const upstreamGroups = [...idp.groupClaims.flatMap((c) => stringsOf(claims[c])), ...(input.extraGroups ?? [])];
  const groups = new Set<string>();
  for (const g of upstreamGroups) {
    const mapped = hub.groupMap[`${idpName}:${g}`] ?? hub.groupMap[g] ?? (hub.keepUnmappedGroups ? g : undefined);
    // An upstream value that can't be a hub group name (a NUL, a lone surrogate, 300 characters) is ignored.
    if (mapped && hubName.safeParse(mapped).success) groups.add(mapped);
  }
  // A code's group is not part of the account: it lives as a membership that ends when the code
  // is revoked or expires (see loadClaims), and neither it nor admin status is stored here.

  if (!input.accessCode && (hub.allowedUsers.length > 0 || hub.allowedGroups.length > 0)) {
    const allowed = hub.allowedUsers.includes(username) || hub.allowedGroups.some((g) => groups.has(g));
    if (!allowed) {
      return refuse('You are not a member of this hub', `Your account (${username}) is not on this hub's list of users or groups.`, 'not_allowed');
    }
  }
  const admin = hub.adminUsers.includes(username) || hub.adminGroups.some((g) => groups.has(g));
  const name = typeof claims.name === 'string' ? claims.name : null;
  return { ok: true, identity: { username, email: storableText(email), name: storableText(name), groups: [...groups].sort(), admin } };
}
