import { z } from 'zod';

/**
 * The community model: what every service shares, declared once in the community file's
 * `community:` section. Sections refer to it by name (a group, the currency) and to each other
 * (a rate card names profile-api's profile slugs); `hubside check-config` checks every reference.
 */

/** A UTF-16 half without its other half: PostgreSQL cannot store it, and JSON from Python refuses it. */
export const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** JupyterHub allows almost any group name; we only refuse what can't be a name at all. */
export const hubName = z
  .string()
  .min(1, 'must not be empty')
  .max(255, 'must be at most 255 characters')
  .refine((v) => !/[\u0000-\u001f\u007f]/.test(v), 'must not contain control characters')
  .refine((v) => !LONE_SURROGATE.test(v), 'must be valid Unicode (no lone surrogates)');

/**
 * A map keyed by hub names (groups, users, datasets). JupyterHub allows a group called
 * `__proto__` or `constructor`, but `z.record` drops a `__proto__` key without a word (a budget
 * for that group would silently vanish) and builds an object that inherits Object.prototype's
 * members. This keeps every own key, in a prototype-less object, and bounds the number of entries.
 */
export function namedRecord<K extends z.ZodType<string, string>, V extends z.ZodType>(key: K, value: V, maxEntries = 1000) {
  return z
    .custom<object>((v) => v !== null && typeof v === 'object' && !Array.isArray(v), 'must be a map of names')
    .transform((v, ctx) => {
      const out = Object.create(null) as Record<z.output<K>, z.output<V>>;
      const entries = Object.entries(v);
      if (entries.length > maxEntries) {
        ctx.addIssue({ code: 'custom', message: `must have at most ${maxEntries} entries` });
        return z.NEVER;
      }
      for (const [k, raw] of entries) {
        const name = key.safeParse(k);
        if (!name.success) for (const issue of name.error.issues) ctx.addIssue({ code: 'custom', path: [k], message: `(the name) ${issue.message}` });
        const parsed = value.safeParse(raw);
        if (!parsed.success) for (const issue of parsed.error.issues) ctx.addIssue({ ...issue, code: 'custom', path: [k, ...issue.path] } as never);
        if (name.success && parsed.success) (out as Record<string, unknown>)[k] = parsed.data;
      }
      return out;
    });
}

const names = z.array(hubName).max(1000, 'must list at most 1000 names').default([]);

export const currencyCode = z.string().regex(/^[A-Z]{3}$/, 'must be an ISO 4217 currency code such as EUR or USD');

export const communitySchema = z
  .object({
    name: z.string().min(1, 'must not be empty').max(200, 'must be at most 200 characters'),
    description: z.string().max(2000, 'must be at most 2000 characters').optional(),
    /** Every price and budget in every section is in this currency. */
    currency: currencyCode.default('USD'),
    /**
     * Every hub group the file names, with what it is for. When this map is given,
     * check-config refuses a reference to a group that is not in it (a typo is then an error,
     * not a rule that silently matches nobody).
     */
    groups: namedRecord(
        hubName,
        z
          .object({
            displayName: z.string().max(200).optional(),
            description: z.string().max(2000).optional(),
          })
          .strict()
          .nullable()
          .transform((v) => v ?? {}),
      )
      .optional(),
    /** Community admins, besides the hub's own admins: they edit the community's settings. */
    admins: z
      .object({ groups: names, users: names })
      .strict()
      .default({ groups: [], users: [] }),
    /** Course groups, and who teaches each: instructors see their course's usage. */
    courses: namedRecord(
        hubName,
        z
          .object({
            displayName: z.string().max(200).optional(),
            instructors: z.object({ groups: names, users: names }).strict().default({ groups: [], users: [] }),
          })
          .strict(),
      )
      .default({}),
  })
  .strict();

export type Community = z.output<typeof communitySchema>;

/** The community a file without a `community:` section gets. */
export const DEFAULT_COMMUNITY: Community = communitySchema.parse({ name: 'Hubside' });

/**
 * One step of a field path in the community file: `.name` for a plain key, `["a.b"]` for a key
 * that could be misread (dots, spaces, brackets), so every service writes paths the same way.
 */
export function fieldKey(key: string): string {
  return /^[\p{L}\p{N}_@:-]+$/u.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
}

/** What one section names elsewhere; check-config resolves each against the community and the other sections. */
export interface CommunityReference {
  kind: 'group' | 'profile' | 'dataset' | 'currency';
  name: string;
  /** Where in the file, e.g. `usage-collector.budgets.groups.physics-101`. */
  field: string;
}

/** What one section defines that others may name. */
export interface CommunityProvides {
  profiles?: string[];
  datasets?: string[];
}

/** Is this hub user a community admin (a hub admin, or named or grouped in `community.admins`)? */
export function isCommunityAdmin(community: Community, user: { name: string; admin?: boolean; groups?: readonly string[] }): boolean {
  if (user.admin) return true;
  if (community.admins.users.includes(user.name)) return true;
  return (user.groups ?? []).some((g) => community.admins.groups.includes(g));
}

/** The course groups this user teaches, by name or through a group. */
export function coursesTaughtBy(community: Community, user: { name: string; groups?: readonly string[] }): string[] {
  const groups = new Set(user.groups ?? []);
  const out: string[] = [];
  for (const [course, def] of Object.entries(community.courses)) {
    if (def.instructors.users.includes(user.name) || def.instructors.groups.some((g) => groups.has(g))) out.push(course);
  }
  return out;
}
