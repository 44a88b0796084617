/**
 * JupyterHub scope matching, following the semantics of jupyterhub.scopes:
 * a scope is `base` or `base!kind=value`, where kind is `user`, `server`,
 * `group` or `service`. The hub hands services already-expanded scopes
 * (`GET /user` returns them), so role expansion is not repeated here.
 */

export interface ParsedScope {
  readonly base: string;
  readonly filter?: { readonly kind: string; readonly value: string };
}

export function parseScope(scope: string): ParsedScope {
  const bang = scope.indexOf('!');
  if (bang === -1) return { base: scope };
  const base = scope.slice(0, bang);
  const filter = scope.slice(bang + 1);
  const eq = filter.indexOf('=');
  if (eq === -1) {
    // `!user` without a value is a role template, not a concrete scope; it never matches.
    return { base, filter: { kind: filter, value: '' } };
  }
  return { base, filter: { kind: filter.slice(0, eq), value: filter.slice(eq + 1) } };
}

export interface ScopeContext {
  /**
   * Group membership of a user, so that a held `!group=g` filter can satisfy a required
   * `!user=u` or `!server=u/...`. JupyterHub's own service-side check cannot resolve this;
   * we can when the caller's groups are known.
   */
  groupsOfUser?: (user: string) => readonly string[] | undefined;
}

function heldFilterCovers(
  held: NonNullable<ParsedScope['filter']>,
  required: NonNullable<ParsedScope['filter']>,
  ctx: ScopeContext,
): boolean {
  if (held.value === '') return false;
  if (held.kind === required.kind) return held.value === required.value;
  // The user a required filter is about, if any: `!user=u`, or the owner in `!server=u/name`.
  let user: string | undefined;
  if (required.kind === 'user') user = required.value;
  else if (required.kind === 'server') {
    const slash = required.value.indexOf('/');
    user = slash === -1 ? required.value : required.value.slice(0, slash);
    if (held.kind === 'user') return held.value === user;
  }
  if (user !== undefined && held.kind === 'group') {
    return ctx.groupsOfUser?.(user)?.includes(held.value) ?? false;
  }
  return false;
}

/** Whether the held scopes grant `required` (one scope, possibly filtered). */
export function scopeSatisfied(held: Iterable<string>, required: string, ctx: ScopeContext = {}): boolean {
  const want = parseScope(required);
  for (const scope of held) {
    const have = parseScope(scope);
    if (have.base !== want.base) continue;
    if (have.filter === undefined) return true;
    if (want.filter === undefined) continue; // a filtered grant never satisfies an unfiltered need
    if (heldFilterCovers(have.filter, want.filter, ctx)) return true;
  }
  return false;
}

/** Like JupyterHub's HubAuth.check_scopes: true when any one of `required` is granted. */
export function anyScopeSatisfied(held: Iterable<string>, required: Iterable<string>, ctx: ScopeContext = {}): boolean {
  const heldList = [...held];
  for (const r of required) if (scopeSatisfied(heldList, r, ctx)) return true;
  return false;
}

/** The default access scopes of a service, exactly as JupyterHub's HubAuth derives them. */
export function defaultAccessScopes(env: NodeJS.ProcessEnv, serviceName?: string): string[] {
  const raw = env.JUPYTERHUB_OAUTH_ACCESS_SCOPES ?? env.JUPYTERHUB_OAUTH_SCOPES;
  if (raw) {
    const parsed: unknown = JSON.parse(raw);
    if (!Array.isArray(parsed) || !parsed.every((s) => typeof s === 'string')) {
      throw new TypeError('JUPYTERHUB_OAUTH_ACCESS_SCOPES must be a JSON list of strings');
    }
    return parsed;
  }
  const name = env.JUPYTERHUB_SERVICE_NAME ?? serviceName;
  return name ? [`access:services!service=${name}`] : [];
}
