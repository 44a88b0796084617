import type { DatasetConfig } from '../config.js';
import type { Grant } from '../grants.js';

export interface IssueRequest {
  datasetName: string;
  dataset: DatasetConfig;
  grant: Grant;
  username: string;
  durationSeconds: number;
  signal: AbortSignal;
}

/** What a backend hands out. `credentials` is provider-shaped; `expiration` is authoritative. */
export interface Issued {
  provider: DatasetConfig['provider'];
  credentials: Record<string, string>;
  expiration: Date;
}

export interface Backend {
  /** Named in metrics and in 502 messages. */
  readonly name: string;
  issue(req: IssueRequest): Promise<Issued>;
  /** A presigned URL for one object, signed with credentials this backend issued. */
  presign?(req: { dataset: DatasetConfig; issued: Issued; key: string; method: 'GET' | 'PUT'; expiresIn: number }): Promise<string>;
}
