/**
 * profile-api's HTTP API with identities from a real JupyterHub: group filtering, the resolve
 * check that stops API users bypassing group limits, self-service editing with optimistic
 * concurrency, and fuzzing that never finds a 500.
 */
import { randomBytes } from 'node:crypto';
import { createTestDatabase, startHub } from '@hubside/testing';
import type { RunningHub, TestDatabase } from '@hubside/testing';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, communityProfiles } from './fixtures.js';

const P = '/services/profile-api/';
let hub: RunningHub;
let database: TestDatabase;
let app: FastifyInstance;
const serviceToken = randomBytes(32).toString('hex');
const t: Record<string, string> = {};

beforeAll(async () => {
  database = await createTestDatabase({ schemas: ['profile_api'] });
  hub = await startHub({
    users: ['alice', 'bob', 'dave', 'erin@example.org'],
    admins: ['carol'],
    groups: { 'GPU-Users': ['alice'], 'profile-editors': ['dave'], instructors: ['alice'], physics: ['erin@example.org'] },
    services: [{ name: 'profile-api', url: 'http://127.0.0.1:1', apiToken: serviceToken }],
    roles: [
      { name: 'hubside-users', scopes: ['access:services!service=profile-api'], users: ['alice', 'bob', 'carol', 'dave', 'erin@example.org'] },
      { name: 'profile-api', scopes: ['read:users', 'list:users', 'read:groups', 'list:groups', 'access:services!service=profile-api'], services: ['profile-api'] },
      { name: 'physics-teacher', scopes: ['read:users!group=physics', 'access:services!service=profile-api'], users: ['bob'] },
    ],
  });
  for (const u of ['alice', 'bob', 'carol', 'dave', 'erin@example.org']) t[u] = await hub.createToken(u, { note: 'profile-api test' });
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
const get = (who: string, url: string) => app.inject({ method: 'GET', url: `${P}${url}`, headers: auth(who) });
const post = (who: string, url: string, payload: unknown) => app.inject({ method: 'POST', url: `${P}${url}`, headers: auth(who), payload: payload as object });
const put = (who: string, payload: unknown, ifMatch?: string) =>
  app.inject({ method: 'PUT', url: `${P}api/profiles`, headers: { ...auth(who), ...(ifMatch ? { 'if-match': ifMatch } : {}) }, payload: payload as object });

describe('profiles for a user', () => {
  it('a user outside gpu-users never sees the GPU profile, nor choices for other groups', async () => {
    const res = await get('bob', 'api/profiles');
    expect(res.statusCode).toBe(200);
    const list = res.json() as Array<{ slug: string; default: boolean; profile_options?: Record<string, { choices: Record<string, unknown> }> }>;
    expect(list.map((p) => p.slug)).toEqual(['datascience']);
    expect(Object.keys(list[0]!.profile_options!.memory!.choices)).toEqual(['2G', '4G', '8G']);
    expect(JSON.stringify(list)).not.toContain('allowed_groups');
    expect(res.headers.etag).toBe('"v1"');
  });

  it('group matching is case-insensitive: GPU-Users is gpu-users, Instructors is instructors', async () => {
    const list = (await get('alice', 'api/profiles')).json() as Array<{ slug: string; profile_options?: Record<string, { choices: Record<string, unknown> }>; resources: unknown }>;
    expect(list.map((p) => p.slug)).toEqual(['datascience', 'gpu']);
    expect(Object.keys(list[0]!.profile_options!.memory!.choices)).toContain('16G');
    expect(list[1]!.resources).toEqual({ memory: { limit: 16 * 1024 ** 3 }, gpu: { guarantee: 1, limit: 1 } });
  });

  it('resolves defaults and summarises resources: the default profile with its default choices', async () => {
    const list = (await get('bob', 'api/profiles')).json() as Array<Record<string, any>>;
    expect(list[0]).toMatchObject({
      default: true,
      resources: { cpu: { guarantee: 0.5, limit: 2 }, memory: { guarantee: 2 * 1024 ** 3, limit: 2 * 1024 ** 3 } },
      price_per_hour: 0.05,
    });
    expect(list[0]!.profile_options.image.unlisted_choice).toMatchObject({ enabled: true, validation_regex: '^.+:.+$', display_name_in_choices: 'Other...' });
    expect(list[0]!.profile_options.memory.choices['8G']).toMatchObject({ default: false, resources: { memory: { guarantee: 8 * 1024 ** 3, limit: 8 * 1024 ** 3 } } });
  });

  it('the hub service token (read:users) gets any user\'s list, with that user\'s groups', async () => {
    const res = await get('service', `api/users/alice/profiles`);
    expect(res.statusCode).toBe(200);
    expect((res.json() as Array<{ slug: string }>).map((p) => p.slug)).toEqual(['datascience', 'gpu']);
  });

  it('a user may ask for their own list by name, but not for someone else\'s', async () => {
    expect((await get('bob', 'api/users/bob/profiles')).statusCode).toBe(200);
    const res = await get('dave', 'api/users/alice/profiles');
    expect(res.statusCode).toBe(403);
    expect(res.json().message).toContain('read:users!user=alice');
  });

  it('read:users!group=physics covers members of physics only (names with @ and . included)', async () => {
    expect((await get('bob', `api/users/${encodeURIComponent('erin@example.org')}/profiles`)).statusCode).toBe(200);
    expect((await get('bob', 'api/users/alice/profiles')).statusCode).toBe(403);
  });

  it('an unknown user is 404 for the service', async () => {
    const res = await get('service', 'api/users/nobody-here/profiles');
    expect(res.statusCode).toBe(404);
  });

  it('a service asking for its own list is told where to ask', async () => {
    expect((await get('service', 'api/profiles')).statusCode).toBe(400);
  });
});

describe('resolving a selection', () => {
  it('merges overrides the KubeSpawner way: profile, then options in order, dicts merged', async () => {
    const res = await post('service', 'api/users/bob/resolve', { profile: 'datascience', image: 'r', memory: '8G' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      profile: 'datascience',
      selection: { image: { choice: 'r' }, memory: { choice: '8G' } },
      kubespawner_override: {
        cpu_guarantee: 0.5,
        cpu_limit: 2,
        environment: { HUBSIDE_PROFILE: 'datascience' },
        image: 'quay.io/jupyter/r-notebook:2024-10-07',
        mem_limit: '8G',
        node_selector: { 'node.kubernetes.io/instance-type': 'n2-standard-8' },
      },
      options: { image: 'r', memory: '8G' },
      price_per_hour: '0.15',
      currency: 'USD',
      resources: { cpuGuarantee: 0.5, cpuLimit: 2, memGuaranteeGiB: 8, memLimitGiB: 8, gpus: 0 },
      profile_version: 1,
    });
  });

  it('substitutes {value} for a valid unlisted image, and applies defaults for the rest', async () => {
    const res = await post('bob', 'api/users/bob/resolve', { profile: 'datascience', 'image--unlisted-choice': 'ghcr.io/me/img:1.0' });
    expect(res.statusCode).toBe(200);
    expect(res.json().kubespawner_override).toMatchObject({ image: 'ghcr.io/me/img:1.0', mem_limit: '2G' });
  });

  it('an empty selection is the default profile, as in KubeSpawner', async () => {
    const res = await post('bob', 'api/users/bob/resolve', {});
    expect(res.json()).toMatchObject({ profile: 'datascience', selection: { image: { choice: 'scipy' }, memory: { choice: '2G' } } });
  });

  it('resolving the GPU profile outside gpu-users is 403 naming the field', async () => {
    const res = await post('service', 'api/users/bob/resolve', { profile: 'gpu' });
    expect(res.statusCode).toBe(403);
    expect(res.json()).toMatchObject({ field: 'profile', code: 'HUBSIDE_PROFILE_ERR_SELECTION' });
    expect((await post('service', 'api/users/alice/resolve', { profile: 'gpu' })).statusCode).toBe(200);
  });

  it.each([
    [{ profile: 'nope' }, 404, 'profile'],
    [{ profile: 'datascience', image: 'nope' }, 404, 'image'],
    [{ profile: 'datascience', memory: '16G' }, 403, 'memory'],
    [{ profile: 'datascience', 'image--unlisted-choice': 'no-tag' }, 422, 'image--unlisted-choice'],
    [{ profile: 'datascience', 'memory--unlisted-choice': '3G' }, 400, 'memory--unlisted-choice'],
    [{ profile: 'datascience', image: 42 }, 400, 'image'],
    [{ profile: ['datascience'] }, 400, 'profile'],
    [{ profile: 'datascience', 'image--unlisted-choice': `a:${'b'.repeat(600)}` }, 400, 'image--unlisted-choice'],
  ])('%j → %i naming %s', async (body, status, field) => {
    const res = await post('bob', 'api/users/bob/resolve', body);
    expect(res.statusCode).toBe(status);
    expect(res.json().field).toBe(field);
  });

  it('the validation message is the one the admins wrote', async () => {
    const res = await post('bob', 'api/users/bob/resolve', { profile: 'datascience', 'image--unlisted-choice': 'no-tag' });
    expect(res.json().message).toBe('an image name with a tag, like repo/image:tag');
  });

  it('a user cannot resolve for another user', async () => {
    expect((await post('bob', 'api/users/alice/resolve', { profile: 'gpu' })).statusCode).toBe(403);
  });
});

describe('self-service editing', () => {
  it('non-admins may not edit or read history', async () => {
    expect((await put('bob', { profiles: communityProfiles }, '"v1"')).statusCode).toBe(403);
    expect((await get('bob', 'api/profiles/versions')).statusCode).toBe(403);
  });

  it('lists every problem of a document at once', async () => {
    const bad = [
      { display_name: 'A', slug: 'a', kubespawner_override: {}, colour: 'red' },
      { display_name: 'B', slug: 'b', profile_options: { image: { display_name: 'I', choices: {}, unlisted_choice: { enabled: true, validation_regex: '(' } } } },
      { display_name: 'A again', slug: 'b' },
    ];
    const unknownField = await put('carol', { profiles: bad }, '"v1"');
    expect(unknownField.statusCode).toBe(422);
    expect(unknownField.json().problems).toEqual([expect.objectContaining({ path: '[0]', message: expect.stringContaining('colour') })]);
    const res = await put('carol', { profiles: bad.map(({ colour: _c, ...p }: Record<string, unknown>) => p) }, '"v1"');
    expect(res.statusCode).toBe(422);
    const paths = (res.json().problems as Array<{ path: string }>).map((p) => p.path);
    expect(paths).toEqual(['[1].profile_options.image.unlisted_choice.validation_regex', '[2].slug', '(document)']);
    expect(res.json().message).toContain('no profile has "default": true');
  });

  it('requires If-Match, so no edit can silently overwrite another', async () => {
    const res = await put('carol', { profiles: communityProfiles });
    expect(res.statusCode).toBe(428);
  });

  it('two admins editing at once: the stale write gets 412 and nothing is lost', async () => {
    const doc = (await get('carol', 'api/profiles/document'));
    const etag = doc.headers.etag as string;
    const base = doc.json().profiles as typeof communityProfiles;
    const carols = structuredClone(base);
    carols[0]!.description = 'edited by carol';
    const daves = structuredClone(base);
    daves[1]!.description = 'edited by dave';
    const [a, b] = await Promise.all([
      put('carol', { profiles: carols, message: 'carol: describe' }, etag),
      put('dave', { profiles: daves, message: 'dave: describe GPU' }, etag),
    ]);
    const statuses = [a.statusCode, b.statusCode].sort();
    expect(statuses).toEqual([201, 412]);
    const loser = a.statusCode === 412 ? a : b;
    expect(loser.json()).toMatchObject({ code: 'HUBSIDE_PROFILE_ERR_STALE' });
    // The loser reloads and applies the edit on top: both edits survive.
    const fresh = await get('carol', 'api/profiles/document');
    const merged = structuredClone(fresh.json().profiles as typeof communityProfiles);
    if (loser === a) merged[0]!.description = 'edited by carol';
    else merged[1]!.description = 'edited by dave';
    const retry = await put(loser === a ? 'carol' : 'dave', { profiles: merged, message: 'again' }, fresh.headers.etag as string);
    expect(retry.statusCode).toBe(201);
    const final = (await get('carol', 'api/profiles/document')).json().profiles as typeof communityProfiles;
    expect(final[0]!.description).toBe('edited by carol');
    expect(final[1]!.description).toBe('edited by dave');
  });

  it('a retried write that already landed answers as a success, not a conflict', async () => {
    const doc = await get('carol', 'api/profiles/document');
    const next = structuredClone(doc.json().profiles as typeof communityProfiles);
    next[0]!.price_per_hour = 0.07;
    const first = await put('carol', { profiles: next, message: 'price' }, doc.headers.etag as string);
    expect(first.statusCode).toBe(201);
    const again = await put('carol', { profiles: next, message: 'price' }, doc.headers.etag as string);
    expect(again.statusCode).toBe(200);
    expect(again.json()).toMatchObject({ replayed: true, version: { id: first.json().version.id } });
  });

  it('a member of a configured admin group may edit; unknown groups are a warning', async () => {
    const doc = await get('dave', 'api/profiles/document');
    const next = structuredClone(doc.json().profiles as Array<Record<string, unknown>>);
    next[1]!.allowed_groups = ['gpu-users', 'no-such-group'];
    const res = await put('dave', { profiles: next, message: 'add a group' }, doc.headers.etag as string);
    expect(res.statusCode).toBe(201);
    expect(res.json().warnings).toEqual([expect.stringContaining('"no-such-group" does not exist')]);
    expect(res.json().version).toMatchObject({ author: 'dave', message: 'add a group' });
  });

  it('lists versions with authors, diffs two versions, and restores an old one', async () => {
    const versions = (await get('carol', 'api/profiles/versions')).json().versions as Array<{ id: number; author: string }>;
    expect(versions.at(-1)).toMatchObject({ id: 1, author: 'community config' });
    expect(versions[0]!.author).toBe('dave');
    const diff = (await get('carol', `api/profiles/versions/1/diff?to=${versions[0]!.id}`)).json();
    expect(diff.changes).toContainEqual({ path: '[slug=datascience].description', op: 'changed', from: 'Python, R and Julia', to: 'edited by carol' });
    expect(diff.changes).toContainEqual({ path: '[slug=gpu].allowed_groups[1]', op: 'added', to: 'no-such-group' });
    const etag = (await get('carol', 'api/profiles/document')).headers.etag as string;
    const restored = await app.inject({ method: 'POST', url: `${P}api/profiles/versions/1/restore`, headers: { ...auth('carol'), 'if-match': etag }, payload: {} });
    expect(restored.statusCode).toBe(201);
    expect(restored.json().version.message).toBe('restore version 1');
    const now = (await get('carol', 'api/profiles/document')).json().profiles;
    expect(now).toEqual(communityProfiles);
    expect((await get('carol', 'api/profiles/versions/99999')).statusCode).toBe(404);
  });
});

describe('fuzzing never finds a 500', () => {
  const json = fc.jsonValue({ maxDepth: 4 });
  const profileLike = fc.record(
    {
      display_name: fc.oneof(fc.string(), json),
      slug: fc.oneof(fc.string(), json),
      default: fc.oneof(fc.boolean(), json),
      kubespawner_override: fc.oneof(fc.dictionary(fc.string(), json), json),
      allowed_groups: fc.oneof(fc.array(fc.string()), json),
      price_per_hour: fc.oneof(fc.double(), json),
      profile_options: fc.oneof(
        fc.dictionary(
          fc.string(),
          fc.record(
            {
              display_name: fc.string(),
              choices: fc.dictionary(fc.string(), fc.record({ display_name: fc.string(), default: fc.boolean(), kubespawner_override: fc.dictionary(fc.string(), json) }, { requiredKeys: [] })),
              unlisted_choice: fc.record({ enabled: fc.boolean(), validation_regex: fc.oneof(fc.string(), fc.constantFrom('(a+)+$', '(', '[', '\\', '^.+:.+$')), kubespawner_override: fc.dictionary(fc.string(), json) }, { requiredKeys: [] }),
            },
            { requiredKeys: [] },
          ),
        ),
        json,
      ),
    },
    { requiredKeys: [] },
  );

  it('PUT with arbitrary documents answers 2xx, 412 or 422', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.array(profileLike, { maxLength: 4 }), json), async (profiles) => {
        const res = await put('carol', { profiles }, '*');
        // 400: JSON Fastify refuses to parse (a `__proto__` key is prototype poisoning).
        expect([200, 201, 400, 412, 422]).toContain(res.statusCode);
        if (res.statusCode === 400) expect(res.json()).toMatchObject({ statusCode: 400, error: 'Bad Request', message: expect.any(String) });
        if (res.statusCode === 201) {
          // Whatever was accepted must serve and resolve without a 500.
          expect((await get('bob', 'api/profiles')).statusCode).toBe(200);
          expect((await post('bob', 'api/users/bob/resolve', {})).statusCode).toBeLessThan(500);
        }
      }),
      { numRuns: 60 },
    );
    // Put the community back for the next test.
    const res = await put('carol', { profiles: communityProfiles }, '*');
    expect(res.statusCode).toBe(201);
  });

  it('resolve with arbitrary user_options answers 2xx or 4xx', async () => {
    const key = fc.oneof(fc.constantFrom('profile', 'image', 'memory', 'image--unlisted-choice', 'memory--unlisted-choice', '__proto__', 'constructor'), fc.string());
    const value = fc.oneof(fc.constantFrom('datascience', 'gpu', 'r', '8G', '16G', 'x:y', 'toString', '__proto__'), json);
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.dictionary(key, value), json), async (options) => {
        const res = await post('bob', 'api/users/bob/resolve', options);
        expect(res.statusCode).toBeLessThan(500);
        expect(res.statusCode).not.toBe(0);
      }),
      { numRuns: 200 },
    );
  });

  it('a catastrophic regex is refused when saved (the time limit at resolve is the second guard)', async () => {
    const etag = (await get('carol', 'api/profiles/document')).headers.etag as string;
    const evil = structuredClone(communityProfiles) as Array<Record<string, any>>;
    evil[0]!.profile_options.image.unlisted_choice.validation_regex = '(a+)+$';
    const res = await put('carol', { profiles: evil }, etag);
    expect(res.statusCode).toBe(422);
    expect(res.json().message).toContain('exponential time');
  });
});
