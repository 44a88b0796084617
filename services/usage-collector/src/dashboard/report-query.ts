import { sql } from 'kysely';
import type { Kysely } from 'kysely';

/**
 * Runs `fn` in a transaction set up for a dashboard's report queries, which scan a month of usage:
 * - no JIT compiler (service-kit turns it off for every connection; this says so again where it
 *   mattered most: the planner expected hundreds of rows per session from the day cuts and
 *   JIT-compiled the queries, 3.1 s of a 3.8 s query over 310,000 sessions);
 * - no parallel workers: a view already runs its queries side by side, one connection each, and
 *   more processes than cores only make them all finish late, so none of their results can be
 *   priced while the others run;
 * - enough memory to hash a month of pieces (a few hundred thousand rows) without spilling to disk.
 * Every query of `fn` must use the transaction it is given (PGlite waits forever on the outer
 * handle inside a transaction). PGlite accepts and ignores what does not apply to it.
 */
export function reportQuery<DB, T>(db: Kysely<DB>, fn: (trx: Kysely<DB>) => Promise<T>): Promise<T> {
  return db.transaction().execute(async (trx) => {
    await sql`select set_config('jit', 'off', true), set_config('max_parallel_workers_per_gather', '0', true), set_config('work_mem', '32MB', true)`.execute(trx);
    return fn(trx);
  });
}
