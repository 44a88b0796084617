import type { Insertable, Kysely } from 'kysely';
import type { GatewayDB, IssuancesTable } from './issuances.table.js';

export interface IssuanceFilter {
  user?: string;
  dataset?: string;
  kind?: string;
  credentialId?: string;
  since?: Date;
  until?: Date;
  limit: number;
  /** Keyset pagination: ids below this one. */
  before?: string;
}

export type IssuanceRow = Insertable<IssuancesTable>;

export function issuancesRepository(db: Kysely<GatewayDB>) {
  return {
    /** Multi-row inserts of up to 500 rows (well under Postgres' 65,535 parameters). */
    async record(rows: IssuanceRow[]): Promise<void> {
      for (let i = 0; i < rows.length; i += 500) await db.insertInto('issuances').values(rows.slice(i, i + 500)).execute();
    },
    async list(f: IssuanceFilter) {
      let q = db.selectFrom('issuances').selectAll().orderBy('id', 'desc').limit(f.limit);
      if (f.user !== undefined) q = q.where('username', '=', f.user);
      if (f.dataset !== undefined) q = q.where('dataset', '=', f.dataset);
      if (f.kind !== undefined) q = q.where('kind', '=', f.kind);
      if (f.credentialId !== undefined) q = q.where('credential_id', '=', f.credentialId);
      if (f.since) q = q.where('issued_at', '>=', f.since);
      if (f.until) q = q.where('issued_at', '<', f.until);
      if (f.before !== undefined) q = q.where('id', '<', f.before);
      return q.execute();
    },
  };
}
export type IssuancesRepository = ReturnType<typeof issuancesRepository>;
