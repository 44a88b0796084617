import { createHash, randomUUID } from 'node:crypto';
import type { Backend, IssueRequest, Issued } from './backends/types.js';

export class BackendError extends Error {
  override readonly name = 'BackendError';
  readonly backend: string;
  constructor(backend: string, message: string) {
    super(message);
    this.backend = backend;
  }
}

interface Entry {
  /** Names this backend issuance in the audit, for every delivery of it. */
  id: string;
  username: string;
  dataset: string;
  promise: Promise<Issued>;
  refreshAt: number;
}

export interface IssuerOptions {
  timeoutMs: number;
  refreshFraction: number;
  now?: () => number;
  onBackendCall?: (backend: string, dataset: string, ok: boolean, seconds: number) => void;
}

/** Cache key: user, dataset, access and the prefixes granted (so a group change is a new key). */
export function cacheKey(username: string, req: Pick<IssueRequest, 'datasetName' | 'grant'>): string {
  return createHash('sha256').update(JSON.stringify([username, req.datasetName, req.grant.access, req.grant.prefixes])).digest('hex');
}

/**
 * Credentials per (user, dataset, access), reused until `refreshFraction` of their lifetime has
 * passed. Concurrent identical requests share one backend call. Failures are not cached.
 */
export function createIssuer(opts: IssuerOptions) {
  const now = opts.now ?? Date.now;
  const entries = new Map<string, Entry>();
  let calls = 0;

  function sweep(): void {
    if (entries.size < 10_000) return;
    const t = now();
    for (const [k, e] of entries) if (e.refreshAt <= t) entries.delete(k);
  }

  async function callBackend(backend: Backend, req: Omit<IssueRequest, 'signal'>): Promise<Issued> {
    calls += 1;
    const controller = new AbortController();
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          controller.abort();
          reject(new BackendError(backend.name, `${backend.name} did not answer within ${opts.timeoutMs} ms`));
        }, opts.timeoutMs);
      });
      const issued = await Promise.race([backend.issue({ ...req, signal: controller.signal }), timeout]);
      opts.onBackendCall?.(backend.name, req.datasetName, true, (performance.now() - started) / 1000);
      return issued;
    } catch (err) {
      opts.onBackendCall?.(backend.name, req.datasetName, false, (performance.now() - started) / 1000);
      if (err instanceof BackendError) throw err;
      const e = err as { name?: string; message?: string };
      // The provider's own error name and message say what went wrong; they never hold our secrets.
      throw new BackendError(backend.name, `${backend.name} refused or failed: ${e.name ?? 'Error'}: ${String(e.message ?? err).slice(0, 300)}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Forget a user's cached credentials for a dataset (all of them, or all but `keep`). */
  function drop(username: string, dataset: string, keep?: string): number {
    let n = 0;
    for (const [k, e] of entries) {
      if (k !== keep && e.username === username && e.dataset === dataset) {
        entries.delete(k);
        n += 1;
      }
    }
    return n;
  }

  return {
    drop,
    /** How many cached credentials a user holds for a dataset. */
    held(username: string, dataset: string): number {
      let n = 0;
      for (const e of entries.values()) if (e.username === username && e.dataset === dataset) n += 1;
      return n;
    },
    /**
     * `cached` tells whether a backend call was avoided; `credentialId` names the issuance.
     * `record` runs once per backend issuance, before anyone gets the credentials: callers that
     * join an issuance in flight wait for it too, so none of them answers before the issuance
     * is recorded (and all of them fail if it cannot be).
     */
    async get(
      backend: Backend,
      req: Omit<IssueRequest, 'signal'>,
      record?: (issued: Issued, credentialId: string) => Promise<void>,
    ): Promise<{ issued: Issued; cached: boolean; credentialId: string }> {
      const key = cacheKey(req.username, req);
      const hit = entries.get(key);
      if (hit && hit.refreshAt > now()) return { issued: await hit.promise, cached: true, credentialId: hit.id };
      sweep();
      const requestedAt = now();
      // Credentials this user holds for the dataset under another grant (a group left, so other
      // prefixes) are not handed out again.
      drop(req.username, req.datasetName, key);
      const id = randomUUID();
      const issuing = async () => {
        const issued = await callBackend(backend, req);
        await record?.(issued, id);
        return issued;
      };
      const entry: Entry = { id, username: req.username, dataset: req.datasetName, promise: issuing(), refreshAt: Number.POSITIVE_INFINITY };
      entries.set(key, entry);
      try {
        const issued = await entry.promise;
        entry.refreshAt = requestedAt + (issued.expiration.getTime() - requestedAt) * opts.refreshFraction;
        return { issued, cached: false, credentialId: entry.id };
      } catch (err) {
        if (entries.get(key) === entry) entries.delete(key);
        throw err;
      }
    },
    get backendCalls() {
      return calls;
    },
    clear() {
      entries.clear();
    },
  };
}
export type Issuer = ReturnType<typeof createIssuer>;
