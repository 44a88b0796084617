import * as crypto from 'node:crypto';
import type { HubIdentity, HubTokenOwner } from './models.js';
import { toIdentity } from './models.js';

export type CacheResult = 'hit' | 'negative_hit' | 'miss' | 'joined';

export interface IdentityCacheOptions {
  resolve: (token: string) => Promise<HubTokenOwner | null>;
  /** How long a resolved identity is trusted. JupyterHub's HubAuth uses 300 s. */
  ttlMs?: number;
  /** How long a rejected token stays rejected without asking the hub again. */
  failureTtlMs?: number;
  /** Bound on entries, so a flood of random tokens cannot grow memory without limit. */
  maxEntries?: number;
  onResult?: (result: CacheResult) => void;
  now?: () => number;
}

interface Entry {
  identity: HubIdentity | null;
  expiresAt: number;
}

/** Tokens are never kept as keys: only their SHA-256, so a heap dump shows no credentials. */
export function tokenKey(token: string): string {
  // One-shot hashing (Node ≥ 20.12) costs about half of a createHash() object per request.
  return typeof crypto.hash === 'function'
    ? crypto.hash('sha256', token, 'base64url')
    : crypto.createHash('sha256').update(token).digest('base64url');
}

/**
 * Resolves tokens to identities through the hub with a TTL cache, a short negative cache,
 * and one in-flight hub request per token however many callers ask at once.
 */
export class IdentityCache {
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Map<string, Promise<HubIdentity | null>>();
  readonly #resolve: IdentityCacheOptions['resolve'];
  readonly #ttlMs: number;
  readonly #failureTtlMs: number;
  readonly #maxEntries: number;
  readonly #onResult: ((result: CacheResult) => void) | undefined;
  readonly #now: () => number;

  constructor(opts: IdentityCacheOptions) {
    this.#resolve = opts.resolve;
    this.#ttlMs = opts.ttlMs ?? 300_000;
    this.#failureTtlMs = opts.failureTtlMs ?? 10_000;
    this.#maxEntries = opts.maxEntries ?? 50_000;
    this.#onResult = opts.onResult;
    this.#now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Forget a token, e.g. on logout. */
  forget(token: string): void {
    this.#entries.delete(tokenKey(token));
  }

  /** Remember an identity learnt another way (the OAuth callback already asked the hub). */
  remember(token: string, owner: HubTokenOwner): HubIdentity {
    const identity = toIdentity(owner);
    this.#store(tokenKey(token), identity, this.#ttlMs);
    return identity;
  }

  #store(key: string, identity: HubIdentity | null, ttl: number): void {
    if (ttl <= 0) return;
    this.#entries.delete(key);
    this.#entries.set(key, { identity, expiresAt: this.#now() + ttl });
    if (this.#entries.size > this.#maxEntries) {
      // Map iterates in insertion order: the first key is the oldest entry.
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
  }

  /**
   * The identity behind `token`, or null if the hub rejects it. Hub outages reject with the
   * hub client's error and are not cached, so recovery is immediate.
   */
  async get(token: string): Promise<HubIdentity | null> {
    const key = tokenKey(token);
    const entry = this.#entries.get(key);
    if (entry) {
      if (entry.expiresAt > this.#now()) {
        this.#onResult?.(entry.identity ? 'hit' : 'negative_hit');
        return entry.identity;
      }
      this.#entries.delete(key);
    }
    const pending = this.#inflight.get(key);
    if (pending) {
      this.#onResult?.('joined');
      return pending;
    }
    this.#onResult?.('miss');
    const lookup = (async () => {
      try {
        const owner = await this.#resolve(token);
        const identity = owner ? toIdentity(owner) : null;
        this.#store(key, identity, identity ? this.#ttlMs : this.#failureTtlMs);
        return identity;
      } finally {
        this.#inflight.delete(key);
      }
    })();
    this.#inflight.set(key, lookup);
    return lookup;
  }
}
