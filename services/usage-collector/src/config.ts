import { ConfigError, DEFAULT_COMMUNITY, LONE_SURROGATE, hubName } from '@hubside/service-kit';
import type { Community } from '@hubside/service-kit';
import { z } from 'zod';

/**
 * Limits on everything a person can save (in the community file or on the dashboard: one schema
 * for both). Each is far above any real community and far below what makes a read slow: every
 * quota call and poll is linear in `warnAt`, every priced read in the rate cards.
 */
export const LIMITS = {
  rateCards: 200,
  /** Entries of one card's `profileHour`, and of the section's `profiles` map. */
  profiles: 1000,
  budgetUsers: 20_000,
  budgetGroups: 5000,
  warnAt: 10,
  /** attribution.groupOrder, access lists and maps. */
  names: 1000,
  /** Card ids and similar labels. */
  label: 100,
  /** A rolling budget's window, in days. */
  rollingDays: 366,
} as const;

/** Free text that PostgreSQL can store and JSON can carry: no NUL or other control character, no lone surrogate. */
export function safeText(max: number) {
  return z
    .string()
    .max(max, `must be at most ${max} characters`)
    .refine((v) => !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(v), 'must not contain control characters')
    .refine((v) => !LONE_SURROGATE.test(v), 'must be valid Unicode (no lone surrogates)');
}

// Money and rates are decimal strings so YAML never turns 0.1 into a binary float.
const money = z
  .union([z.string(), z.number()])
  .transform((v) => String(v))
  .refine((v) => /^\d{1,12}(\.\d{1,10})?$/.test(v), 'must be a non-negative decimal, e.g. "0.05"');

/**
 * A real calendar date in 2000–9999 (JavaScript takes 2026-02-30 as March 2nd and PostgreSQL has
 * no year 0): anything else would be accepted and stored, then make every priced read fail.
 */
export const isoDate = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date YYYY-MM-DD')
  .refine((v) => {
    const t = Date.parse(`${v}T00:00:00Z`);
    return !Number.isNaN(t) && new Date(t).toISOString().slice(0, 10) === v && v >= '2000-01-01' && v <= '9999-12-31';
  }, 'must be a real calendar date between 2000-01-01 and 9999-12-31');

/** A hub user, group or profile name as a map key or list entry. */
const nameKey = hubName;

/**
 * Default raw retention: a quarter, longer than any default budget window and one term's
 * disputes, short enough that the sessions table stays a few months deep.
 */
export const DEFAULT_RAW_DAYS = 90;

export const resourcesSchema = z
  .object({
    cpuGuarantee: z.number().nonnegative().max(100_000).default(0),
    cpuLimit: z.number().nonnegative().max(100_000).default(0),
    memGuaranteeGiB: z.number().nonnegative().max(1_000_000).default(0),
    memLimitGiB: z.number().nonnegative().max(1_000_000).default(0),
    gpus: z.number().int().nonnegative().max(10_000).default(0),
  })
  .strict();
/**
 * A session's priced resources. `pricePerHour` is the price the hub recorded at spawn
 * (`user_options.hubside.price_per_hour`): it travels with the resources (into rollups too), and a
 * profile-hour card bills it in place of its own price for the profile.
 */
export type Resources = z.output<typeof resourcesSchema> & { pricePerHour?: string };

export const rateCardSchema = z
  .object({
    id: safeText(LIMITS.label).min(1, 'must not be empty'),
    effectiveFrom: isoDate,
    mode: z.enum(['profile-hour', 'resource-hour']).default('profile-hour'),
    /** profile slug -> price per hour (profile-hour mode). Unknown profiles use `defaultProfileHour`. */
    profileHour: z
      .record(nameKey, money)
      .refine((m) => Object.keys(m).length <= LIMITS.profiles, `must price at most ${LIMITS.profiles} profiles`)
      .default({}),
    defaultProfileHour: money.default('0'),
    /** resource-hour mode: price per CPU-hour, GiB-hour and GPU-hour of max(request, usage). */
    cpuHour: money.default('0'),
    gibHour: money.default('0'),
    gpuHour: money.default('0'),
    /** Each session's time in a statement period is rounded up to this many seconds. */
    incrementSeconds: z.number().int().min(1).max(86_400).default(60),
    /** Free amount per user per calendar month, in currency, taken off before charging. */
    freeAllowancePerMonth: money.default('0'),
  })
  .strict();
export type RateCard = z.output<typeof rateCardSchema>;

export const budgetSchema = z
  .object({
    limit: money,
    unit: z.enum(['currency', 'hours']).default('currency'),
    /** `month` is the calendar month (UTC); `rolling` the last `days` days. */
    window: z.enum(['month', 'rolling']).default('month'),
    days: z.number().int().min(1).max(LIMITS.rollingDays).default(30),
  })
  .strict();
export type Budget = z.output<typeof budgetSchema>;

/** Budgets as an admin may edit them on the dashboard (the webhook URL stays in the community file). */
export const budgetsSchema = z
  .object({
    default: budgetSchema.optional(),
    users: z
      .record(nameKey, budgetSchema)
      .refine((m) => Object.keys(m).length <= LIMITS.budgetUsers, `must give at most ${LIMITS.budgetUsers} users a budget of their own`)
      .default({}),
    groups: z
      .record(nameKey, budgetSchema)
      .refine((m) => Object.keys(m).length <= LIMITS.budgetGroups, `must give at most ${LIMITS.budgetGroups} groups a budget`)
      .default({}),
    warnAt: z
      .array(z.number().int().min(1).max(100))
      .max(LIMITS.warnAt, `must list at most ${LIMITS.warnAt} thresholds`)
      .refine((v) => new Set(v).size === v.length, 'must not list a threshold twice')
      .default([75, 90, 100]),
    /** Stop servers over 100 % through the hub API (needs delete:servers). */
    stopOverLimit: z.boolean().default(false),
  })
  .strict();

/** Rate cards, wherever they are read (the community file, a dashboard save, a stored version). */
export const rateCardsSchema = z.array(rateCardSchema).max(LIMITS.rateCards, `must list at most ${LIMITS.rateCards} rate cards`);

const nameList = z.array(nameKey).max(LIMITS.names, `must list at most ${LIMITS.names} names`);
const nameMap = <T extends z.ZodType>(v: T) =>
  z.record(nameKey, v).refine((m) => Object.keys(m).length <= LIMITS.names, `must have at most ${LIMITS.names} entries`);

/** Two rate cards may not take effect on the same day. */
export function uniqueCardDates(cards: readonly { effectiveFrom: string }[], ctx: z.RefinementCtx, path: (string | number)[] = ['rateCards']): void {
  const seen = new Set<string>();
  cards.forEach((card, i) => {
    if (seen.has(card.effectiveFrom)) ctx.addIssue({ code: 'custom', path: [...path, i, 'effectiveFrom'], message: `two rate cards take effect on ${card.effectiveFrom}` });
    seen.add(card.effectiveFrom);
  });
}

export const configSchema = z
  .object({
    /** Seconds between polls of the hub; HUBSIDE_POLL_INTERVAL overrides it. */
    pollSeconds: z.number().positive().max(3600).default(30),
    /** Off: no polling at all (e.g. a read-only replica). */
    poll: z.boolean().default(true),
    /** Optional: the community's currency (`community.currency`) is the one used; if given here it must equal it. */
    currency: z.string().regex(/^[A-Z]{3}$/, 'must be an ISO 4217 code, e.g. EUR').optional(),
    /** The `user_options` key that names the profile (KubeSpawner uses `profile`). */
    profileOption: safeText(200).min(1).default('profile'),
    /** Resources per profile slug, for sessions started without the hub's pre-spawn hook (`user_options.hubside`). */
    profiles: z
      .record(nameKey, resourcesSchema)
      .refine((m) => Object.keys(m).length <= LIMITS.profiles, `must describe at most ${LIMITS.profiles} profiles`)
      .default({}),
    defaultResources: resourcesSchema.default({ cpuGuarantee: 0, cpuLimit: 0, memGuaranteeGiB: 0, memLimitGiB: 0, gpus: 0 }),
    rateCards: rateCardsSchema.default([]),
    attribution: z
      .object({
        /**
         * primary: all of a user's cost goes to their first group in `groupOrder` (else the first by name);
         * split: divided evenly between their groups, remainder cents to the first;
         * full: every group shows the whole cost, flagged `overlapping`, and totals come from users only.
         */
        rule: z.enum(['primary', 'split', 'full']).default('primary'),
        groupOrder: nameList.default([]),
      })
      .strict()
      .default({ rule: 'primary', groupOrder: [] }),
    access: z
      .object({
        /** Members of these hub groups see everything, like hub admins. */
        adminGroups: nameList.default([]),
        /** user name -> groups that user may see. */
        managers: nameMap(nameList).default({}),
        /** hub group -> groups its members may see (e.g. instructors-phys101 -> [phys101]). */
        managerGroups: nameMap(nameList).default({}),
      })
      .strict()
      .default({ adminGroups: [], managers: {}, managerGroups: {} }),
    budgets: budgetsSchema.extend({ webhook: z.url().optional() }).strict().default({ users: {}, groups: {}, warnAt: [75, 90, 100], stopOverLimit: false }),
    retention: z
      .object({
        /**
         * Closed sessions that stopped more than this many days ago are rolled up into daily
         * aggregates and deleted (statements read the rollups, to the same cent). 0 keeps them forever.
         */
        rawDays: z.number().int().min(0).max(3660).default(DEFAULT_RAW_DAYS),
      })
      .strict()
      .default({ rawDays: DEFAULT_RAW_DAYS }),
  })
  .strict()
  .superRefine((cfg, ctx) => uniqueCardDates(cfg.rateCards, ctx));
/** The section as written in the community file. */
export type UsageCollectorSection = z.output<typeof configSchema>;
/** The section as the service uses it: with the community's currency and the community itself. */
export type UsageCollectorConfig = Omit<UsageCollectorSection, 'currency'> & { currency: string; community: Community };

/**
 * The section with the community model: the currency is `community.currency` (the section's own,
 * if given, must equal it). Without a community (a test, a file without `community:`), the
 * section's currency, else USD, is the community's.
 */
export function resolveConfig(section: UsageCollectorSection | UsageCollectorConfig, community?: Community): UsageCollectorConfig {
  if ('community' in section && section.community && !community) return section;
  if (community && section.currency !== undefined && section.currency !== community.currency) {
    throw new ConfigError('usage-collector', [
      `usage-collector.currency: ${section.currency} differs from community.currency ${community.currency}; remove it (the community's currency is used) or make them equal`,
    ]);
  }
  const base = community ?? { ...DEFAULT_COMMUNITY, currency: section.currency ?? DEFAULT_COMMUNITY.currency };
  return { ...section, currency: base.currency, community: base };
}

/**
 * `record[key]` for the maps of the configuration that are keyed by names users choose (users,
 * groups, profiles): only the record's own entries, so a name like `__proto__` or `constructor`
 * finds nothing instead of Object.prototype's.
 */
export function entryOf<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

/** The poll interval in ms: HUBSIDE_POLL_INTERVAL (seconds) wins over the config file. */
export function pollIntervalMs(config: { pollSeconds: number }, env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.HUBSIDE_POLL_INTERVAL;
  if (raw === undefined || raw === '') return config.pollSeconds * 1000;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0 || n > 3600) {
    throw new ConfigError('environment', [`HUBSIDE_POLL_INTERVAL: must be a number of seconds in (0, 3600], got ${JSON.stringify(raw)}`]);
  }
  return n * 1000;
}

/** Measured usage is optional: on when PROMETHEUS_URL is set. */
export function prometheusUrl(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const raw = env.PROMETHEUS_URL;
  if (raw === undefined || raw === '') return undefined;
  try {
    const u = new URL(raw);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http');
    return u.href;
  } catch {
    throw new ConfigError('environment', ['PROMETHEUS_URL: must be an http(s) URL, e.g. http://prometheus:9090/']);
  }
}
