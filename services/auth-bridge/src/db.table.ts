import type { ColumnType, Generated } from 'kysely';

type Timestamp = ColumnType<Date, Date | string, Date | string>;
type Json<T> = ColumnType<T, string, string>;

export interface OidcModelTable {
  model: string;
  id: string;
  payload: Json<Record<string, unknown>>;
  grant_id: string | null;
  user_code: string | null;
  uid: string | null;
  account_id: string | null;
  expires_at: Timestamp | null;
  consumed_at: Timestamp | null;
}

export interface SigningKeyTable {
  kid: string;
  kind: 'signing' | 'cookie';
  material: Json<Record<string, unknown>>;
  created_at: ColumnType<Date, Date | string | undefined, Date | string>;
  retired_at: Timestamp | null;
}

export interface UpstreamLoginTable {
  state: string;
  idp: string;
  interaction_uid: string;
  hub: string;
  nonce: string;
  code_verifier: string;
  access_code: string | null;
  expires_at: Timestamp;
}

export interface AccountTable {
  id: string;
  hub: string;
  idp: string;
  upstream_sub: string;
  username: string;
  email: string | null;
  name: string | null;
  groups: Json<string[]>;
  admin: boolean;
  updated_at: ColumnType<Date, Date | string | undefined, Date | string>;
}

export interface AccessCodeTable {
  id: string;
  code_hash: string;
  hub: string;
  group_name: string;
  idps: Json<string[]>;
  max_uses: number;
  uses: Generated<number>;
  expires_at: Timestamp;
  revoked_at: Timestamp | null;
  created_by: string;
  created_at: ColumnType<Date, Date | string | undefined, Date | string>;
}

export interface CodeMembershipTable {
  account_id: string;
  code_id: string;
  group_name: string;
  expires_at: Timestamp;
}

export interface LoginEventTable {
  id: Generated<number>;
  at: ColumnType<Date, Date | string | undefined, Date | string>;
  hub: string;
  idp: string;
  username: string | null;
  outcome: 'success' | 'refused';
  reason: string | null;
}

export interface DB {
  oidc_model: OidcModelTable;
  signing_key: SigningKeyTable;
  upstream_login: UpstreamLoginTable;
  account: AccountTable;
  access_code: AccessCodeTable;
  code_membership: CodeMembershipTable;
  login_event: LoginEventTable;
}
