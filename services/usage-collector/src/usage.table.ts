import type { ColumnType, Generated } from 'kysely';
import type { Resources } from './config.js';

type Timestamp = ColumnType<Date, Date | string, Date | string>;
type Json<T> = ColumnType<T, string, string>;

export interface SessionsTable {
  id: Generated<string>;
  user_name: string;
  server_name: string;
  started: Timestamp;
  profile: string | null;
  user_options: Json<Record<string, unknown>>;
  resources: Json<Resources>;
  groups: Json<string[]>;
  last_activity: Timestamp | null;
  first_seen: Timestamp;
  last_seen: Timestamp;
  stopped: Timestamp | null;
  stop_observed: Timestamp | null;
  /** 'poll': a poll no longer saw it; 'restart': the hub reported a newer start of the same server. */
  stop_source: string | null;
}

export interface PollsTable {
  id: Generated<string>;
  /** When the poll began listing the hub (null for polls recorded before this column). */
  started: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  at: Timestamp;
  servers: number;
  opened: number;
  closed: number;
}

export interface BudgetEventsTable {
  id: Generated<string>;
  subject_kind: string;
  subject: string;
  threshold: number;
  window_start: string;
  used: string;
  limit_value: string;
  unit: string;
  at: Timestamp;
}

export interface DailyUsageTable {
  user_name: string;
  day: string;
  profile: string;
  seconds: ColumnType<string, number | string, number | string>;
  cpu_seconds: number;
  gib_seconds: number;
  gpu_seconds: ColumnType<string, number | string, number | string>;
  sessions: number;
  groups: Json<string[]>;
  /** The priced resources of the sessions folded into this row (part of the key). */
  resources: Json<Resources>;
  /** Sum of the UTC-day pieces, each rounded up to its card's increment at rollup time. */
  billed_seconds: ColumnType<string, number | string, number | string>;
  /** Core-seconds and GiB-seconds of measured use above the request (exact decimals). */
  cpu_extra: ColumnType<string, string, string>;
  gib_extra: ColumnType<string, string, string>;
}

export interface MeasuredSamplesTable {
  user_name: string;
  at: Timestamp;
  window_seconds: number;
  cpu_seconds: number;
  memory_working_set_bytes: number;
  cpu_request: number;
  memory_request_bytes: number;
}

export interface UsageDB {
  measured_samples: MeasuredSamplesTable;
  sessions: SessionsTable;
  polls: PollsTable;
  budget_events: BudgetEventsTable;
  daily_usage: DailyUsageTable;
}
