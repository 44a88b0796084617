/**
 * Operations against a real JupyterHub 3.0, one hub for the file:
 * - two collectors on one PostgreSQL never poll at once, and one takes over when the other stops;
 * - the pre-spawn hook fails open or closed, as configured, while the collector is down;
 * - servers over a hard budget are stopped through the hub API only when that is switched on.
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { resolveSettings } from '@hubside/service-kit';
import { createTestDatabase, freePort, startHub, waitFor } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, configSchema } from '../src/index.js';
import { POLL_LEASE_KEY } from '../src/sessions-repository.js';
import type { UsageDB } from '../src/usage.table.js';

const HUB_DIR = fileURLToPath(new URL('../../../hub', import.meta.url));
const SERVICE_TOKEN = randomBytes(24).toString('hex');
const USERS = ['ann', 'ben', 'cal', 'openu', 'closedu', 'heavy', 'light'];

let hub: RunningHub;
let downUrl: string;
const apps: FastifyInstance[] = [];
const dbs: TestDatabase[] = [];

beforeAll(async () => {
  // Nothing listens here: the collector the hook asks is down for this whole file.
  downUrl = `http://127.0.0.1:${await freePort()}/services/usage-collector/`;
  hub = await startHub({
    users: USERS,
    roles: [
      {
        name: 'usage-collector',
        scopes: ['list:users', 'read:users', 'read:servers', 'read:groups', 'list:groups', 'delete:servers'],
        services: ['usage-collector'],
      },
    ],
    services: [{ name: 'usage-collector', apiToken: SERVICE_TOKEN }],
    extraConfig: [
      'import sys',
      `sys.path.insert(0, ${JSON.stringify(HUB_DIR)})`,
      'from usage_quota import make_usage_quota_hook',
      `_open = make_usage_quota_hook(${JSON.stringify(downUrl)}, ${JSON.stringify(SERVICE_TOKEN)}, fail_open=True, timeout=3)`,
      `_closed = make_usage_quota_hook(${JSON.stringify(downUrl)}, ${JSON.stringify(SERVICE_TOKEN)}, fail_open=False, timeout=3)`,
      'c.Spawner.pre_spawn_hook = lambda spawner: (_closed if spawner.user.name.startswith("closed") else _open)(spawner)',
    ].join('\n'),
  });
}, 120_000);

afterAll(async () => {
  for (const app of apps) await app.close().catch(() => undefined);
  await hub?.stop();
  for (const d of dbs) await d.drop();
});

async function collector(over: Record<string, unknown>, opts: { engine?: 'postgres' | 'pglite'; database?: TestDatabase; autoPoll?: boolean } = {}) {
  const database = opts.database ?? (await createTestDatabase({ schemas: ['usage_collector'], ...(opts.engine ? { engine: opts.engine } : {}) }));
  if (!opts.database) dbs.push(database);
  const settings = resolveSettings('usage-collector', {
    JUPYTERHUB_API_URL: hub.hubApiUrl,
    JUPYTERHUB_API_TOKEN: SERVICE_TOKEN,
    HUBSIDE_DATA_DIR: database.dataDir,
    ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
  });
  const app = await buildApp({ settings, config: configSchema.parse(over), logger: false, defaultMetrics: false, autoPoll: opts.autoPoll ?? false, pollIntervalMs: 100 });
  apps.push(app);
  await app.ready();
  return { app, database, db: app.db as Kysely<UsageDB> };
}

async function polls(app: FastifyInstance, result: string): Promise<number> {
  const metric = await app.kit.metrics.registry.getSingleMetric('hubside_usage_polls_total')?.get();
  return metric?.values.find((v) => v.labels.result === result)?.value ?? 0;
}

async function hubServers(user: string): Promise<string[]> {
  const r = await hub.api<{ servers: Record<string, unknown> }>('GET', `/users/${user}`);
  return Object.keys(r.body.servers);
}

describe('the pre-spawn hook with the collector down', () => {
  it('fail-open lets the spawn go ahead', async () => {
    await hub.startServer('openu');
    expect(await hubServers('openu')).toEqual(['']);
    await hub.stopServer('openu');
  }, 60_000);

  it('fail-closed refuses it with 503 and a message that says why', async () => {
    const token = await hub.createToken('closedu');
    const refused = await hub.api<{ message: string }>('POST', '/users/closedu/server', {}, token);
    expect(refused.status).toBe(503);
    expect(refused.body.message).toContain('could not check your budget');
    expect(await hubServers('closedu')).toEqual([]);
  }, 60_000);
});

describe('two replicas on one PostgreSQL', () => {
  it('never poll at once, and one takes over when the other stops', async () => {
    await hub.startServer('ann');
    await hub.startServer('ben', { name: 'lab' });
    const first = await collector({}, { engine: 'postgres', autoPoll: true });
    const second = await collector({}, { database: first.database, autoPoll: true });
    const a = first.app;
    const b = second.app;
    // Read through the replica that stays up.
    const db = second.db;
    const pollRows = () => db.selectFrom('polls').select(['started', 'at']).orderBy('started').execute();

    // Both poll every 100 ms, competing for the lease; both get turns.
    await waitFor(async () => (await polls(a, 'ok')) >= 3 && (await polls(b, 'ok')) >= 3 && (await pollRows()).length >= 10, { timeoutMs: 30_000, what: 'both replicas to poll' });
    // A third party holds the lease (as a replica mid-poll would): nobody polls, nothing is written.
    const holder = new pg.Client({ connectionString: first.database.databaseUrl });
    holder.on('error', () => {});
    await holder.connect();
    await holder.query('select pg_advisory_lock($1)', [String(POLL_LEASE_KEY)]);
    const held = (await pollRows()).length;
    const skippedA = await polls(a, 'skipped-locked');
    const skippedB = await polls(b, 'skipped-locked');
    await waitFor(async () => (await polls(a, 'skipped-locked')) >= skippedA + 3 && (await polls(b, 'skipped-locked')) >= skippedB + 3, { timeoutMs: 20_000, what: 'both replicas to find the lease taken' });
    expect((await pollRows()).length).toBe(held);
    // The holder dies without unlocking: its connection closing frees the lease.
    await holder.end();
    await waitFor(async () => (await pollRows()).length > held, { timeoutMs: 20_000, what: 'polling to resume' });

    // Every poll, whichever replica ran it, began after the previous one had finished.
    const rows = await pollRows();
    for (let i = 1; i < rows.length; i += 1) expect(new Date(rows[i]!.started!).getTime()).toBeGreaterThanOrEqual(new Date(rows[i - 1]!.at).getTime());
    const sessions = await db.selectFrom('sessions').select(['user_name', 'server_name']).orderBy('user_name').execute();
    expect(sessions).toEqual([
      { user_name: 'ann', server_name: '' },
      { user_name: 'ben', server_name: 'lab' },
    ]);

    // The first replica stops; the second alone records what happens next.
    await a.close();
    const okB = await polls(b, 'ok');
    await hub.startServer('cal');
    await hub.stopServer('ann');
    await waitFor(
      async () => {
        const r = await db.selectFrom('sessions').select(['user_name', 'stopped']).execute();
        return r.some((s) => s.user_name === 'cal') && r.some((s) => s.user_name === 'ann' && s.stopped !== null);
      },
      { timeoutMs: 30_000, what: 'the remaining replica to record the changes' },
    );
    expect(await polls(b, 'ok')).toBeGreaterThan(okB);
    expect(await db.selectFrom('sessions').select('id').execute()).toHaveLength(3);
    await b.close();
    await hub.stopServer('ben', 'lab');
    await hub.stopServer('cal');
  }, 120_000);
});

describe('stopping servers over a hard limit', () => {
  const config = (stopOverLimit: boolean) => ({
    rateCards: [{ id: 'c', effectiveFrom: '2020-01-01', defaultProfileHour: '1.00', incrementSeconds: 60 }],
    budgets: { users: { heavy: { limit: '2', window: 'rolling', days: 7 } }, default: { limit: '100', window: 'rolling', days: 7 }, stopOverLimit },
  });

  async function overBudget(db: Kysely<UsageDB>): Promise<void> {
    // heavy ran 3 h yesterday: 3.00 over a 2.00 budget.
    const t = Date.now() - 86_400_000;
    await db
      .insertInto('sessions')
      .values({
        user_name: 'heavy',
        server_name: 'old',
        started: new Date(t),
        user_options: '{}',
        resources: '{}',
        groups: '[]',
        first_seen: new Date(t),
        last_seen: new Date(t + 3 * 3_600_000),
        stopped: new Date(t + 3 * 3_600_000),
        stop_observed: new Date(t + 3 * 3_600_000),
        stop_source: 'poll',
      })
      .execute();
  }

  it('is off by default: over budget, the server keeps running', async () => {
    expect(configSchema.parse({}).budgets.stopOverLimit).toBe(false);
    await hub.startServer('heavy');
    await hub.startServer('light');
    const { app, db } = await collector(config(false));
    await overBudget(db);
    expect(await app.usagePoller.pollOnce()).toMatchObject({ locked: true, servers: 2 });
    expect(await hubServers('heavy')).toEqual(['']);
    await app.close();
  }, 60_000);

  it('when on, stops the over-budget user’s servers through the hub API and leaves others alone', async () => {
    const { app, db } = await collector(config(true));
    await overBudget(db);
    await app.usagePoller.pollOnce();
    await waitFor(async () => (await hubServers('heavy')).length === 0, { timeoutMs: 30_000, what: 'the hub to stop heavy’s server' });
    expect(await hubServers('light')).toEqual(['']);
    // The next poll closes the session the stop ended.
    await app.usagePoller.pollOnce();
    const heavy = await db.selectFrom('sessions').select(['server_name', 'stopped']).where('user_name', '=', 'heavy').where('server_name', '=', '').executeTakeFirstOrThrow();
    expect(heavy.stopped).not.toBeNull();
    await app.close();
    await hub.stopServer('light');
  }, 60_000);
});
