/**
 * Model-based: fast-check drives random sequences of group changes (through a real JupyterHub's
 * API), credential requests and presigns by several users, and a model says what each user's
 * current groups allow. After every step: no 5xx, no answer slower than the bound, and nobody
 * gets a dataset, prefix or access their groups do not allow right now (groupCheckSeconds: 0, so
 * "right now" is exact). The storage backend is a stand-in; the decision is what is under test.
 */
import { resolveSettings } from '@hubside/service-kit';
import { createTestDatabase, startHub } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../src/app.js';
import type { Backend } from '../src/backends/types.js';
import { configSchema } from '../src/config.js';

const PREFIX = '/services/data-gateway/';
const USERS = ['ann', 'ben', 'cy'] as const;
const GROUPS = ['climate', 'ocean'] as const;
/** The slowest answer we accept from the gateway, hub round trips included, on a busy machine. */
const BOUND_MS = 3000;
type User = (typeof USERS)[number];
type Group = (typeof GROUPS)[number];

const s3 = { provider: 's3-compatible', bucket: 'hub-data', endpoint: 'http://127.0.0.1:9', s3: { roleArn: 'arn:aws:iam:::role/r' } };
const DATASETS = {
  home: { ...s3, prefix: 'home/{username}/', access: 'read-write' },
  'climate-shared': { ...s3, prefix: 'shared/climate/', access: 'read', groups: ['climate'] },
  teams: { ...s3, prefix: 'groups/{group}/', access: 'read-write', groups: ['climate', 'ocean'] },
} as const;
type Dataset = keyof typeof DATASETS;

let hub: RunningHub;
let database: TestDatabase;
let app: FastifyInstance;
const tokens: Record<string, string> = {};

const backend: Backend = {
  name: 'stand-in-sts',
  async issue(req) {
    return {
      provider: req.dataset.provider,
      credentials: { accessKeyId: `AK-${req.username}-${req.grant.prefixes.join(',')}`, secretAccessKey: 'x', sessionToken: 'y' },
      expiration: new Date(Date.now() + req.durationSeconds * 1000),
    };
  },
  async presign({ key, method }) {
    return `http://127.0.0.1:9/hub-data/${key}?method=${method}`;
  },
};

beforeAll(async () => {
  const serviceToken = `svc-${crypto.randomUUID()}`;
  hub = await startHub({
    users: [...USERS],
    groups: { climate: [], ocean: [] },
    services: [{ name: 'data-gateway', apiToken: serviceToken }],
    roles: [{ name: 'gateway-users', scopes: ['access:services!service=data-gateway'], users: [...USERS] }],
  });
  for (const user of USERS) tokens[user] = await hub.createToken(user, { note: 'model' });
  database = await createTestDatabase({ schemas: ['data_gateway'] });
  const settings = resolveSettings('data-gateway', {
    JUPYTERHUB_API_URL: hub.hubApiUrl,
    JUPYTERHUB_API_TOKEN: serviceToken,
    HUBSIDE_DATA_DIR: database.dataDir,
    HUBSIDE_RATE_LIMIT_USER: '0',
    HUBSIDE_MAX_EVENT_LOOP_DELAY: '0',
    ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
  });
  const config = configSchema.parse({ groupCheckSeconds: 0, groupLifetimeSeconds: 900, datasets: DATASETS });
  app = await buildApp({ settings, config, logger: false, defaultMetrics: false }, { backends: { 's3-compatible': backend } });
}, 90_000);

afterAll(async () => {
  await app?.close();
  await database?.drop();
  await hub?.stop();
});

interface Model {
  groups: Record<User, Set<Group>>;
}

/** The prefixes a user may have in a dataset now, or undefined when the dataset is not theirs. */
function allowed(model: Model, user: User, dataset: Dataset): string[] | undefined {
  const d = DATASETS[dataset];
  if (!('groups' in d)) return [`home/${user}/`];
  const mine = d.groups.filter((g) => model.groups[user].has(g as Group));
  if (mine.length === 0) return undefined;
  return d.prefix.includes('{group}') ? mine.map((g) => `groups/${g}/`).sort() : [d.prefix];
}

async function timed<T>(what: string, run: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const out = await run();
  const ms = performance.now() - started;
  expect(ms, `${what} took ${Math.round(ms)} ms`).toBeLessThan(BOUND_MS);
  return out;
}

type Real = { app: FastifyInstance };

class Join implements fc.AsyncCommand<Model, Real> {
  readonly user: User;
  readonly group: Group;
  constructor(user: User, group: Group) {
    this.user = user; this.group = group;
  }
  check = () => true;
  async run(m: Model) {
    const res = await hub.api('POST', `/groups/${this.group}/users`, { users: [this.user] });
    expect(res.status).toBe(200);
    m.groups[this.user].add(this.group);
  }
  toString = () => `join(${this.user}, ${this.group})`;
}

class Leave implements fc.AsyncCommand<Model, Real> {
  readonly user: User;
  readonly group: Group;
  constructor(user: User, group: Group) {
    this.user = user; this.group = group;
  }
  check = () => true;
  async run(m: Model) {
    const res = await hub.api('DELETE', `/groups/${this.group}/users`, { users: [this.user] });
    expect(res.status).toBe(200);
    m.groups[this.user].delete(this.group);
  }
  toString = () => `leave(${this.user}, ${this.group})`;
}

class Credentials implements fc.AsyncCommand<Model, Real> {
  readonly user: User;
  readonly dataset: Dataset;
  readonly access: 'read' | 'read-write';
  constructor(user: User, dataset: Dataset, access: 'read' | 'read-write') {
    this.user = user; this.dataset = dataset; this.access = access;
  }
  check = () => true;
  async run(m: Model, r: Real) {
    const res = await timed(this.toString(), () =>
      r.app.inject({ method: 'POST', url: `${PREFIX}api/credentials`, headers: { authorization: `token ${tokens[this.user]}` }, payload: { dataset: this.dataset, access: this.access } }),
    );
    expect(res.statusCode, res.body).toBeLessThan(500);
    const may = allowed(m, this.user, this.dataset);
    const writable = DATASETS[this.dataset].access === 'read-write';
    if (!may || (this.access === 'read-write' && !writable)) {
      expect(res.statusCode, `${this} should be refused: ${res.body}`).toBe(403);
      return;
    }
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json() as { prefixes: string[]; access: string; credentials: { accessKeyId: string } };
    expect(body.prefixes).toEqual(may);
    expect(body.access).toBe(this.access);
    // The credentials themselves were issued for exactly these prefixes (never a cached wider set).
    expect(body.credentials.accessKeyId).toBe(`AK-${this.user}-${may.join(',')}`);
  }
  toString = () => `credentials(${this.user}, ${this.dataset}, ${this.access})`;
}

class Presign implements fc.AsyncCommand<Model, Real> {
  readonly user: User;
  readonly dataset: Dataset;
  readonly owner: User | Group;
  readonly method: 'GET' | 'PUT';
  constructor(user: User, dataset: Dataset, owner: User | Group, method: 'GET' | 'PUT') {
    this.user = user; this.dataset = dataset; this.owner = owner; this.method = method;
  }
  check = () => true;
  get key() {
    const d = DATASETS[this.dataset];
    if (d.prefix.includes('{username}')) return `home/${this.owner}/f.txt`;
    if (d.prefix.includes('{group}')) return `groups/${this.owner}/f.txt`;
    return `${d.prefix}f.txt`;
  }
  async run(m: Model, r: Real) {
    const res = await timed(this.toString(), () =>
      r.app.inject({ method: 'POST', url: `${PREFIX}api/presign`, headers: { authorization: `token ${tokens[this.user]}` }, payload: { dataset: this.dataset, key: this.key, method: this.method } }),
    );
    expect(res.statusCode, res.body).toBeLessThan(500);
    const may = allowed(m, this.user, this.dataset);
    const writable = DATASETS[this.dataset].access === 'read-write';
    const ok = may !== undefined && may.some((p) => this.key.startsWith(p)) && (this.method === 'GET' || writable);
    expect(res.statusCode, `${this}: ${res.body}`).toBe(ok ? 200 : 403);
  }
  toString = () => `presign(${this.user}, ${this.dataset}, ${this.key}, ${this.method})`;
}

class List implements fc.AsyncCommand<Model, Real> {
  readonly user: User;
  constructor(user: User) {
    this.user = user;
  }
  check = () => true;
  async run(m: Model, r: Real) {
    const res = await timed(this.toString(), () => r.app.inject({ url: `${PREFIX}api/datasets`, headers: { authorization: `token ${tokens[this.user]}` } }));
    expect(res.statusCode, res.body).toBe(200);
    const names = (res.json() as { datasets: { name: string }[] }).datasets.map((d) => d.name).sort();
    expect(names).toEqual((Object.keys(DATASETS) as Dataset[]).filter((d) => allowed(m, this.user, d)).sort());
  }
  toString = () => `list(${this.user})`;
}

const user = fc.constantFrom(...USERS);
const group = fc.constantFrom(...GROUPS);
const dataset = fc.constantFrom(...(Object.keys(DATASETS) as Dataset[]));
const commands = [
  fc.tuple(user, group).map(([u, g]) => new Join(u, g)),
  fc.tuple(user, group).map(([u, g]) => new Leave(u, g)),
  fc.tuple(user, dataset, fc.constantFrom('read' as const, 'read-write' as const)).map(([u, d, a]) => new Credentials(u, d, a)),
  fc.tuple(user, dataset, fc.constantFrom<User | Group>(...USERS, ...GROUPS), fc.constantFrom('GET' as const, 'PUT' as const)).map(([u, d, o, m]) => new Presign(u, d, o, m)),
  user.map((u) => new List(u)),
];

describe('group changes, issuances and presigns by several users (model-based)', () => {
  it('never answers 5xx, never slower than the bound, never beyond a user\u2019s current groups', async () => {
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 25 }), async (cmds) => {
        // Every run starts from nobody in any group, as the model does.
        for (const g of GROUPS) await hub.api('DELETE', `/groups/${g}/users`, { users: [...USERS] });
        const model: Model = { groups: { ann: new Set(), ben: new Set(), cy: new Set() } };
        await fc.asyncModelRun(() => ({ model, real: { app } }), cmds);
      }),
      { numRuns: 12, seed: Number(process.env.HUBSIDE_FUZZ_SEED ?? Date.now() % 2 ** 31) },
    );
  }, 240_000);
});
