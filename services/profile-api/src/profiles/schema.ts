import { z } from 'zod';

/**
 * The profiles document: KubeSpawner's `profile_list` schema, strict (an unknown field is a
 * mistake, not an extension), plus our additions: `allowed_groups`, a description per choice,
 * and `price_per_hour`. The resources summary is derived, never written.
 */

// Overrides are JSON handed to a spawner; the depth bound keeps recursive merging safe.
const MAX_DEPTH = 16;
function depthOf(value: unknown, depth = 0): number {
  if (depth > MAX_DEPTH) return depth;
  if (Array.isArray(value)) return Math.max(depth, ...value.map((v) => depthOf(v, depth + 1)));
  if (value !== null && typeof value === 'object') return Math.max(depth, ...Object.values(value).map((v) => depthOf(v, depth + 1)));
  return depth;
}
export const overrideSchema = z
  .record(z.string().max(200), z.json())
  .refine((v) => depthOf(v) <= MAX_DEPTH, { message: `is nested more than ${MAX_DEPTH} levels deep` });

const groups = z.array(z.string().min(1).max(256)).max(200);
const price = z.number().nonnegative().max(1_000_000);
const text = (max: number) => z.string().max(max);

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
  choices: z.record(z.string().min(1).max(100), choiceSchema).default({}),
  unlisted_choice: unlistedChoiceSchema.optional(),
});

export const profileSchema = z.strictObject({
  display_name: text(200),
  slug: z.string().min(1).max(100).optional(),
  description: text(2000).optional(),
  default: z.boolean().optional(),
  kubespawner_override: overrideSchema.optional(),
  profile_options: z.record(z.string().min(1).max(100), optionSchema).optional(),
  allowed_groups: groups.optional(),
  price_per_hour: price.optional(),
});

export const documentSchema = z.array(profileSchema).max(200);
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
  doc.forEach((profile, i) => {
    const slug = profile.slug ?? slugify(profile.display_name);
    if (slug === '') problems.push({ path: `[${i}].slug`, message: 'is empty, and display_name gives no slug' });
    const first = seen.get(slug);
    if (first !== undefined) problems.push({ path: `[${i}].slug`, message: `duplicate slug "${slug}" (also profile [${first}])` });
    else seen.set(slug, i);
    if (profile.default) defaults += 1;
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
        try {
          new RegExp(unlisted.validation_regex, 'u');
        } catch (err) {
          problems.push({ path: `${at}.unlisted_choice.validation_regex`, message: `is not a valid regular expression: ${(err as Error).message}` });
        }
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
