import { LONE_SURROGATE, hubName } from '@hubside/service-kit';
import { z } from 'zod';

/**
 * Limits shared by the community file and the admin API, so whatever one accepts the other
 * does too (and what is stored can always be read back and shown).
 */
export const LIMITS = {
  /** Entries of each list in a hub's login rules (domains, users, groups, group map). */
  ruleEntries: 1000,
  /** Live (unrevoked, unexpired) access codes per hub. */
  liveCodesPerHub: 1000,
  /** Uses of one access code. */
  codeUses: 100_000,
  /** How far ahead an access code may expire. */
  codeDays: 366,
} as const;

/** A hub user or group name: JupyterHub's own rules, plus what PostgreSQL can store. */
export { LONE_SURROGATE, hubName };

/**
 * Text from a request that may reach the database. PostgreSQL (and PGlite) refuse NUL in
 * text, which would turn a bad request into a 500; so NUL is refused here, as a 400.
 */
export function dbText(max: number, min = 1) {
  return z
    .string()
    .min(min)
    .max(max)
    .refine((s) => !s.includes('\0'), 'must not contain NUL characters')
    .refine((s) => !LONE_SURROGATE.test(s), 'must be valid Unicode (no lone surrogates)');
}

/** Whether a value from a request can be looked up at all (ids we issue never hold NUL). */
export function storable(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= 4096 && !value.includes('\0') && !LONE_SURROGATE.test(value);
}
