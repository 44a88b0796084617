/**
 * The audit log's failure rules, with a repository that can be told to fail (a real database
 * that refuses on cue is hard to arrange; audit-batching.test.ts covers the real database):
 * a failed write keeps its deliveries pending and the next write retries them, merged with what
 * came meanwhile; at the bound, a new batch waits for the write and fails with it.
 */
import { waitFor } from '@hubside/testing';
import { describe, expect, it } from 'vitest';
import { createAuditLog } from '../src/audit-log.js';
import type { AuditEntry } from '../src/audit-log.js';
import type { IssuanceRow, IssuancesRepository } from '../src/issuances.repository.js';

function flakyRepository() {
  const stored: IssuanceRow[] = [];
  const state = { failing: false };
  const repo: IssuancesRepository = {
    async record(rows) {
      if (state.failing) throw new Error('database unavailable');
      stored.push(...rows);
    },
    async list() {
      return [];
    },
  };
  return { repo, stored, state };
}

const entry = (clientIp: string, credentialId = 'c-1'): AuditEntry => ({
  username: 'alice',
  dataset: 'home',
  access: 'read',
  kind: 'credentials',
  provider: 's3',
  expiresAt: new Date(Date.now() + 3_600_000),
  clientIp,
  credentialId,
});

describe('audit log failures', () => {
  it('a failed write keeps the deliveries; the next write stores them with what came meanwhile', async () => {
    const { repo, stored, state } = flakyRepository();
    const log = createAuditLog(repo, { flushIntervalMs: 60_000, maxPending: 100 });
    for (let i = 0; i < 3; i += 1) await log.delivered(entry('10.0.0.1'));
    state.failing = true;
    await expect(log.flush()).rejects.toThrow('database unavailable');
    expect(log.pendingDeliveries).toBe(3);
    await log.delivered(entry('10.0.0.1'));
    await log.delivered(entry('10.0.0.2'));
    state.failing = false;
    await log.close();
    expect(stored.map((r) => [r.client_ip, r.deliveries])).toEqual([
      ['10.0.0.1', 4],
      ['10.0.0.2', 1],
    ]);
    expect(log.pendingDeliveries).toBe(0);
  });

  it('a failed timed write is reported and retried on the next tick', async () => {
    const { repo, stored, state } = flakyRepository();
    const errors: { message: string; rows: number }[] = [];
    const log = createAuditLog(repo, { flushIntervalMs: 20, maxPending: 100, onFlushError: (err, rows) => errors.push({ message: (err as Error).message, rows }) });
    state.failing = true;
    await log.delivered(entry('10.0.0.1'));
    await log.delivered(entry('10.0.0.2'));
    await waitFor(async () => errors.length > 0, { timeoutMs: 5_000, intervalMs: 10, what: 'the timer reports the failure' });
    expect(errors[0]).toEqual({ message: 'database unavailable', rows: 2 });
    state.failing = false;
    await waitFor(async () => stored.length === 2, { timeoutMs: 5_000, intervalMs: 10, what: 'the timer retries' });
    expect(log.pendingDeliveries).toBe(0);
    await log.close();
  });

  it('at the bound, a new batch fails with the database instead of growing memory', async () => {
    const { repo, state } = flakyRepository();
    const log = createAuditLog(repo, { flushIntervalMs: 60_000, maxPending: 2 });
    await log.delivered(entry('10.0.0.1'));
    await log.delivered(entry('10.0.0.2'));
    state.failing = true;
    // A repeat of a pending batch is only counted...
    await log.delivered(entry('10.0.0.1'));
    // ...but a third batch needs the two written first, and the database refuses.
    await expect(log.delivered(entry('10.0.0.3'))).rejects.toThrow('database unavailable');
    expect(log.pendingDeliveries).toBe(3);
    state.failing = false;
    await log.close();
  });

  it('an issuance is stored before issued() resolves, and its failure reaches the caller', async () => {
    const { repo, stored, state } = flakyRepository();
    const log = createAuditLog(repo, { flushIntervalMs: 60_000, maxPending: 10 });
    await log.issued(entry('10.0.0.1'));
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({ cached: false, client_ip: '10.0.0.1', credential_id: 'c-1' });
    state.failing = true;
    await expect(log.issued(entry('10.0.0.1', 'c-2'))).rejects.toThrow('database unavailable');
    state.failing = false;
    await log.close();
  });
});
