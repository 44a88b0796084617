import type { ColumnType, Generated } from 'kysely';

export interface ProfileVersionsTable {
  id: number;
  /** The profiles document as JSON text, exactly as validated. */
  document: string;
  author: string;
  message: string;
  parent_id: number | null;
  created_at: ColumnType<Date, never, never> & Generated<Date>;
}

export interface ProfilesDB {
  profile_versions: ProfileVersionsTable;
}
