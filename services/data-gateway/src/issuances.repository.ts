import type { Insertable, Kysely } from 'kysely';
import type { GatewayDB, IssuancesTable } from './issuances.table.js';

export interface IssuanceFilter {
  user?: string;
  dataset?: string;
  kind?: string;
  since?: Date;
  until?: Date;
  limit: number;
  /** Keyset pagination: ids below this one. */
  before?: string;
}

export function issuancesRepository(db: Kysely<GatewayDB>) {
  return {
    async record(rows: Insertable<IssuancesTable>[]): Promise<void> {
      if (rows.length > 0) await db.insertInto('issuances').values(rows).execute();
    },
    async list(f: IssuanceFilter) {
      let q = db.selectFrom('issuances').selectAll().orderBy('id', 'desc').limit(f.limit);
      if (f.user !== undefined) q = q.where('username', '=', f.user);
      if (f.dataset !== undefined) q = q.where('dataset', '=', f.dataset);
      if (f.kind !== undefined) q = q.where('kind', '=', f.kind);
      if (f.since) q = q.where('issued_at', '>=', f.since);
      if (f.until) q = q.where('issued_at', '<', f.until);
      if (f.before !== undefined) q = q.where('id', '<', f.before);
      return q.execute();
    },
  };
}
export type IssuancesRepository = ReturnType<typeof issuancesRepository>;

/**
 * Group commit: rows that arrive while a write is in flight go out together in the next
 * insert. Each caller still waits for its own row to be stored, so nothing is answered
 * before it is audited, yet a burst costs one round trip instead of one per request.
 */
export function auditWriter(repo: IssuancesRepository) {
  const queue: { row: Insertable<IssuancesTable>; done: (err?: unknown) => void }[] = [];
  let draining: Promise<void> | null = null;
  async function drain(): Promise<void> {
    while (queue.length > 0) {
      const batch = queue.splice(0, 500);
      try {
        await repo.record(batch.map((b) => b.row));
        for (const b of batch) b.done();
      } catch (err) {
        for (const b of batch) b.done(err);
      }
    }
    draining = null;
  }
  return {
    record(row: Insertable<IssuancesTable>): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        queue.push({ row, done: (err) => (err === undefined ? resolve() : reject(err as Error)) });
        draining ??= drain();
      });
    },
    /** Resolves when everything queued so far is written. */
    async flush(): Promise<void> {
      while (draining) await draining;
    },
  };
}
