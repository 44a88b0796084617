import type { IssuanceRow, IssuancesRepository } from './issuances.repository.js';

export interface AuditLogOptions {
  /**
   * How often counted repeat deliveries are written, in ms. 0 writes every delivery before it
   * is answered (one row each), as issuances always are.
   */
  flushIntervalMs: number;
  /** Distinct pending (credential, kind, client) batches that force a write; new ones wait for it. */
  maxPending: number;
  /** A timed write failed; its rows stay pending and the next write retries them. */
  onFlushError?: (err: unknown, rows: number) => void;
}

/** What one answer handed out, as the audit keeps it. */
export interface AuditEntry {
  username: string;
  dataset: string;
  access: string;
  kind: 'credentials' | 'presign';
  provider: string;
  expiresAt: Date;
  clientIp: string | null;
  credentialId: string;
}

interface Pending {
  entry: AuditEntry;
  first: Date;
  last: Date;
  count: number;
}

const toRow = (e: AuditEntry, cached: boolean, at: Date): IssuanceRow => ({
  issued_at: at,
  username: e.username,
  dataset: e.dataset,
  access: e.access,
  kind: e.kind,
  provider: e.provider,
  cached,
  expires_at: e.expiresAt,
  client_ip: e.clientIp,
  credential_id: e.credentialId,
});

/**
 * Group commit: rows that arrive while a write is in flight go out together in the next
 * insert. Each caller waits for its own rows, yet a burst costs one round trip.
 */
function groupCommit(repo: IssuancesRepository) {
  const queue: { rows: IssuanceRow[]; done: (err?: unknown) => void }[] = [];
  let draining: Promise<void> | null = null;
  async function drain(): Promise<void> {
    while (queue.length > 0) {
      let size = 0;
      let n = 0;
      while (n < queue.length && (n === 0 || size + queue[n]!.rows.length <= 500)) size += queue[n++]!.rows.length;
      const batch = queue.splice(0, n);
      try {
        await repo.record(batch.flatMap((b) => b.rows));
        for (const b of batch) b.done();
      } catch (err) {
        for (const b of batch) b.done(err);
      }
    }
    draining = null;
  }
  return {
    write(rows: IssuanceRow[]): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        queue.push({ rows, done: (err) => (err === undefined ? resolve() : reject(err as Error)) });
        draining ??= drain();
      });
    },
    /** Resolves when everything queued so far is written (or has failed). */
    async settle(): Promise<void> {
      while (draining) await draining;
    },
  };
}

/**
 * The issuance audit. What is new is durable before it is answered: a backend issuance (who got
 * which credentials, until when, from where) and a presigned URL each get their row first.
 * Handing out a cached credential again creates nothing new, so those repeat deliveries are
 * counted in memory per (credential, kind, client address) and written as one row per batch
 * (`deliveries`, first and last time) every `flushIntervalMs`, when `maxPending` batches are
 * waiting, and on close. A hot credential then costs one insert per interval rather than one per
 * request. The price: a kill -9 loses at most the last interval's repeat-delivery counts, never
 * an issuance.
 */
export function createAuditLog(repo: IssuancesRepository, opts: AuditLogOptions) {
  const writer = groupCommit(repo);
  let pending = new Map<string, Pending>();
  let closed = false;

  async function writePending(): Promise<void> {
    if (pending.size === 0) return;
    const batch = pending;
    pending = new Map();
    const rows = [...batch.values()].map((p) => ({
      ...toRow(p.entry, true, p.first),
      deliveries: p.count,
      last_at: p.count > 1 ? p.last : null,
    }));
    try {
      await writer.write(rows);
    } catch (err) {
      // Back into the pending set, merged with what arrived meanwhile, so the next write retries.
      for (const [key, p] of batch) {
        const now = pending.get(key);
        if (now) {
          now.count += p.count;
          now.first = p.first;
        } else pending.set(key, p);
      }
      throw err;
    }
  }

  async function flush(): Promise<void> {
    await writePending();
    await writer.settle();
  }

  const timer =
    opts.flushIntervalMs > 0
      ? setInterval(() => {
          const rows = pending.size;
          writePending().catch((err: unknown) => opts.onFlushError?.(err, rows));
        }, opts.flushIntervalMs)
      : undefined;
  // The timer alone must not keep a process alive; close() writes what is left.
  timer?.unref();

  return {
    /** A backend issuance or a presigned URL: stored before the caller answers. */
    issued(entry: AuditEntry, cached = false): Promise<void> {
      return writer.write([toRow(entry, cached, new Date())]);
    },

    /** A cached credential handed out again. Counted in memory unless the interval is 0. */
    async delivered(entry: AuditEntry): Promise<void> {
      const at = new Date();
      if (opts.flushIntervalMs === 0 || closed) return writer.write([toRow(entry, true, at)]);
      const key = `${entry.credentialId}\u0000${entry.kind}\u0000${entry.clientIp ?? ''}`;
      const p = pending.get(key);
      if (p) {
        p.count += 1;
        p.last = at;
        return;
      }
      // Bounded memory: a new batch waits for the pending ones to be written (and fails with them).
      if (pending.size >= opts.maxPending) await writePending();
      const again = pending.get(key);
      if (again) {
        again.count += 1;
        again.last = at;
      } else pending.set(key, { entry, first: at, last: at, count: 1 });
    },

    /** Writes everything recorded so far; rejects if the database refuses. */
    flush,

    /** Stop the timer and write what is pending; later deliveries are written one by one. */
    async close(): Promise<void> {
      closed = true;
      clearInterval(timer);
      await flush();
    },

    /** Repeat deliveries counted but not yet written. */
    get pendingDeliveries(): number {
      let n = 0;
      for (const p of pending.values()) n += p.count;
      return n;
    },
  };
}
export type AuditLog = ReturnType<typeof createAuditLog>;
