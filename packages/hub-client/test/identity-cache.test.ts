import { describe, expect, it } from 'vitest';
import { IdentityCache, tokenKey } from '../src/identity-cache.js';
import type { CacheResult } from '../src/identity-cache.js';
import type { HubTokenOwner } from '../src/models.js';

function owner(name: string): HubTokenOwner {
  return { kind: 'user', name, admin: false, groups: ['g'], server: null, pending: null, last_activity: null, scopes: ['s'] };
}

/** A resolver that answers when released, counting how often the "hub" was asked. */
function gatedResolver(answer: (token: string) => HubTokenOwner | null) {
  let calls = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  return {
    get calls() {
      return calls;
    },
    release,
    resolve: async (token: string) => {
      calls += 1;
      await gate;
      return answer(token);
    },
  };
}

describe('IdentityCache', () => {
  it('asks the hub once for many concurrent lookups of one new token', async () => {
    const hub = gatedResolver((t) => (t === 'good' ? owner('alice') : null));
    const results: CacheResult[] = [];
    const cache = new IdentityCache({ resolve: hub.resolve, onResult: (r) => results.push(r) });
    const lookups = Array.from({ length: 100 }, () => cache.get('good'));
    hub.release();
    const identities = await Promise.all(lookups);
    expect(hub.calls).toBe(1);
    expect(new Set(identities.map((i) => i?.name))).toEqual(new Set(['alice']));
    expect(results.filter((r) => r === 'miss')).toHaveLength(1);
    expect(results.filter((r) => r === 'joined')).toHaveLength(99);
    await cache.get('good');
    expect(hub.calls).toBe(1);
    expect(results.at(-1)).toBe('hit');
  });

  it('expires identities after the TTL and rejected tokens after the failure TTL', async () => {
    let now = 1_000;
    let calls = 0;
    const cache = new IdentityCache({
      resolve: async (t) => {
        calls += 1;
        return t === 'good' ? owner('bob') : null;
      },
      ttlMs: 300_000,
      failureTtlMs: 10_000,
      now: () => now,
    });
    expect(await cache.get('bad')).toBeNull();
    expect(await cache.get('bad')).toBeNull();
    expect(calls).toBe(1);
    now += 10_001;
    expect(await cache.get('bad')).toBeNull();
    expect(calls).toBe(2);
    expect((await cache.get('good'))?.name).toBe('bob');
    now += 299_999;
    await cache.get('good');
    expect(calls).toBe(3);
    now += 2;
    await cache.get('good');
    expect(calls).toBe(4);
  });

  it('does not cache hub outages, so recovery is immediate', async () => {
    let down = true;
    let calls = 0;
    const cache = new IdentityCache({
      resolve: async () => {
        calls += 1;
        if (down) throw new Error('hub down');
        return owner('carol');
      },
    });
    await expect(cache.get('t')).rejects.toThrow('hub down');
    down = false;
    expect((await cache.get('t'))?.name).toBe('carol');
    expect(calls).toBe(2);
  });

  it('stays within its entry bound under a flood of distinct tokens', async () => {
    const cache = new IdentityCache({ resolve: async () => null, maxEntries: 100 });
    for (let i = 0; i < 1_000; i += 1) await cache.get(`random-${i}`);
    expect(cache.size).toBe(100);
  });

  it('keys by SHA-256, never by the token itself', () => {
    const key = tokenKey('secret-token-value');
    expect(key).not.toContain('secret');
    expect(key).toHaveLength(43);
  });
});
