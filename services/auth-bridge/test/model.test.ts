/**
 * Model-based: fast-check drives random sequences of access-code creations and revocations (the
 * admin API, with a real JupyterHub's tokens), logins with and without a code, refreshes and
 * userinfo reads by several users, through the real chain (a hub-side relying party → the bridge
 * → two oidc-provider universities). A model says what each user's groups and admin status are
 * now. After every step: no 5xx, no read slower than the bound, and what the bridge asserts
 * (userinfo, refreshed tokens) is exactly what the user's current rights allow: a revoked code's
 * group and admin status are gone at once.
 */
import { createTestBrowser, createTestDatabase, freePort, startHub } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PREFIX, bridgeConfig, rpLogin, secretsEnv, startBridge, startUniversities } from './fixtures/setup.js';
import type { Universities } from './fixtures/setup.js';

const RP = { clientId: 'model-hub', secret: 'model-secret-0123456789abcdef', redirectUri: 'http://rp.invalid/hub/oauth_callback' };
/** The slowest read (userinfo, refresh) we accept, on a busy machine. */
const BOUND_MS = 3000;

/** Who each person is from their institution alone (fixtures/setup.ts), under this hub's rules. */
const PEOPLE = {
  alice: { uni: 'a', username: 'alice', groups: ['instructors'], admin: true },
  arno: { uni: 'a', username: 'arno', groups: ['students'], admin: false },
  bob: { uni: 'b', username: 'bob@uni-b.edu', groups: ['staff'], admin: false },
} as const;
type Person = keyof typeof PEOPLE;
const CODE_GROUPS = ['workshop', 'instructors'] as const;

let hub: RunningHub;
let database: TestDatabase;
let unis: Universities;
let app: FastifyInstance;
let issuer: string;
let base: string;
let adminToken: string;

beforeAll(async () => {
  const serviceToken = `svc-${crypto.randomUUID()}`;
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  issuer = `${base}${PREFIX}oidc`;
  [hub, database, unis] = await Promise.all([
    startHub({ admins: ['root'], users: ['root'], services: [{ name: 'auth-bridge', apiToken: serviceToken }] }),
    createTestDatabase({ schemas: ['auth_bridge'] }),
    startUniversities(base),
  ]);
  adminToken = await hub.createToken('root');
  const config = bridgeConfig(
    unis,
    {
      model: {
        clientId: RP.clientId,
        clientSecret: RP.secret,
        redirectUris: [RP.redirectUri],
        allowedDomains: ['uni-a.edu', '*.uni-a.edu', 'uni-b.edu'],
        groupMap: { 'uni-a:physics-staff': 'instructors', students: 'students', faculty: 'staff' },
        adminGroups: ['instructors'],
      },
    },
    base,
  );
  app = await startBridge({ port, config, dataDir: database.dataDir, databaseUrl: database.databaseUrl, env: secretsEnv(unis), hub: { apiUrl: hub.hubApiUrl, token: serviceToken } });
}, 120_000);

afterAll(async () => {
  await app?.close();
  await unis?.close();
  await database?.drop();
  await hub?.stop();
});

interface Code {
  id: string;
  code: string;
  group: string;
  maxUses: number;
  uses: number;
  revoked: boolean;
}
interface Model {
  codes: Code[];
  /** The codes each person redeemed (their memberships). */
  redeemed: Record<Person, Set<Code>>;
  tokens: Partial<Record<Person, { access: string; refresh: string; sub: string }>>;
}
interface Real {
  config: client.Configuration;
}

function expected(m: Model, who: Person) {
  const groups = new Set<string>(PEOPLE[who].groups);
  for (const c of m.redeemed[who]) if (!c.revoked) groups.add(c.group);
  return { username: PEOPLE[who].username, groups: [...groups].sort(), admin: PEOPLE[who].admin || groups.has('instructors') };
}

async function timed<T>(what: string, run: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const out = await run();
  const ms = performance.now() - started;
  expect(ms, `${what} took ${Math.round(ms)} ms`).toBeLessThan(BOUND_MS);
  return out;
}

async function checkUserinfo(m: Model, r: Real, who: Person, what: string) {
  const t = m.tokens[who]!;
  const info = await timed(`${what}: userinfo`, () => client.fetchUserInfo(r.config, t.access, t.sub));
  expect({ username: info.username, groups: info.groups, admin: info.admin }, `${what}: userinfo of ${who}`).toEqual(expected(m, who));
}

const stats = { codeLogins: 0, refusedCodeLogins: 0, revokes: 0, refreshes: 0 };

const admin = () => ({ authorization: `token ${adminToken}`, 'content-type': 'application/json' });

class CreateCode implements fc.AsyncCommand<Model, Real> {
  readonly group: string;
  readonly maxUses: number;
  constructor(group: string, maxUses: number) {
    this.group = group;
    this.maxUses = maxUses;
  }
  check = (m: Readonly<Model>) => m.codes.length < 6;
  async run(m: Model) {
    const res = await fetch(`${base}${PREFIX}api/hubs/model/codes`, {
      method: 'POST',
      headers: admin(),
      body: JSON.stringify({ group: this.group, expiresAt: new Date(Date.now() + 3600_000).toISOString(), maxUses: this.maxUses }),
    });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { id: string; link: string };
    m.codes.push({ id: body.id, code: body.link.slice(body.link.lastIndexOf('/') + 1), group: this.group, maxUses: this.maxUses, uses: 0, revoked: false });
  }
  toString = () => `createCode(${this.group}, ${this.maxUses})`;
}

class Revoke implements fc.AsyncCommand<Model, Real> {
  readonly pick: number;
  constructor(pick: number) {
    this.pick = pick;
  }
  check = (m: Readonly<Model>) => m.codes.length > 0;
  async run(m: Model, r: Real) {
    const code = m.codes[this.pick % m.codes.length]!;
    const res = await fetch(`${base}${PREFIX}api/hubs/model/codes/${code.id}`, { method: 'DELETE', headers: { authorization: `token ${adminToken}` } });
    expect(res.status).toBe(200);
    code.revoked = true;
    stats.revokes += 1;
    // At once: every holder's userinfo already lacks what the code gave.
    for (const who of Object.keys(m.tokens) as Person[]) await checkUserinfo(m, r, who, this.toString());
  }
  toString = () => `revoke(#${this.pick})`;
}

class Login implements fc.AsyncCommand<Model, Real> {
  readonly who: Person;
  /** A code to log in with (an index into the codes made so far), or none. */
  readonly pick: number | null;
  constructor(who: Person, pick: number | null) {
    this.who = who;
    this.pick = pick;
  }
  check = (m: Readonly<Model>) => this.pick === null || m.codes.length > 0;
  async run(m: Model, r: Real) {
    const person = PEOPLE[this.who];
    const code = this.pick === null ? undefined : m.codes[this.pick % m.codes.length]!;
    unis[person.uni].nextUser = this.who;
    const flow = await rpLogin(createTestBrowser(), issuer, RP, { extra: { idp_hint: `uni-${person.uni}`, ...(code ? { access_code: code.code } : {}) } });
    expect(flow.page.status, `${this}: ${flow.page.url}`).toBeLessThan(500);
    if (code && (code.revoked || code.uses >= code.maxUses)) {
      expect(flow.page.status, `${this}: a spent or revoked code is refused`).toBe(403);
      stats.refusedCodeLogins += 1;
      return;
    }
    expect(flow.page.url.startsWith(RP.redirectUri), `${this}: ended at ${flow.page.url} (${flow.page.status}): ${/<p id="message">([^<]*)/.exec(flow.page.body)?.[1]}`).toBe(true);
    const tokens = await client.authorizationCodeGrant(r.config, new URL(flow.page.url), { pkceCodeVerifier: flow.verifier, expectedState: flow.state });
    if (code) {
      stats.codeLogins += 1;
      code.uses += 1;
      m.redeemed[this.who].add(code);
    }
    m.tokens[this.who] = { access: tokens.access_token, refresh: tokens.refresh_token!, sub: tokens.claims()!.sub };
    await checkUserinfo(m, r, this.who, this.toString());
  }
  toString = () => `login(${this.who}${this.pick === null ? '' : `, code #${this.pick}`})`;
}

class Refresh implements fc.AsyncCommand<Model, Real> {
  readonly who: Person;
  constructor(who: Person) {
    this.who = who;
  }
  check = (m: Readonly<Model>) => m.tokens[this.who] !== undefined;
  async run(m: Model, r: Real) {
    const t = m.tokens[this.who]!;
    const tokens = await timed(this.toString(), () => client.refreshTokenGrant(r.config, t.refresh));
    m.tokens[this.who] = { access: tokens.access_token, refresh: tokens.refresh_token ?? t.refresh, sub: t.sub };
    stats.refreshes += 1;
    const claims = tokens.claims();
    if (claims?.groups !== undefined) expect({ groups: claims.groups, admin: claims.admin }).toEqual({ groups: expected(m, this.who).groups, admin: expected(m, this.who).admin });
    await checkUserinfo(m, r, this.who, this.toString());
  }
  toString = () => `refresh(${this.who})`;
}

class UserInfo implements fc.AsyncCommand<Model, Real> {
  readonly who: Person;
  constructor(who: Person) {
    this.who = who;
  }
  check = (m: Readonly<Model>) => m.tokens[this.who] !== undefined;
  async run(m: Model, r: Real) {
    await checkUserinfo(m, r, this.who, this.toString());
  }
  toString = () => `userinfo(${this.who})`;
}

const person = fc.constantFrom(...(Object.keys(PEOPLE) as Person[]));
// Logins with codes, and refreshes, are listed twice: they are what the model is about.
const codeLogin = fc.tuple(person, fc.nat(5)).map(([p, i]) => new Login(p, i));
const refresh = person.map((p) => new Refresh(p));
const commands = [
  fc.tuple(fc.constantFrom(...CODE_GROUPS), fc.integer({ min: 1, max: 3 })).map(([g, n]) => new CreateCode(g, n)),
  fc.nat(5).map((i) => new Revoke(i)),
  person.map((p) => new Login(p, null)),
  codeLogin,
  codeLogin,
  refresh,
  refresh,
  person.map((p) => new UserInfo(p)),
];

describe('access codes, logins, refreshes and userinfo by several users (model-based)', () => {
  it('never answers 5xx, never slower than the bound, and asserts exactly the rights each user has now', async () => {
    const config = await client.discovery(new URL(issuer), RP.clientId, undefined, client.ClientSecretPost(RP.secret), { execute: [client.allowInsecureRequests] });
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 16, size: 'max' }), async (cmds) => {
        // Each run starts from no codes and no memberships, as its model does.
        await app.db.deleteFrom('code_membership').execute();
        await app.db.deleteFrom('access_code').execute();
        const model: Model = { codes: [], redeemed: { alice: new Set(), arno: new Set(), bob: new Set() }, tokens: {} };
        // Every run has a code into the admin group to play with from the start.
        await new CreateCode('instructors', 3).run(model);
        await fc.asyncModelRun(() => ({ model, real: { config } }), cmds);
      }),
      { numRuns: 10, seed: Number(process.env.HUBSIDE_FUZZ_SEED ?? Date.now() % 2 ** 31) },
    );
    // The runs did what they are about (not only steps whose preconditions failed).
    console.info(`auth-bridge model: ${JSON.stringify(stats)}`);
    expect(stats.codeLogins).toBeGreaterThan(0);
    expect(stats.revokes).toBeGreaterThan(0);
  }, 240_000);

  it('logs in once with a one-use code given as the access_code parameter (found by the model)', async () => {
    // The resumed authorization still carried access_code, so the login was asked for again and
    // redeemed the code a second time: a one-use code always ended in "used as many times".
    const config = await client.discovery(new URL(issuer), RP.clientId, undefined, client.ClientSecretPost(RP.secret), { execute: [client.allowInsecureRequests] });
    const model: Model = { codes: [], redeemed: { alice: new Set(), arno: new Set(), bob: new Set() }, tokens: {} };
    await new CreateCode('workshop', 1).run(model);
    await new Login('arno', 0).run(model, { config });
    expect(model.codes[0]!.uses).toBe(1);
    const rows = await app.db.selectFrom('access_code').select('uses').where('id', '=', model.codes[0]!.id).execute();
    expect(rows).toEqual([{ uses: 1 }]);
  });
});
