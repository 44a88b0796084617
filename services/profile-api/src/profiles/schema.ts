import { z } from 'zod';
import { formatProblem, regexProblem, traitProblems } from './kubespawner.js';

/**
 * The profiles document: KubeSpawner's `profile_list` schema, strict (an unknown field is a
 * mistake, not an extension), plus our additions: `allowed_groups`, a description per choice,
 * and `price_per_hour`. The resources summary is derived, never written.
 */

/*
 * Limits on everything a person can save (the community file and the API read the same schema).
 * They bound the work one document can cause on every list read and resolve, and they keep out
 * what PostgreSQL can't store (NUL in text/jsonb) or Python can't read back (lone surrogates).
 */
export const LIMITS = {
  profiles: 200,
  optionsPerProfile: 50,
  choicesPerOption: 200,
  choicesInDocument: 5000,
  groupsPerList: 200,
  groupName: 255,
  /** Depth, keys+values, array length, key and string length of one kubespawner_override. */
  overrideDepth: 16,
  overrideNodes: 2000,
  overrideArray: 500,
  overrideKey: 253,
  overrideString: 8192,
  /** The whole document as JSON, in bytes. */
  documentBytes: 1_000_000,
  price: 1_000_000,
  /** Prices are money: at most this many decimal places, so sums are exact. */
  priceDecimals: 6,
} as const;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Why a string can't be stored, or undefined. */
export function unstorable(s: string): string | undefined {
  if (s.includes('\u0000')) return 'must not contain NUL characters';
  if (LONE_SURROGATE.test(s)) return 'must be valid Unicode (no lone surrogates)';
  return undefined;
}

/** A string an admin writes: bounded, and storable. */
export const safeString = (max: number) =>
  z
    .string()
    .max(max, `must be at most ${max} characters`)
    .superRefine((v, ctx) => {
      const why = unstorable(v);
      if (why) ctx.addIssue({ code: 'custom', message: why });
    });

/** Walks an override once: JSON types only, every bound above, and no "__proto__" key. */
function checkOverride(value: unknown, ctx: z.RefinementCtx): void {
  let nodes = 0;
  const issue = (path: PropertyKey[], message: string) => ctx.addIssue({ code: 'custom', path, message });
  const walk = (v: unknown, path: PropertyKey[], depth: number): boolean => {
    nodes += 1;
    if (nodes > LIMITS.overrideNodes) {
      issue([], `has more than ${LIMITS.overrideNodes} keys and values`);
      return false;
    }
    if (depth > LIMITS.overrideDepth) {
      issue(path, `is nested more than ${LIMITS.overrideDepth} levels deep`);
      return false;
    }
    if (v === null || typeof v === 'boolean') return true;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) issue(path, 'must be a finite number');
      return true;
    }
    if (typeof v === 'string') {
      if (v.length > LIMITS.overrideString) issue(path, `must be at most ${LIMITS.overrideString} characters`);
      const why = unstorable(v);
      if (why) issue(path, why);
      return true;
    }
    if (Array.isArray(v)) {
      if (v.length > LIMITS.overrideArray) {
        issue(path, `must have at most ${LIMITS.overrideArray} items`);
        return false;
      }
      return v.every((x, i) => walk(x, [...path, i], depth + 1));
    }
    if (typeof v === 'object' && Object.getPrototypeOf(v) !== null && Object.getPrototypeOf(v) !== Object.prototype) {
      issue(path, 'must be JSON');
      return true;
    }
    if (typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === '__proto__') issue([...path, k], 'the key "__proto__" is not allowed');
        if (k.length > LIMITS.overrideKey) issue(path, `has a key longer than ${LIMITS.overrideKey} characters`);
        const why = unstorable(k);
        if (why) issue(path, `a key ${why}`);
        if (!walk(x, [...path, k], depth + 1)) return false;
      }
      return true;
    }
    issue(path, 'must be JSON');
    return true;
  };
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    issue([], 'must be an object');
    return;
  }
  walk(value, [], 0);
}

export const overrideSchema = z
  .unknown()
  .superRefine(checkOverride)
  .transform((v) => v as Record<string, z.core.util.JSONType>);

/** Keys of a map an admin names (options, choices): bounded, storable, never "__proto__". */
const mapKey = (max: number) => safeString(max).min(1).refine((k) => k !== '__proto__', 'the key "__proto__" is not allowed');

/** A map with a bound on its size; zod would silently drop a "__proto__" key, so it is refused first. */
function boundedRecord<T extends z.ZodType>(key: z.ZodType<string>, value: T, max: number, what: string) {
  return z
    .unknown()
    .superRefine((v, ctx) => {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return;
      const keys = Object.keys(v);
      if (keys.length > max) ctx.addIssue({ code: 'custom', message: `must have at most ${max} ${what}` });
      if (keys.includes('__proto__')) ctx.addIssue({ code: 'custom', path: ['__proto__'], message: 'the key "__proto__" is not allowed' });
      for (const k of keys) {
        const why = unstorable(k);
        if (why) ctx.addIssue({ code: 'custom', path: [k], message: `the key ${why}` });
      }
    })
    .pipe(z.record(key, value));
}

const groupName = z
  .string()
  .min(1)
  .max(LIMITS.groupName, `must be at most ${LIMITS.groupName} characters`)
  .superRefine((v, ctx) => {
    const why = unstorable(v);
    if (why) ctx.addIssue({ code: 'custom', message: why });
  });
const groups = z.array(groupName).max(LIMITS.groupsPerList, `must list at most ${LIMITS.groupsPerList} groups`);
const price = z
  .number()
  .nonnegative()
  .max(LIMITS.price)
  .refine((p) => Number((Math.round(p * 10 ** LIMITS.priceDecimals) / 10 ** LIMITS.priceDecimals).toFixed(LIMITS.priceDecimals)) === p, {
    message: `must have at most ${LIMITS.priceDecimals} decimal places`,
  });
const text = safeString;

export const unlistedChoiceSchema = z.strictObject({
  enabled: z.boolean().default(false),
  display_name: text(200).optional(),
  display_name_in_choices: text(200).optional(),
  validation_regex: text(500).optional(),
  validation_message: text(500).optional(),
  kubespawner_override: overrideSchema.optional(),
  allowed_groups: groups.optional(),
});

export const choiceSchema = z.strictObject({
  display_name: text(200),
  description: text(2000).optional(),
  default: z.boolean().optional(),
  kubespawner_override: overrideSchema.optional(),
  allowed_groups: groups.optional(),
  price_per_hour: price.optional(),
});

export const optionSchema = z.strictObject({
  display_name: text(200),
  choices: boundedRecord(mapKey(100), choiceSchema, LIMITS.choicesPerOption, 'choices').default({}),
  unlisted_choice: unlistedChoiceSchema.optional(),
});

export const profileSchema = z.strictObject({
  display_name: text(200),
  slug: mapKey(100).optional(),
  description: text(2000).optional(),
  default: z.boolean().optional(),
  kubespawner_override: overrideSchema.optional(),
  profile_options: boundedRecord(mapKey(100), optionSchema, LIMITS.optionsPerProfile, 'options').optional(),
  allowed_groups: groups.optional(),
  price_per_hour: price.optional(),
});

export const documentSchema = z.array(profileSchema).max(LIMITS.profiles, `must have at most ${LIMITS.profiles} profiles`);
export type Profile = z.output<typeof profileSchema>;
export type ProfileOption = z.output<typeof optionSchema>;
export type ProfileChoice = z.output<typeof choiceSchema>;
export type ProfilesDocument = z.output<typeof documentSchema>;

export interface Problem {
  path: string;
  message: string;
}

/** KubeSpawner fills a missing slug from display_name with python-slugify; this is its ASCII core. */
export function slugify(name: string): string {
  return name
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
}

export function pathOf(parts: readonly PropertyKey[]): string {
  let out = '';
  for (const p of parts) out += typeof p === 'number' ? `[${p}]` : `${out ? '.' : ''}${String(p)}`;
  return out || '(document)';
}

const OPTION_NAME = /^[A-Za-z0-9_.-]+$/;

/**
 * Checks what a schema can't: unique slugs, exactly one default, compilable regexes, names that
 * can't collide with KubeSpawner's `user_options` keys. Returns every problem, not the first.
 */
export function semanticProblems(doc: ProfilesDocument): Problem[] {
  const problems: Problem[] = [];
  const seen = new Map<string, number>();
  let defaults = 0;
  const bytes = Buffer.byteLength(JSON.stringify(doc));
  if (bytes > LIMITS.documentBytes) problems.push({ path: '(document)', message: `is ${bytes} bytes as JSON; at most ${LIMITS.documentBytes}` });
  const choices = doc.reduce((n, p) => n + Object.values(p.profile_options ?? {}).reduce((m, o) => m + Object.keys(o.choices).length, 0), 0);
  if (choices > LIMITS.choicesInDocument) problems.push({ path: '(document)', message: `has ${choices} choices; at most ${LIMITS.choicesInDocument}` });
  doc.forEach((profile, i) => {
    const slug = profile.slug ?? slugify(profile.display_name);
    if (slug === '') problems.push({ path: `[${i}].slug`, message: 'is empty, and display_name gives no slug' });
    const first = seen.get(slug);
    if (first !== undefined) problems.push({ path: `[${i}].slug`, message: `duplicate slug "${slug}" (also profile [${first}])` });
    else seen.set(slug, i);
    if (profile.default) defaults += 1;
    for (const t of traitProblems(profile.kubespawner_override ?? {}, false)) problems.push({ path: `[${i}].kubespawner_override.${t.key}`, message: t.message });
    for (const [name, option] of Object.entries(profile.profile_options ?? {})) {
      const at = `[${i}].profile_options.${name}`;
      if (!OPTION_NAME.test(name) || name === 'profile' || name.endsWith('--unlisted-choice')) {
        problems.push({ path: at, message: 'option names are letters, digits, ".", "_" or "-", not "profile", and not ending in "--unlisted-choice"' });
      }
      const choiceDefaults = Object.values(option.choices).filter((c) => c.default).length;
      if (choiceDefaults > 1) problems.push({ path: `${at}.choices`, message: `has ${choiceDefaults} default choices; at most one` });
      const unlisted = option.unlisted_choice;
      if (Object.keys(option.choices).length === 0 && !unlisted?.enabled) {
        problems.push({ path: `${at}.choices`, message: 'is empty and the unlisted choice is not enabled' });
      }
      if (unlisted?.validation_regex !== undefined) {
        const why = regexProblem(unlisted.validation_regex);
        if (why) problems.push({ path: `${at}.unlisted_choice.validation_regex`, message: why });
      }
      for (const [key, choice] of Object.entries(option.choices)) {
        for (const t of traitProblems(choice.kubespawner_override ?? {}, false)) {
          problems.push({ path: `${at}.choices.${key}.kubespawner_override.${t.key}`, message: t.message });
        }
      }
      if (unlisted?.kubespawner_override) {
        const base = `${at}.unlisted_choice.kubespawner_override`;
        for (const t of traitProblems(unlisted.kubespawner_override, true)) problems.push({ path: `${base}.${t.key}`, message: t.message });
        // KubeSpawner formats every string and every nested key, but not the top-level keys.
        const walk = (v: unknown, path: string, formatKeys: boolean) => {
          if (typeof v === 'string') {
            const why = formatProblem(v);
            if (why) problems.push({ path, message: why });
          } else if (Array.isArray(v)) v.forEach((x, n) => walk(x, `${path}[${n}]`, true));
          else if (v !== null && typeof v === 'object') {
            for (const [k, x] of Object.entries(v)) {
              const why = formatKeys ? formatProblem(k) : undefined;
              if (why) problems.push({ path: `${path}.${k}`, message: `the key ${why}` });
              walk(x, `${path}.${k}`, true);
            }
          }
        };
        walk(unlisted.kubespawner_override, base, false);
      }
    }
  });
  if (doc.length > 0 && defaults === 0) problems.push({ path: '(document)', message: 'no profile has "default": true' });
  if (defaults > 1) problems.push({ path: '(document)', message: `${defaults} profiles have "default": true; exactly one` });
  return problems;
}

export type CheckResult = { ok: true; document: ProfilesDocument } | { ok: false; problems: Problem[] };

/** Schema and semantic checks together; every problem at once. */
export function checkDocument(input: unknown): CheckResult {
  const parsed = documentSchema.safeParse(input);
  if (!parsed.success) {
    return { ok: false, problems: parsed.error.issues.map((i) => ({ path: pathOf(i.path), message: i.message })) };
  }
  const problems = semanticProblems(parsed.data);
  return problems.length > 0 ? { ok: false, problems } : { ok: true, document: parsed.data };
}

/** Every group a document names, for the unknown-group warning. */
export function groupsNamed(doc: ProfilesDocument): Map<string, string> {
  const out = new Map<string, string>();
  const add = (list: readonly string[] | undefined, path: string) => {
    for (const g of list ?? []) if (!out.has(g.toLowerCase())) out.set(g.toLowerCase(), path);
  };
  doc.forEach((p, i) => {
    add(p.allowed_groups, `[${i}].allowed_groups`);
    for (const [name, o] of Object.entries(p.profile_options ?? {})) {
      for (const [c, choice] of Object.entries(o.choices)) add(choice.allowed_groups, `[${i}].profile_options.${name}.choices.${c}.allowed_groups`);
      add(o.unlisted_choice?.allowed_groups, `[${i}].profile_options.${name}.unlisted_choice.allowed_groups`);
    }
  });
  return out;
}
