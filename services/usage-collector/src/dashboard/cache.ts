/**
 * A small cache for the course and hub views. Their inputs change only when a poll lands (a new
 * `polls` row) or a session is added, so an answer is reused while both ids stay the same, for at
 * most `ttlMs` (budget windows and forecasts move with the clock). Concurrent requests for the
 * same key share one computation. One cache per app instance; replicas each keep their own.
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';

interface Entry<T> {
  version: string;
  at: number;
  value: Promise<T>;
}

export interface ViewCacheOptions {
  ttlMs?: number;
  maxEntries?: number;
  now?: () => number;
}

export function createViewCache(db: Kysely<any>, opts: ViewCacheOptions = {}) {
  const ttlMs = opts.ttlMs ?? 60_000;
  const maxEntries = opts.maxEntries ?? 64;
  const clock = opts.now ?? Date.now;
  const entries = new Map<string, Entry<unknown>>();

  /** Both are primary-key maxima: an index lookup each, whatever the table size. */
  async function readVersion(): Promise<string> {
    const r = await sql<{ p: string | null; s: string | null }>`select (select max(id) from polls)::text as p, (select max(id) from sessions)::text as s`.execute(db);
    return `${r.rows[0]?.p ?? 0}/${r.rows[0]?.s ?? 0}`;
  }
  // Requests that arrive together share one version lookup, so the first to resume creates the
  // entry and the others find it (their continuations run after it, on the same promise).
  let inflight: Promise<string> | undefined;
  function version(): Promise<string> {
    if (!inflight) {
      inflight = readVersion();
      const mine = inflight;
      mine.then(
        () => (inflight === mine ? (inflight = undefined) : undefined),
        () => (inflight === mine ? (inflight = undefined) : undefined),
      );
    }
    return inflight;
  }

  return {
    async get<T>(key: string, compute: () => Promise<T>): Promise<T> {
      const v = await version();
      const hit = entries.get(key) as Entry<T> | undefined;
      if (hit && hit.version === v && clock() - hit.at < ttlMs) {
        // Refresh its place: the map's order is the eviction order.
        entries.delete(key);
        entries.set(key, hit);
        return hit.value;
      }
      const value = compute();
      const entry: Entry<T> = { version: v, at: clock(), value };
      entries.set(key, entry);
      value.then(
        // The time to live counts from when the answer is ready: a slow computation is still worth reusing.
        () => (entry.at = clock()),
        // A failed computation is not remembered.
        () => {
          if (entries.get(key) === entry) entries.delete(key);
        },
      );
      while (entries.size > maxEntries) entries.delete(entries.keys().next().value!);
      return value;
    },
    clear(): void {
      entries.clear();
    },
  };
}
export type ViewCache = ReturnType<typeof createViewCache>;
