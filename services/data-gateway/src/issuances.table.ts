import type { ColumnType, Generated } from 'kysely';

/**
 * One row per backend issuance or presigned URL (`deliveries` = 1), or per batch of repeat
 * deliveries of one cached credential to one client address (`deliveries` = how many,
 * between `issued_at` and `last_at`).
 */
export interface IssuancesTable {
  id: Generated<string>;
  /** When the (first) answer was given. */
  issued_at: ColumnType<Date, Date | undefined, never>;
  username: string;
  dataset: string;
  access: string;
  /** credentials | presign */
  kind: string;
  provider: string;
  /** true: answered from the cache, no backend call. */
  cached: boolean;
  expires_at: Date;
  client_ip: string | null;
  /** Answers this row stands for. */
  deliveries: ColumnType<number, number | undefined, never>;
  /** The last of those answers (null when `deliveries` is 1). */
  last_at: ColumnType<Date | null, Date | null | undefined, never>;
  /** The gateway's id for one backend issuance, shared by every delivery of those credentials. */
  credential_id: string | null;
}

export interface GatewayDB {
  issuances: IssuancesTable;
}
