import { Script, createContext } from 'node:vm';
import type { Profile, ProfilesDocument } from './schema.js';
import { byteSpecification, unfitSubstitution, unlistedValueProblem } from './kubespawner.js';
import { priceText } from './price.js';
import { slugify, unstorable } from './schema.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

export interface Resources {
  cpu?: { guarantee?: number; limit?: number };
  memory?: { guarantee?: number; limit?: number };
  gpu?: { guarantee?: number; limit?: number };
}

/** Thrown for a selection that cannot be resolved; `status` is 4xx and `field` names the culprit. */
export class SelectionError extends Error {
  readonly status: number;
  readonly field: string;
  constructor(status: number, field: string, message: string) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

export function groupAllowed(allowed: readonly string[] | undefined, userGroups: ReadonlySet<string>): boolean {
  if (allowed === undefined) return true;
  return allowed.some((g) => userGroups.has(g.toLowerCase()));
}

export function lowerGroups(groups: readonly string[]): Set<string> {
  return new Set(groups.map((g) => g.toLowerCase()));
}

/** A memory size as JupyterHub's ByteSpecification (KubeSpawner's mem_* traits) reads it: "2G" is 2 GiB. */
export function parseMemory(value: unknown): number | undefined {
  return byteSpecification(value);
}

function parseCpu(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value === 'string') {
    const m = /^\s*(\d+(?:\.\d+)?)(m?)\s*$/.exec(value);
    if (m) return Number(m[1]) / (m[2] ? 1000 : 1);
  }
  return undefined;
}

function gpuOf(extra: Json | undefined): number | undefined {
  if (!extra || typeof extra !== 'object' || Array.isArray(extra)) return undefined;
  for (const [k, v] of Object.entries(extra)) {
    if (/gpu/i.test(k)) {
      const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : Number.NaN;
      if (Number.isFinite(n)) return n;
    }
  }
  return undefined;
}

/** The CPU, memory and GPU a set of overrides asks for, in cores, bytes and devices. */
export function resourcesOf(override: JsonObject | Record<string, unknown> | undefined): Resources {
  const o = (override ?? {}) as JsonObject;
  const out: Resources = {};
  const pair = (g: number | undefined, l: number | undefined) => {
    const r: { guarantee?: number; limit?: number } = {};
    if (g !== undefined) r.guarantee = g;
    if (l !== undefined) r.limit = l;
    return Object.keys(r).length ? r : undefined;
  };
  const cpu = pair(parseCpu(o.cpu_guarantee), parseCpu(o.cpu_limit));
  const memory = pair(parseMemory(o.mem_guarantee), parseMemory(o.mem_limit));
  const gpu = pair(gpuOf(o.extra_resource_guarantees), gpuOf(o.extra_resource_limits));
  if (cpu) out.cpu = cpu;
  if (memory) out.memory = memory;
  if (gpu) out.gpu = gpu;
  return out;
}

function isObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/*
 * Keys in overrides come from admins, and after `{value}` substitution from any user. They are
 * data, never property names of the engine: every object built from them has no prototype, and
 * every read and write goes through these three, so "__proto__", "constructor" or "toString" is
 * an ordinary key and can't reach Object.prototype.
 */
export function dict<T = Json>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}
function own(obj: JsonObject, key: string): Json | undefined {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}
function put(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
}

/** A deep copy of JSON data into prototype-less objects. */
export function cloneJson(v: Json): Json {
  if (Array.isArray(v)) return v.map(cloneJson);
  if (isObject(v)) {
    const out = dict();
    for (const [k, x] of Object.entries(v)) put(out, k, cloneJson(x));
    return out;
  }
  return v;
}

/** kubespawner.utils.recursive_update: dicts merge, None deletes, anything else replaces. */
function recursiveUpdate(target: JsonObject, update: JsonObject): void {
  for (const [k, v] of Object.entries(update)) {
    if (isObject(v)) {
      if (!isObject(own(target, k))) put(target, k, dict());
      recursiveUpdate(target[k] as JsonObject, v);
    } else if (v === null) {
      if (Object.hasOwn(target, k)) delete target[k];
    } else {
      put(target, k, cloneJson(v));
    }
  }
}

/**
 * KubeSpawner's `_apply_overrides`, onto a plain object standing for the spawner: a dict merges
 * into the current dict (every dict trait starts as `{}`, so we merge into `{}` when absent); any
 * other value replaces, and a top-level null sets the trait to None rather than deleting it.
 */
export function applyOverrides(target: JsonObject, override: JsonObject): void {
  for (const [k, v] of Object.entries(override)) {
    if (isObject(v)) {
      if (!isObject(own(target, k))) put(target, k, dict());
      recursiveUpdate(target[k] as JsonObject, v);
    } else {
      put(target, k, cloneJson(v));
    }
  }
}

/** Python's `str.format_map(IgnoreMissing(value=...))`: `{value}` is replaced, `{{`/`}}` unescape, other fields stay. */
function formatValue(s: string, value: string): string {
  return s.replace(/\{\{|\}\}|\{value\}/g, (m) => (m === '{{' ? '{' : m === '}}' ? '}' : value));
}

/** A key JavaScript would read as the prototype; refused wherever a user's value could make it. */
export const PROTO_KEY = '__proto__';

/** kubespawner.utils.recursive_format: strings, lists and dict keys and values. Throws on a key that would be "__proto__". */
export function recursiveFormat(v: Json, value: string): Json {
  if (typeof v === 'string') return formatValue(v, value);
  if (Array.isArray(v)) return v.map((x) => recursiveFormat(x, value));
  if (isObject(v)) {
    const out = dict();
    for (const [k, x] of Object.entries(v)) {
      const key = formatValue(k, value);
      if (key === PROTO_KEY) throw new RangeError(`makes the override key "${PROTO_KEY}", which is not allowed`);
      put(out, key, recursiveFormat(x, value));
    }
    return out;
  }
  return v;
}

/** KubeSpawner's `_load_profile`: each top-level value of an unlisted override is formatted; top-level keys are not. */
export function formatOverride(template: JsonObject, value: string): JsonObject {
  const out = dict();
  for (const [k, v] of Object.entries(template)) put(out, k, recursiveFormat(v, value));
  return out;
}

/**
 * Regexes come from community admins and values from any user. Two guards against catastrophic
 * backtracking: values longer than `maxLength` are refused before matching, and the match itself
 * runs in a vm context with a time limit, which interrupts V8's backtracking engine.
 */
export class RegexGuard {
  readonly maxLength: number;
  readonly timeoutMs: number;
  readonly #context = createContext({ re: null as RegExp | null, s: '' });
  readonly #script = new Script('re.test(s)');
  readonly #compiled = new Map<string, RegExp>();

  constructor(opts: { maxLength: number; timeoutMs: number }) {
    this.maxLength = opts.maxLength;
    this.timeoutMs = opts.timeoutMs;
  }

  /** Python's `re.match`: anchored at the start only. Returns 'timeout' when the engine was stopped. */
  match(pattern: string, value: string): boolean | 'timeout' {
    let re = this.#compiled.get(pattern);
    if (!re) {
      re = new RegExp(`^(?:${pattern})`, 'u');
      if (this.#compiled.size > 1000) this.#compiled.clear();
      this.#compiled.set(pattern, re);
    }
    this.#context.re = re;
    this.#context.s = value;
    // The limit is wall time: a busy machine can stall an innocent match past it once. A second
    // try tells that apart from a pattern that really backtracks (which then costs two limits).
    for (let attempt = 0; attempt < 2; attempt += 1) {
      try {
        return this.#script.runInContext(this.#context, { timeout: this.timeoutMs }) === true;
      } catch {
        // timed out: try once more
      }
    }
    return 'timeout';
  }
}

/** Profile with slug filled in, as KubeSpawner's `_get_initialized_profile_list` does. */
export type UserProfile = Omit<Profile, 'allowed_groups' | 'profile_options'> & {
  slug: string;
  default: boolean;
  resources: Resources;
  profile_options?: Record<string, unknown>;
};

/**
 * The exact `profile_list` for a user: what their groups may not use is removed, defaults are
 * resolved (a default that was removed moves to the first remaining entry), slugs are filled in,
 * and each profile and choice carries its resources summary. `allowed_groups` is dropped: the
 * filtering is done, and group names of others are none of the user's business.
 */
export function profilesForUser(doc: ProfilesDocument, groups: readonly string[]): UserProfile[] {
  const mine = lowerGroups(groups);
  const out: UserProfile[] = [];
  for (const profile of doc) {
    if (!groupAllowed(profile.allowed_groups, mine)) continue;
    const { allowed_groups: _pg, profile_options, ...rest } = structuredClone(profile);
    let usable = true;
    const options: Record<string, unknown> = dict<unknown>();
    for (const [name, option] of Object.entries(profile_options ?? {})) {
      const choices: Record<string, unknown> = dict<unknown>();
      const kept = Object.entries(option.choices).filter(([, c]) => groupAllowed(c.allowed_groups, mine));
      const hasDefault = kept.some(([, c]) => c.default);
      kept.forEach(([key, c], index) => {
        const { allowed_groups: _cg, ...choice } = c;
        put(choices, key, { ...choice, default: hasDefault ? c.default === true : index === 0, resources: resourcesOf(c.kubespawner_override) });
      });
      const unlisted = option.unlisted_choice;
      const unlistedOk = unlisted?.enabled === true && groupAllowed(unlisted.allowed_groups, mine);
      const unlistedOut: Record<string, unknown> = { enabled: false };
      if (unlisted && unlistedOk) {
        const { allowed_groups: _ug, ...u } = unlisted;
        Object.assign(unlistedOut, u, { enabled: true, display_name_in_choices: u.display_name_in_choices ?? 'Other...' });
      }
      // A profile whose option has nothing left to pick can't be spawned by this user.
      if (kept.length === 0 && !unlistedOk) usable = false;
      put(options, name, { display_name: option.display_name, choices, unlisted_choice: unlistedOut });
    }
    if (!usable) continue;
    const defaults = defaultOverrides(profile, mine);
    out.push({
      ...rest,
      slug: profile.slug ?? slugify(profile.display_name),
      default: profile.default === true,
      ...(profile_options ? { profile_options: options } : {}),
      resources: resourcesOf(defaults),
    });
  }
  if (out.length > 0 && !out.some((p) => p.default)) out[0]!.default = true;
  return out;
}

function defaultOverrides(profile: Profile, mine: ReadonlySet<string>): JsonObject {
  const merged: JsonObject = dict();
  applyOverrides(merged, (profile.kubespawner_override ?? {}) as JsonObject);
  for (const option of Object.values(profile.profile_options ?? {})) {
    const kept = Object.values(option.choices).filter((c) => groupAllowed(c.allowed_groups, mine));
    const choice = kept.find((c) => c.default) ?? kept[0];
    if (choice) applyOverrides(merged, (choice.kubespawner_override ?? {}) as JsonObject);
  }
  return merged;
}

/** The resources a session asks for, as the hub records them (docs/community-model.md); null where the overrides say nothing. */
export interface SessionResources {
  cpuGuarantee: number | null;
  cpuLimit: number | null;
  memGuaranteeGiB: number | null;
  memLimitGiB: number | null;
  gpus: number;
}

export function sessionResources(r: Resources): SessionResources {
  const gib = (b: number | undefined) => (b === undefined ? null : b / 1024 ** 3);
  return {
    cpuGuarantee: r.cpu?.guarantee ?? null,
    cpuLimit: r.cpu?.limit ?? null,
    memGuaranteeGiB: gib(r.memory?.guarantee),
    memLimitGiB: gib(r.memory?.limit),
    gpus: r.gpu?.limit ?? r.gpu?.guarantee ?? 0,
  };
}

export interface Resolution {
  profile: string;
  display_name: string;
  /** The selection, completed with defaults: option name to choice key or unlisted value. */
  selection: Record<string, { choice: string } | { unlisted: string }>;
  /** The same, flat: option name to the choice key or the unlisted value (what the hub records). */
  options: Record<string, string>;
  kubespawner_override: JsonObject;
  resources: SessionResources;
  /** Decimal string from `priceText`, or null when nothing selected has a price. */
  price_per_hour: string | null;
}

const MAX_USER_OPTIONS = 200;

/**
 * Validate `user_options` against the full document and the user's groups, then merge overrides
 * as KubeSpawner's `load_user_options` does: the profile's override, then each option's chosen,
 * unlisted (with `{value}` substituted) or default choice, in the option order.
 */
export function resolveSelection(doc: ProfilesDocument, groups: readonly string[], userOptions: unknown, guard: RegexGuard): Resolution {
  if (userOptions === null || typeof userOptions !== 'object' || Array.isArray(userOptions)) {
    throw new SelectionError(400, 'user_options', 'user_options must be a JSON object');
  }
  const opts = userOptions as Record<string, unknown>;
  if (Object.keys(opts).length > MAX_USER_OPTIONS) throw new SelectionError(400, 'user_options', `has more than ${MAX_USER_OPTIONS} keys`);
  const mine = lowerGroups(groups);
  const rawSlug = opts.profile;
  if (rawSlug !== undefined && rawSlug !== null && rawSlug !== '' && typeof rawSlug !== 'string') {
    throw new SelectionError(400, 'profile', 'profile must be a string');
  }
  let profile: Profile | undefined;
  const slugOf = (p: Profile) => p.slug ?? slugify(p.display_name);
  if (rawSlug) {
    profile = doc.find((p) => slugOf(p) === rawSlug);
    if (!profile) throw new SelectionError(404, 'profile', `no such profile: "${rawSlug.slice(0, 100)}"`);
    if (!groupAllowed(profile.allowed_groups, mine)) {
      throw new SelectionError(403, 'profile', `profile "${rawSlug}" is not available to your groups`);
    }
  } else {
    // No profile given: KubeSpawner uses the default of the list this user sees.
    const visible = profilesForUser(doc, groups);
    const slug = (visible.find((p) => p.default) ?? visible[0])?.slug;
    profile = doc.find((p) => slugOf(p) === slug);
    if (!profile) throw new SelectionError(403, 'profile', 'no profile is available to your groups');
  }
  const slug = slugOf(profile);
  const merged: JsonObject = dict();
  applyOverrides(merged, (profile.kubespawner_override ?? {}) as JsonObject);
  const prices: Array<number | undefined> = [profile.price_per_hour];
  const selection: Resolution['selection'] = dict() as Resolution['selection'];
  for (const [name, option] of Object.entries(profile.profile_options ?? {})) {
    const unlistedKey = `${name}--unlisted-choice`;
    const unlisted = Object.hasOwn(opts, unlistedKey) ? opts[unlistedKey] : undefined;
    const choice = Object.hasOwn(opts, name) ? opts[name] : undefined;
    let override: JsonObject;
    // Python truthiness: an empty string means "not given", as in KubeSpawner.
    if (unlisted !== undefined && unlisted !== null && unlisted !== '') {
      if (typeof unlisted !== 'string') throw new SelectionError(400, unlistedKey, `${unlistedKey} must be a string`);
      const u = option.unlisted_choice;
      if (!u?.enabled) throw new SelectionError(400, unlistedKey, `option "${name}" accepts no unlisted choice`);
      if (!groupAllowed(u.allowed_groups, mine)) throw new SelectionError(403, unlistedKey, `an unlisted choice for "${name}" is not available to your groups`);
      if (unlisted.length > guard.maxLength) {
        throw new SelectionError(400, unlistedKey, `${unlistedKey} is longer than ${guard.maxLength} characters`);
      }
      const why = unstorable(unlisted) ?? unlistedValueProblem(unlisted);
      if (why) throw new SelectionError(400, unlistedKey, `${unlistedKey} ${why}`);
      if (u.validation_regex !== undefined && u.validation_regex !== '') {
        const ok = guard.match(u.validation_regex, unlisted);
        if (ok === 'timeout') throw new SelectionError(422, unlistedKey, `${unlistedKey} took too long to check against the validation pattern`);
        if (!ok) throw new SelectionError(422, unlistedKey, u.validation_message ?? `${unlistedKey} does not match ${u.validation_regex}`);
      }
      const template = (u.kubespawner_override ?? {}) as JsonObject;
      try {
        override = formatOverride(template, unlisted);
      } catch (err) {
        throw new SelectionError(422, unlistedKey, `${unlistedKey} ${(err as Error).message}`);
      }
      const unfit = unfitSubstitution(template, override);
      if (unfit) throw new SelectionError(422, unlistedKey, u.validation_message ?? `${unlistedKey} does not make a valid ${unfit}`);
      put(selection, name, { unlisted });
    } else if (choice !== undefined && choice !== null && choice !== '') {
      if (typeof choice !== 'string') throw new SelectionError(400, name, `${name} must be a string`);
      const c = Object.hasOwn(option.choices, choice) ? option.choices[choice] : undefined;
      if (!c) throw new SelectionError(404, name, `no such choice for ${name}: "${choice.slice(0, 100)}"`);
      if (!groupAllowed(c.allowed_groups, mine)) throw new SelectionError(403, name, `choice "${choice}" of ${name} is not available to your groups`);
      override = (c.kubespawner_override ?? {}) as JsonObject;
      prices.push(c.price_per_hour);
      put(selection, name, { choice });
    } else {
      const kept = Object.entries(option.choices).filter(([, c]) => groupAllowed(c.allowed_groups, mine));
      const picked = kept.find(([, c]) => c.default) ?? kept[0];
      if (!picked) throw new SelectionError(400, name, `${name} has no default choice: pick one or give ${unlistedKey}`);
      override = (picked[1].kubespawner_override ?? {}) as JsonObject;
      prices.push(picked[1].price_per_hour);
      put(selection, name, { choice: picked[0] });
    }
    applyOverrides(merged, override);
  }
  const options = dict<string>();
  for (const [name, sel] of Object.entries(selection)) put(options, name, 'choice' in sel ? sel.choice : sel.unlisted);
  return {
    profile: slug,
    display_name: profile.display_name,
    selection,
    options,
    kubespawner_override: merged,
    resources: sessionResources(resourcesOf(merged)),
    price_per_hour: priceText(prices),
  };
}
