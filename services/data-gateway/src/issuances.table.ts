import type { ColumnType, Generated } from 'kysely';

export interface IssuancesTable {
  id: Generated<string>;
  issued_at: ColumnType<Date, Date | undefined, never>;
  username: string;
  dataset: string;
  access: string;
  /** credentials | presign */
  kind: string;
  provider: string;
  cached: boolean;
  expires_at: Date;
  client_ip: string | null;
}

export interface GatewayDB {
  issuances: IssuancesTable;
}
