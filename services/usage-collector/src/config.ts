import { ConfigError } from '@hubside/service-kit';
import { z } from 'zod';

// Money and rates are decimal strings so YAML never turns 0.1 into a binary float.
const money = z
  .union([z.string(), z.number()])
  .transform((v) => String(v))
  .refine((v) => /^\d{1,12}(\.\d{1,10})?$/.test(v), 'must be a non-negative decimal, e.g. "0.05"');

const isoDate = z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date YYYY-MM-DD');

/**
 * Default raw retention: a quarter, longer than any default budget window and one term's
 * disputes, short enough that the sessions table stays a few months deep.
 */
export const DEFAULT_RAW_DAYS = 90;

export const resourcesSchema = z
  .object({
    cpuGuarantee: z.number().nonnegative().default(0),
    cpuLimit: z.number().nonnegative().default(0),
    memGuaranteeGiB: z.number().nonnegative().default(0),
    memLimitGiB: z.number().nonnegative().default(0),
    gpus: z.number().int().nonnegative().default(0),
  })
  .strict();
export type Resources = z.output<typeof resourcesSchema>;

export const rateCardSchema = z
  .object({
    id: z.string().min(1).max(100),
    effectiveFrom: isoDate,
    mode: z.enum(['profile-hour', 'resource-hour']).default('profile-hour'),
    /** profile slug -> price per hour (profile-hour mode). Unknown profiles use `defaultProfileHour`. */
    profileHour: z.record(z.string(), money).default({}),
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
    days: z.number().int().min(1).max(366).default(30),
  })
  .strict();
export type Budget = z.output<typeof budgetSchema>;

/** Budgets as an admin may edit them on the dashboard (the webhook URL stays in the community file). */
export const budgetsSchema = z
  .object({
    default: budgetSchema.optional(),
    users: z.record(z.string(), budgetSchema).default({}),
    groups: z.record(z.string(), budgetSchema).default({}),
    warnAt: z.array(z.number().int().min(1).max(100)).default([75, 90, 100]),
    /** Stop servers over 100 % through the hub API (needs delete:servers). */
    stopOverLimit: z.boolean().default(false),
  })
  .strict();

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
    currency: z.string().regex(/^[A-Z]{3}$/, 'must be an ISO 4217 code, e.g. EUR').default('USD'),
    /** The `user_options` key that names the profile (KubeSpawner uses `profile`). */
    profileOption: z.string().min(1).default('profile'),
    /** Resources per profile slug, used until profile-api's resolve is wired in. */
    profiles: z.record(z.string(), resourcesSchema).default({}),
    defaultResources: resourcesSchema.default({ cpuGuarantee: 0, cpuLimit: 0, memGuaranteeGiB: 0, memLimitGiB: 0, gpus: 0 }),
    rateCards: z.array(rateCardSchema).default([]),
    attribution: z
      .object({
        /**
         * primary: all of a user's cost goes to their first group in `groupOrder` (else the first by name);
         * split: divided evenly between their groups, remainder cents to the first;
         * full: every group shows the whole cost, flagged `overlapping`, and totals come from users only.
         */
        rule: z.enum(['primary', 'split', 'full']).default('primary'),
        groupOrder: z.array(z.string()).default([]),
      })
      .strict()
      .default({ rule: 'primary', groupOrder: [] }),
    access: z
      .object({
        /** Members of these hub groups see everything, like hub admins. */
        adminGroups: z.array(z.string()).default([]),
        /** user name -> groups that user may see. */
        managers: z.record(z.string(), z.array(z.string())).default({}),
        /** hub group -> groups its members may see (e.g. instructors-phys101 -> [phys101]). */
        managerGroups: z.record(z.string(), z.array(z.string())).default({}),
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
export type UsageCollectorConfig = z.output<typeof configSchema>;

/**
 * `record[key]` for the maps of the configuration that are keyed by names users choose (users,
 * groups, profiles): only the record's own entries, so a name like `__proto__` or `constructor`
 * finds nothing instead of Object.prototype's.
 */
export function entryOf<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

/** The poll interval in ms: HUBSIDE_POLL_INTERVAL (seconds) wins over the config file. */
export function pollIntervalMs(config: UsageCollectorConfig, env: NodeJS.ProcessEnv = process.env): number {
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
