import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import type { Resources } from './config.js';
import type { PricedSession } from './pricing.js';
import type { UsageDB } from './usage.table.js';

/** One running server as a poll saw it. */
export interface ObservedServer {
  user: string;
  server: string;
  started: Date;
  profile: string | null;
  userOptions: Record<string, unknown>;
  resources: Resources;
  groups: string[];
  lastActivity: Date | null;
}

export interface ReconcileResult {
  /** false when another replica holds the poll lock; nothing was written. */
  locked: boolean;
  servers: number;
  opened: number;
  closed: number;
}

// Fixed keys: every replica of this service competes for the same locks. The lease is held (on one
// connection) for a whole poll, hub listing included; the reconcile lock guards the write itself.
export const POLL_LEASE_KEY = 7_151_842_000n;
const POLL_LOCK_KEY = 7_151_842_001n;
const BATCH = 500;

export interface SessionRow {
  id: string;
  user_name: string;
  server_name: string;
  started: Date;
  profile: string | null;
  user_options: Record<string, unknown>;
  resources: Resources;
  groups: string[];
  last_activity: Date | null;
  first_seen: Date;
  last_seen: Date;
  stopped: Date | null;
  stop_observed: Date | null;
  stop_source: string | null;
}

function asJson<T>(v: unknown): T {
  // pg returns jsonb parsed; PGlite too, but be safe with drivers that return text.
  return (typeof v === 'string' ? JSON.parse(v) : v) as T;
}

function toRow(r: Record<string, unknown>): SessionRow {
  return {
    ...(r as unknown as SessionRow),
    id: String(r.id),
    started: new Date(r.started as string),
    first_seen: new Date(r.first_seen as string),
    last_seen: new Date(r.last_seen as string),
    last_activity: r.last_activity ? new Date(r.last_activity as string) : null,
    stopped: r.stopped ? new Date(r.stopped as string) : null,
    stop_observed: r.stop_observed ? new Date(r.stop_observed as string) : null,
    user_options: asJson(r.user_options),
    resources: asJson(r.resources),
    groups: asJson(r.groups),
  };
}

export function toPriced(row: SessionRow, now: Date): PricedSession {
  return {
    user: row.user_name,
    groups: row.groups,
    profile: row.profile,
    resources: row.resources,
    start: row.started,
    // An open session is billed up to the last poll that saw it, never beyond what was observed.
    end: row.stopped ?? (row.last_seen < now ? row.last_seen : now),
  };
}

export function sessionsRepository(db: Kysely<UsageDB>) {
  return {
    /** The database behind the repository, for readers that also need the rollups. */
    db,
    /**
     * Fold one complete poll into the sessions table, atomically: either every server of the
     * poll is recorded and every vanished one closed, or nothing changes.
     */
    async reconcile(observed: readonly ObservedServer[], now: Date, pollStarted?: Date): Promise<ReconcileResult> {
      return db.transaction().execute(async (trx) => {
        const lock = await sql<{ ok: boolean }>`select pg_try_advisory_xact_lock(${POLL_LOCK_KEY}) as ok`.execute(trx);
        if (!lock.rows[0]?.ok) return { locked: false, servers: observed.length, opened: 0, closed: 0 };

        const before = await trx.selectFrom('sessions').select(['id', 'user_name', 'server_name', 'started']).where('stopped', 'is', null).execute();
        const key = (u: string, s: string, t: number) => JSON.stringify([u, s, t]);
        const openKeys = new Set(before.map((r) => key(r.user_name, r.server_name, new Date(r.started).getTime())));
        let opened = 0;
        for (let i = 0; i < observed.length; i += BATCH) {
          const chunk = observed.slice(i, i + BATCH);
          for (const o of chunk) if (!openKeys.has(key(o.user, o.server, o.started.getTime()))) opened += 1;
          await trx
            .insertInto('sessions')
            .values(
              chunk.map((o) => ({
                user_name: o.user,
                server_name: o.server,
                started: o.started,
                profile: o.profile,
                user_options: JSON.stringify(o.userOptions),
                resources: JSON.stringify(o.resources),
                groups: JSON.stringify(o.groups),
                last_activity: o.lastActivity,
                first_seen: now,
                last_seen: now,
              })),
            )
            .onConflict((oc) =>
              oc.constraint('sessions_identity').doUpdateSet((eb) => ({
                last_seen: sql`greatest(sessions.last_seen, ${eb.ref('excluded.last_seen')})`,
                last_activity: eb.ref('excluded.last_activity'),
                groups: eb.ref('excluded.groups'),
                // Seen again with the same start: it never stopped (e.g. a poll saw a partial listing).
                stopped: null,
                stop_observed: null,
                stop_source: null,
              })),
            )
            .execute();
        }

        const seen = new Set(observed.map((o) => key(o.user, o.server, o.started.getTime())));
        const seenServers = new Set(observed.map((o) => JSON.stringify([o.user, o.server])));
        const gone = before.filter((r) => !seen.has(key(r.user_name, r.server_name, new Date(r.started).getTime())));
        for (const source of ['restart', 'poll'] as const) {
          const ids = gone
            .filter((r) => seenServers.has(JSON.stringify([r.user_name, r.server_name])) === (source === 'restart'))
            .map((r) => r.id);
          for (let i = 0; i < ids.length; i += BATCH) {
            await trx
              .updateTable('sessions')
              // The stop lies between the last poll that saw it and this one; record the earlier bound.
              .set((eb) => ({ stopped: eb.ref('last_seen'), stop_observed: now, stop_source: source }))
              .where('id', 'in', ids.slice(i, i + BATCH))
              .where('stopped', 'is', null)
              .execute();
          }
        }
        await trx.insertInto('polls').values({ started: pollStarted ?? null, at: now, servers: observed.length, opened, closed: gone.length }).execute();
        return { locked: true, servers: observed.length, opened, closed: gone.length };
      });
    },

    /** Sessions overlapping [from, to), optionally for some users or groups. */
    async overlapping(opts: { from: Date; to: Date; users?: readonly string[]; groups?: readonly string[] }): Promise<SessionRow[]> {
      let q = db
        .selectFrom('sessions')
        .selectAll()
        .where('started', '<', opts.to)
        .where((eb) => eb.or([eb('stopped', 'is', null), eb('stopped', '>', opts.from)]));
      if (opts.users) {
        if (opts.users.length === 0) return [];
        q = q.where('user_name', 'in', [...opts.users]);
      }
      if (opts.groups) {
        if (opts.groups.length === 0) return [];
        const groups = [...opts.groups];
        q = q.where((eb) => eb.or(groups.map((g) => eb(sql`groups`, '@>', sql`${JSON.stringify([g])}::jsonb`))));
      }
      const rows = await q.orderBy('started').orderBy('id').execute();
      return rows.map((r) => toRow(r as unknown as Record<string, unknown>));
    },

    /**
     * Runs `fn` only if no other replica is polling: a session advisory lock on one reserved
     * connection, released when `fn` ends or, if the process dies, when its connection closes.
     * PGlite is one process's private database, so there is nobody to exclude.
     */
    async underPollLease<T>(kind: 'postgres' | 'pglite', fn: () => Promise<T>): Promise<{ locked: true; value: T } | { locked: false }> {
      if (kind === 'pglite') return { locked: true, value: await fn() };
      return db.connection().execute(async (conn) => {
        const got = await sql<{ ok: boolean }>`select pg_try_advisory_lock(${POLL_LEASE_KEY}) as ok`.execute(conn);
        if (!got.rows[0]?.ok) return { locked: false as const };
        try {
          return { locked: true as const, value: await fn() };
        } finally {
          await sql`select pg_advisory_unlock(${POLL_LEASE_KEY})`.execute(conn);
        }
      });
    },

    /** Whether the user has any usage, raw or rolled up (rollups outlive raw sessions). */
    async knownUser(name: string): Promise<boolean> {
      const r = await db.selectFrom('sessions').select('id').where('user_name', '=', name).limit(1).executeTakeFirst();
      if (r !== undefined) return true;
      return (await db.selectFrom('daily_usage').select('day').where('user_name', '=', name).limit(1).executeTakeFirst()) !== undefined;
    },

    /** The user's groups as last recorded (latest raw session, else latest rolled-up day). */
    async lastGroups(name: string): Promise<string[] | null> {
      const raw = await db.selectFrom('sessions').select('groups').where('user_name', '=', name).orderBy('started', 'desc').limit(1).executeTakeFirst();
      if (raw) return asJson<string[]>(raw.groups);
      const day = await db.selectFrom('daily_usage').select('groups').where('user_name', '=', name).orderBy('day', 'desc').limit(1).executeTakeFirst();
      return day ? asJson<string[]>(day.groups) : null;
    },

    async knownGroup(name: string): Promise<boolean> {
      const contains = sql<boolean>`groups @> ${JSON.stringify([name])}::jsonb`;
      const r = await db.selectFrom('sessions').select('id').where(contains).limit(1).executeTakeFirst();
      if (r !== undefined) return true;
      return (await db.selectFrom('daily_usage').select('day').where(contains).limit(1).executeTakeFirst()) !== undefined;
    },

    async lastPoll(): Promise<Date | null> {
      const r = await db.selectFrom('polls').select('at').orderBy('id', 'desc').limit(1).executeTakeFirst();
      return r ? new Date(r.at) : null;
    },
  };
}
export type SessionsRepository = ReturnType<typeof sessionsRepository>;
