import { sql } from 'kysely';
import type { Kysely } from 'kysely';

/**
 * Runs `fn` in a transaction with Postgres' JIT compiler off. The day-piece queries (a
 * `generate_series` per session) make the planner expect hundreds of rows per session, so on a
 * large table it JIT-compiles them with full optimisation: measured at 3.1 s of a 3.8 s query over
 * 310,000 sessions, for a plan that runs in under 2 s without it. Every query of `fn` must use the
 * transaction it is given (PGlite waits forever on the outer handle inside a transaction).
 */
export function withoutJit<DB, T>(db: Kysely<DB>, fn: (trx: Kysely<DB>) => Promise<T>): Promise<T> {
  return db.transaction().execute(async (trx) => {
    await sql`set local jit = off`.execute(trx);
    return fn(trx);
  });
}
