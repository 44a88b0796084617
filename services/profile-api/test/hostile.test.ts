/**
 * profile-api under hostile input (issue 20), against a real JupyterHub: no user-controlled key
 * reaches an object's prototype, the list cache can't be confused by group names, every saved
 * collection and string is bounded, and nothing Python would read differently is accepted.
 */
import { randomBytes } from 'node:crypto';
import { createTestDatabase, startHub } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { configSchema } from '../src/app.js';
import { buildTestApp, communityProfiles } from './fixtures.js';

const P = '/services/profile-api/';
let hub: RunningHub;
let database: TestDatabase;
let app: FastifyInstance;
const serviceToken = randomBytes(32).toString('hex');
const t: Record<string, string> = {};
const USERS = ['carol', 'bob', 'ab-user', 'split-user', '__proto__', 'constructor'];

beforeAll(async () => {
  database = await createTestDatabase({ schemas: ['profile_api'] });
  hub = await startHub({
    users: USERS.filter((u) => u !== 'carol'),
    admins: ['carol'],
    groups: { a: ['split-user'], b: ['split-user'], 'a\nb': ['ab-user'], prototype: ['constructor'], toString: ['__proto__'] },
    services: [{ name: 'profile-api', url: 'http://127.0.0.1:1', apiToken: serviceToken }],
    roles: [
      { name: 'hubside-users', scopes: ['access:services!service=profile-api'], users: USERS },
      { name: 'profile-api', scopes: ['read:users', 'list:users', 'read:groups', 'list:groups', 'access:services!service=profile-api'], services: ['profile-api'] },
    ],
  });
  for (const u of USERS) t[u] = await hub.createToken(u, { note: 'profile-api hostile test' });
  t.service = serviceToken;
  app = await buildTestApp({ dataDir: database.dataDir, databaseUrl: database.databaseUrl, hub: { apiUrl: hub.hubApiUrl, token: serviceToken } });
  await app.ready();
}, 120_000);

afterAll(async () => {
  await app?.close();
  await hub?.stop();
  await database?.drop();
});

const auth = (who: string) => ({ authorization: `token ${t[who]}` });
const enc = encodeURIComponent;
const get = (who: string, url: string) => app.inject({ method: 'GET', url: `${P}${url}`, headers: auth(who) });
const post = (who: string, url: string, payload: unknown) =>
  app.inject({ method: 'POST', url: `${P}${url}`, headers: { ...auth(who), 'content-type': 'application/json' }, payload: typeof payload === 'string' ? payload : JSON.stringify(payload) });
const put = (who: string, profiles: unknown, ifMatch = '*') =>
  app.inject({ method: 'PUT', url: `${P}api/profiles`, headers: { ...auth(who), 'if-match': ifMatch, 'content-type': 'application/json' }, payload: JSON.stringify({ profiles }) });

const pristine = Object.getOwnPropertyNames(Object.prototype).sort();
function prototypesUntouched() {
  expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(pristine);
  expect(Object.getOwnPropertyNames(Array.prototype)).not.toContain('owner');
  expect(({} as Record<string, unknown>).owner).toBeUndefined();
}

afterEach(async () => {
  prototypesUntouched();
  // The process is alive and its metrics still render (prom-client throws on an inherited label).
  app.kit.metrics.httpDuration.observe({ method: 'GET', route: '/probe', status_code: 200 }, 0.001);
  expect(await app.kit.metrics.registry.metrics()).toContain('hubside_http_request_duration_seconds');
});

const restore = async () => expect((await put('carol', communityProfiles)).statusCode).toBe(201);

/** A document whose every user-visible name is a word JavaScript objects inherit. */
function hostileDocument() {
  const override = { '{value}': { owner: 'course' }, extra_pod_config: { '{value}': { owner: 'course' }, constructor: { owner: 'x' }, prototype: { owner: 'y' } } };
  return [
    {
      display_name: 'constructor',
      slug: 'constructor',
      default: true,
      kubespawner_override: { constructor: { owner: 'p' }, prototype: 'x', toString: 'y', hasOwnProperty: { owner: 'q' } },
      allowed_groups: ['prototype', 'toString', 'a', 'b', 'a\nb', 'constructor'],
      profile_options: {
        constructor: {
          display_name: 'constructor',
          choices: { prototype: { display_name: 'prototype', kubespawner_override: override }, toString: { display_name: 'toString', default: true } },
          unlisted_choice: { enabled: true, kubespawner_override: override },
        },
        prototype: { display_name: 'p', choices: {}, unlisted_choice: { enabled: true, kubespawner_override: { environment: { '{value}': '{value}' } } } },
      },
    },
  ];
}

describe('issue 20.1: no user-controlled key reaches a prototype', () => {
  it('an unlisted value "__proto__" substituted into an override key neither pollutes nor crashes', async () => {
    const doc = structuredClone(communityProfiles) as Array<Record<string, any>>;
    doc[0]!.profile_options.image.unlisted_choice = { enabled: true, kubespawner_override: { extra_pod_config: { '{value}': { owner: 'course' } } } };
    expect((await put('carol', doc)).statusCode).toBe(201);
    const res = await post('bob', 'api/users/bob/resolve', { profile: 'datascience', 'image--unlisted-choice': '__proto__' });
    expect(res.statusCode).toBeLessThan(500);
    prototypesUntouched();
    await restore();
  });

  it('every route, driven with __proto__/constructor/prototype as keys and values, leaves the prototypes alone', async () => {
    expect((await put('carol', hostileDocument())).statusCode).toBe(201);
    const words = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty'];
    // The spawn route checks the selection before it asks the hub: refused selections only here.
    for (const w of words.filter((x) => x !== 'constructor')) expect((await post('bob', 'api/spawn', { profile: w, [w]: w })).statusCode).toBeLessThan(500);
    for (const who of ['bob', 'constructor', '__proto__']) {
      expect((await get(who, 'api/profiles')).statusCode).toBeLessThan(500);
      for (const w of words) {
        expect((await get('service', `api/users/${enc(w)}/profiles`)).statusCode).toBeLessThan(500);
        for (const body of [
          { profile: w }, { [w]: w }, { profile: 'constructor', constructor: w }, { profile: 'constructor', 'constructor--unlisted-choice': w },
          { profile: 'constructor', 'prototype--unlisted-choice': w }, { profile: 'constructor', constructor: 'prototype', 'prototype--unlisted-choice': w },
        ]) {
          const res = await post('service', `api/users/${enc(who)}/resolve`, body);
          expect(res.statusCode, JSON.stringify(body)).toBeLessThan(500);
        }
        // Raw JSON with a __proto__ key: Fastify refuses it as prototype poisoning.
        const raw = await post('service', `api/users/${enc(who)}/resolve`, `{"__proto__": {"owner": "x"}, "constructor": {"prototype": {"owner": "y"}}}`);
        expect(raw.statusCode).toBe(400);
      }
    }
    for (const url of ['api/profiles/document', 'api/profiles/versions', 'api/profiles/versions/1/diff', 'api/profiles/versions/__proto__', 'api/profiles/versions/constructor/diff?to=prototype']) {
      expect((await get('carol', url)).statusCode).toBeLessThan(500);
    }
    // Version 1 → the hostile one and back: diffs and restores walk these keys too.
    const versions = (await get('carol', 'api/profiles/versions')).json().versions as Array<{ id: number }>;
    expect((await get('carol', `api/profiles/versions/1/diff?to=${versions[0]!.id}`)).statusCode).toBe(200);
    const restored = await app.inject({ method: 'POST', url: `${P}api/profiles/versions/${versions[0]!.id}/restore`, headers: { ...auth('carol'), 'if-match': '*' }, payload: {} });
    expect(restored.statusCode).toBe(201);
    await restore();
  });

  it('an unlisted value that makes the override key "__proto__" is a 422 naming the field', async () => {
    expect((await put('carol', hostileDocument())).statusCode).toBe(201);
    const res = await post('service', 'api/users/constructor/resolve', { profile: 'constructor', 'prototype--unlisted-choice': '__proto__' });
    expect(res.statusCode).toBe(422);
    expect(res.json()).toMatchObject({ field: 'prototype--unlisted-choice', message: expect.stringContaining('__proto__') });
    // "constructor" and "prototype" are ordinary keys to Python: they come back as data.
    const ok = await post('service', 'api/users/constructor/resolve', { profile: 'constructor', 'prototype--unlisted-choice': 'constructor' });
    expect(ok.statusCode).toBe(200);
    expect(ok.json().kubespawner_override.environment).toEqual({ constructor: 'constructor' });
    await restore();
  });
});

describe('issue 20.3: the list cache key is unambiguous', () => {
  it('a member of the group "a\\nb" never gets the list of a member of "a" and "b"', async () => {
    const open = { display_name: 'Open', slug: 'open', default: true };
    const doc = [open, { display_name: 'A', slug: 'only-a', allowed_groups: ['a'] }, { display_name: 'B', slug: 'only-b', allowed_groups: ['b'] }, { display_name: 'AB', slug: 'only-ab', allowed_groups: ['a\nb'] }];
    expect((await put('carol', doc)).statusCode).toBe(201);
    const slugs = async (who: string) => ((await get(who, 'api/profiles')).json() as Array<{ slug: string }>).map((p) => p.slug);
    // The split user's list is computed (and cached) first.
    expect(await slugs('split-user')).toEqual(['open', 'only-a', 'only-b']);
    expect(await slugs('ab-user')).toEqual(['open', 'only-ab']);
    expect(await slugs('split-user')).toEqual(['open', 'only-a', 'only-b']);
    await restore();
  });
});

describe('issue 20.2: every collection, number and string a person can save is bounded', () => {
  const base = () => structuredClone(communityProfiles) as Array<Record<string, any>>;
  const refused = async (doc: unknown, pathPart: string) => {
    const res = await put('carol', doc);
    expect(res.statusCode, res.body.slice(0, 300)).toBe(422);
    expect(res.json()).toMatchObject({ statusCode: 422, error: 'Unprocessable Entity' });
    expect(JSON.stringify(res.json().problems)).toContain(pathPart);
    // The community file reads the same schema.
    expect(configSchema.safeParse({ profiles: doc }).success).toBe(false);
  };

  it('a 300,000-element override array is refused, in the API and in the community file', async () => {
    const doc = base();
    doc[0]!.kubespawner_override.args = new Array(300_000).fill(0);
    await refused(doc, 'kubespawner_override');
  });

  it.each([
    ['too deep', (d: any) => { let o: any = {}; d[0].kubespawner_override.extra_pod_config = o; for (let i = 0; i < 20; i++) o = o.x = {}; }, 'nested more than'],
    ['too many keys', (d: any) => { d[0].kubespawner_override.environment = Object.fromEntries(Array.from({ length: 2500 }, (_, i) => [`K${i}`, 'v'])); }, 'keys and values'],
    ['a long override string', (d: any) => { d[0].kubespawner_override.image = 'x'.repeat(10_000); }, 'characters'],
    ['too many options', (d: any) => { d[0].profile_options = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`o${i}`, { display_name: 'o', choices: { a: { display_name: 'a' } } }])); }, 'at most 50 options'],
    ['too many choices', (d: any) => { d[0].profile_options.image.choices = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`c${i}`, { display_name: 'c' }])); }, 'at most 200 choices'],
    ['too many groups', (d: any) => { d[1].allowed_groups = Array.from({ length: 300 }, (_, i) => `g${i}`); }, 'allowed_groups'],
    ['a price with sub-micro digits', (d: any) => { d[0].price_per_hour = 0.1234567; }, 'decimal places'],
    ['a negative price', (d: any) => { d[0].price_per_hour = -1; }, 'price_per_hour'],
    ['a NUL in a display name', (d: any) => { d[0].display_name = 'Data\u0000science'; }, 'NUL'],
    ['a NUL in an override value', (d: any) => { d[0].kubespawner_override.environment.X = 'a\u0000b'; }, 'NUL'],
    ['a lone surrogate in an override key', (d: any) => { d[0].kubespawner_override.environment['\ud800'] = 'x'; }, 'surrogate'],
    ['a lone surrogate in a choice key', (d: any) => { d[0].profile_options.image.choices['\udc00x'] = { display_name: 'x' }; }, 'surrogate'],
    ['a NUL in a group name', (d: any) => { d[1].allowed_groups = ['gpu\u0000users']; }, 'NUL'],
  ])('%s is a 422 naming the field', async (_name, edit, text) => {
    const doc = base();
    edit(doc);
    await refused(doc, text);
  });

  it('a NUL in the version message is a 400, and nothing is stored', async () => {
    const before = (await get('carol', 'api/profiles/versions')).json().versions.length;
    const res = await app.inject({ method: 'PUT', url: `${P}api/profiles`, headers: { ...auth('carol'), 'if-match': '*', 'content-type': 'application/json' }, payload: JSON.stringify({ profiles: communityProfiles, message: 'a\u0000b' }) });
    expect(res.statusCode).toBe(400);
    expect((await get('carol', 'api/profiles/versions')).json().versions.length).toBe(before);
  });

  it('an unlisted value with a NUL or a lone surrogate is a 400', async () => {
    for (const v of ['a:b\u0000', 'a:\ud800']) {
      const res = await post('bob', 'api/users/bob/resolve', { profile: 'datascience', 'image--unlisted-choice': v });
      expect(res.statusCode).toBe(400);
    }
  });
});

describe('issue 20.4 and 14a: nothing the hub\'s Python reads differently is saved', () => {
  const withUnlisted = (unlisted: Record<string, unknown>) => {
    const doc = structuredClone(communityProfiles) as Array<Record<string, any>>;
    doc[0]!.profile_options.image.unlisted_choice = { enabled: true, ...unlisted };
    return doc;
  };
  it.each([
    ['\\p{L}+ (JavaScript only)', { validation_regex: '\\p{L}+' }, 'validation_regex'],
    ['(?<n>…) (JavaScript syntax)', { validation_regex: '(?<n>a)' }, 'validation_regex'],
    ['\\w+ (Unicode in Python, ASCII in JavaScript)', { validation_regex: '\\w+' }, 'validation_regex'],
    ['catastrophic backtracking', { validation_regex: '^([a-z]+)*$' }, 'exponential'],
    ['a{b (format_map raises)', { kubespawner_override: { image: 'a{b' } }, 'kubespawner_override.image'],
    ['{value.upper}', { kubespawner_override: { environment: { X: '{value.upper}' } } }, 'environment.X'],
    ['{value:>10}', { kubespawner_override: { args: ['{value:>10}'] } }, 'args[0]'],
    ['{value[0]} in a nested key', { kubespawner_override: { environment: { '{value[0]}': 'x' } } }, 'environment.{value[0]}'],
    ['cpu_limit: "{value}" (a Float trait)', { kubespawner_override: { cpu_limit: '{value}' } }, 'cpu_limit'],
  ])('%s is a 422 naming the field', async (_name, unlisted, where) => {
    const res = await put('carol', withUnlisted(unlisted));
    expect(res.statusCode, res.body.slice(0, 300)).toBe(422);
    expect(JSON.stringify(res.json().problems)).toContain(where);
  });

  it('a choice giving a trait a value of the wrong type is refused (KubeSpawner would fail every spawn)', async () => {
    const doc = structuredClone(communityProfiles) as Array<Record<string, any>>;
    doc[0]!.profile_options.memory.choices['2G'].kubespawner_override.mem_limit = '2Gi';
    doc[0]!.kubespawner_override.cpu_limit = '2';
    const res = await put('carol', doc);
    expect(res.statusCode).toBe(422);
    const paths = (res.json().problems as Array<{ path: string }>).map((p) => p.path);
    expect(paths).toEqual(expect.arrayContaining(['[0].kubespawner_override.cpu_limit', '[0].profile_options.memory.choices.2G.kubespawner_override.mem_limit']));
  });

  it('a substituted size that ByteSpecification would refuse is a 422 with the choice\'s message; a good one resolves', async () => {
    const doc = structuredClone(communityProfiles) as Array<Record<string, any>>;
    doc[0]!.profile_options.memory.unlisted_choice = { enabled: true, validation_regex: '[0-9]+', validation_message: 'a size such as 3G', kubespawner_override: { mem_limit: '{value}', mem_guarantee: '{value}' } };
    expect((await put('carol', doc)).statusCode).toBe(201);
    const bad = await post('bob', 'api/users/bob/resolve', { profile: 'datascience', 'memory--unlisted-choice': '3Gi' });
    expect(bad.statusCode).toBe(422);
    expect(bad.json()).toMatchObject({ field: 'memory--unlisted-choice', message: 'a size such as 3G' });
    const good = await post('bob', 'api/users/bob/resolve', { profile: 'datascience', 'memory--unlisted-choice': '3G' });
    expect(good.statusCode).toBe(200);
    expect(good.json().kubespawner_override.mem_limit).toBe('3G');
    await restore();
  });

  it('an unlisted value with a line break is a 400 (Python\'s $ and . would read it differently)', async () => {
    const res = await post('bob', 'api/users/bob/resolve', { profile: 'datascience', 'image--unlisted-choice': 'repo/img:1\n' });
    expect(res.statusCode).toBe(400);
  });

  it('top-level override keys are not formatted, as in KubeSpawner', async () => {
    expect((await put('carol', withUnlisted({ kubespawner_override: { '{value}': 'x', environment: { '{value}': '{value}' } } }))).statusCode).toBe(201);
    const res = await post('bob', 'api/users/bob/resolve', { profile: 'datascience', 'image--unlisted-choice': 'img:1' });
    expect(res.statusCode).toBe(200);
    expect(res.json().kubespawner_override).toMatchObject({ '{value}': 'x', environment: { 'img:1': 'img:1' } });
    await restore();
  });
});

describe('issue 14b/d: the community section prices resolve and names the admins', () => {
  let community: FastifyInstance;
  let db2: TestDatabase;
  beforeAll(async () => {
    db2 = await createTestDatabase({ schemas: ['profile_api'] });
    community = await buildTestApp({
      dataDir: db2.dataDir,
      databaseUrl: db2.databaseUrl,
      hub: { apiUrl: hub.hubApiUrl, token: serviceToken },
      community: { name: 'Test', currency: 'EUR', admins: { users: ['split-user'], groups: ['prototype'] } },
    });
    await community.ready();
  });
  afterAll(async () => {
    await community?.close();
    await db2?.drop();
  });
  const as = (who: string, method: 'GET' | 'PUT' | 'POST', url: string, payload?: unknown) =>
    community.inject({ method, url: `${P}${url}`, headers: { ...auth(who), 'if-match': '*', 'content-type': 'application/json' }, ...(payload === undefined ? {} : { payload: JSON.stringify(payload) }) });

  it('resolve answers in community.currency, with the price as a decimal string and the version', async () => {
    const res = await as('service', 'POST', 'api/users/bob/resolve', { profile: 'datascience', memory: '8G' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ price_per_hour: '0.15', currency: 'EUR', profile_version: expect.any(Number), options: { image: 'scipy', memory: '8G' } });
  });

  it('community admins (named, or by group) edit profiles; hub admins still do; others do not', async () => {
    for (const who of ['split-user', 'constructor', 'carol']) expect((await as(who, 'GET', 'api/profiles/document')).statusCode, who).toBe(200);
    expect((await as('bob', 'GET', 'api/profiles/document')).statusCode).toBe(403);
    expect((await as('split-user', 'PUT', 'api/profiles', { profiles: communityProfiles })).statusCode).toBe(201);
  });
});

describe('a version saved under older rules', () => {
  it('is checked again when restored: a restore is a save', async () => {
    // Write a version the way an older release could have: straight into the table.
    const doc = structuredClone(communityProfiles) as Array<Record<string, any>>;
    doc[0]!.profile_options.image.unlisted_choice.validation_regex = '(a+)+$';
    const versions = (await get('carol', 'api/profiles/versions')).json().versions as Array<{ id: number }>;
    const id = versions[0]!.id + 1;
    await (app.db as any).insertInto('profile_versions').values({ id, document: JSON.stringify(doc), author: 'old release', message: 'old', parent_id: id - 1 }).execute();
    await restore();
    const res = await app.inject({ method: 'POST', url: `${P}api/profiles/versions/${id}/restore`, headers: { ...auth('carol'), 'if-match': '*' }, payload: {} });
    expect(res.statusCode).toBe(422);
    expect(res.json().message).toContain(`version ${id} no longer passes`);
  });
});
