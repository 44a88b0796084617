import { z } from 'zod';

/**
 * Text from a request that may reach the database. PostgreSQL (and PGlite) refuse NUL in
 * text, which would turn a bad request into a 500; so NUL is refused here, as a 400.
 */
export function dbText(max: number, min = 1) {
  return z
    .string()
    .min(min)
    .max(max)
    .refine((s) => !s.includes('\0'), 'must not contain NUL characters');
}

/** Whether a value from a request can be looked up at all (ids we issue never hold NUL). */
export function storable(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= 4096 && !value.includes('\0');
}
