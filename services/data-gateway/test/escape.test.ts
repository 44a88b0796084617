/** The escaping scheme and the policies built from it can never widen a grant. */
import fc from 'fast-check';
import type { HubIdentity } from '@hubside/hub-client';
import { describe, expect, it } from 'vitest';
import { MAX_BOUNDARY_RULES, accessBoundary, createGcsBackend } from '../src/backends/gcs.js';
import { PolicyTooLargeError, createS3Backend, roleSessionName } from '../src/backends/s3.js';
import { SESSION_POLICY_LIMIT, sessionPolicy } from '../src/backends/s3-policy.js';
import { datasetSchema } from '../src/config.js';
import { escapeName, expandTemplate, templateProblem, unescapeName } from '../src/escape.js';
import { resolveGrant } from '../src/grants.js';

const HOSTILE = ['a*b', 'x/../y', '${aws:username}', '..', '.', 'alice/', 'al?ce', 'Zoë', '名前', 'a b', 'a~2Ab', '', '\u0000', '🙂'];
const name = fc.oneof(fc.string({ minLength: 1, unit: 'grapheme' }), fc.string({ minLength: 1, unit: 'binary' }), fc.constantFrom(...HOSTILE.filter(Boolean)));
// Hub names are well-formed unicode (they come from JSON); lone surrogates are not names.
const wellFormed = (s: string): boolean => {
  try {
    encodeURIComponent(s);
    return true;
  } catch {
    return false;
  }
};
const SAFE_OUTPUT = /^(?:[A-Za-z0-9_-]|~[0-9A-F]{2})+$/;

const user = (n: string, groups: string[] = []): HubIdentity => ({ kind: 'user', name: n, admin: false, groups, scopes: [], model: {} as HubIdentity['model'] });
// The config refuses control characters and lone surrogates in group names, but a user's groups
// come from the hub as they are: the grant and the policy must hold for any name, so the
// dataset's groups are set past the schema here.
const ds = (prefix: string, groups: string[] = []) => ({
  ...datasetSchema.parse({ provider: 's3-compatible', bucket: 'data', endpoint: 'http://127.0.0.1:1', prefix, access: 'read-write', groups: groups.length > 0 ? ['placeholder'] : [], s3: { roleArn: 'arn:aws:iam:::role/r' } }),
  groups,
});

describe('escapeName', () => {
  it('documented examples', () => {
    expect(escapeName('alice')).toBe('alice');
    expect(escapeName('a.b@uni.edu')).toBe('a~2Eb~40uni~2Eedu');
    expect(escapeName('a*b')).toBe('a~2Ab');
    expect(escapeName('x/../y')).toBe('x~2F~2E~2E~2Fy');
    expect(escapeName('${aws:username}')).toBe('~24~7Baws~3Ausername~7D');
    expect(escapeName('Zoë')).toBe('Zo~C3~AB');
    expect(() => escapeName('')).toThrow(RangeError);
  });

  it('output holds only the safe alphabet: no *, ?, $, {, }, /, . (so no ..)', () => {
    fc.assert(
      fc.property(name, (n) => {
        const e = escapeName(n);
        expect(e).toMatch(SAFE_OUTPUT);
        expect(e).not.toMatch(/[*?${}/.]/);
      }),
      { numRuns: 2000 },
    );
  });

  it('is reversible', () => {
    fc.assert(fc.property(name, (n) => unescapeName(escapeName(n)) === n || !wellFormed(n)), { numRuns: 2000 });
  });

  it('is injective for well-formed names', () => {
    fc.assert(
      fc.property(name, name, (a, b) => {
        fc.pre(a !== b && wellFormed(a) && wellFormed(b));
        expect(escapeName(a)).not.toBe(escapeName(b));
      }),
      { numRuns: 2000 },
    );
  });

  it('rejects strings escapeName cannot produce', () => {
    for (const bad of ['a*b', 'a~2a', 'a~', '~ZZ', '', 'a.b', '~C3']) expect(() => unescapeName(bad)).toThrow(RangeError);
  });
});

describe('prefix templates', () => {
  it.each([
    ['home/{username}', /end with "\/"/],
    ['home/*/', /may hold only/],
    ['home/${aws:username}/', /may hold only/],
    ['home/../x/', /"\.\."/],
    ['/home/', /start with/],
    ['home/x{username}/', /whole path segment/],
    ['a/{username}/{group}/', /not both/],
  ])('refuses %j', (t, why) => {
    expect(templateProblem(t)).toMatch(why);
  });

  it('no user prefix is ever a prefix of another user\'s (alice never reaches alice2/)', () => {
    fc.assert(
      fc.property(name, name, (a, b) => {
        fc.pre(a !== b && wellFormed(a) && wellFormed(b));
        const pa = expandTemplate('home/{username}/', { username: a });
        const pb = expandTemplate('home/{username}/', { username: b });
        expect(pb.startsWith(pa)).toBe(false);
        expect(pa.endsWith('/')).toBe(true);
        expect(pa.split('/')).toHaveLength(3);
      }),
      { numRuns: 2000 },
    );
    expect('home/alice2/'.startsWith(expandTemplate('home/{username}/', { username: 'alice' }))).toBe(false);
  });
});

describe('policies built from hostile names', () => {
  it('the S3 session policy only grants the user\'s own escaped prefix and stays under 2,048 characters', () => {
    fc.assert(
      fc.property(name, (n) => {
        const grant = resolveGrant('home', ds('home/{username}/'), user(n), 'read-write');
        if ('refused' in grant) throw new Error(grant.refused);
        const policy = sessionPolicy('data', grant);
        expect(policy.length).toBeLessThanOrEqual(SESSION_POLICY_LIMIT);
        const doc = JSON.parse(policy) as { Statement: { Resource: string[]; Condition?: { StringLike: Record<string, string[]> } }[] };
        const objects = doc.Statement[1]!.Resource;
        expect(objects).toEqual([`arn:aws:s3:::data/home/${escapeName(n)}/*`]);
        // Exactly one wildcard per resource, the one after the trailing slash; no policy variables.
        for (const r of objects) expect(r.indexOf('*')).toBe(r.length - 1);
        expect(policy).not.toContain('${');
        expect(policy).not.toContain('?');
        expect(doc.Statement[0]!.Condition!.StringLike['s3:prefix']).toEqual([`home/${escapeName(n)}/`, `home/${escapeName(n)}/*`]);
      }),
      { numRuns: 1000 },
    );
  });

  it('group datasets grant one prefix per admitted group, never other groups', () => {
    fc.assert(
      fc.property(fc.uniqueArray(name, { minLength: 1, maxLength: 5 }), name, (groups, other) => {
        fc.pre(!groups.includes(other));
        const d = ds('groups/{group}/', [...groups, other]);
        const grant = resolveGrant('g', d, user('u', groups), 'read');
        if ('refused' in grant) throw new Error(grant.refused);
        expect(grant.prefixes.sort()).toEqual(groups.map((g) => `groups/${escapeName(g)}/`).sort());
        expect(sessionPolicy('data', grant)).not.toContain(`groups/${escapeName(other)}/`);
      }),
      { numRuns: 300 },
    );
  });

  it('refuses users outside the groups and writes to read-only datasets', () => {
    expect(resolveGrant('g', ds('groups/{group}/', ['climate']), user('bob', ['physics']), 'read')).toEqual({ refused: expect.stringContaining('climate') });
    const ro = datasetSchema.parse({ ...ds('public/'), access: 'read' });
    expect(resolveGrant('pub', ro, user('bob'), 'read-write')).toEqual({ refused: 'dataset pub is read-only' });
  });

  it('a session policy over 2,048 characters is refused before any STS call', async () => {
    const groups = Array.from({ length: 40 }, (_, i) => `a-rather-long-research-group-name-${i}`);
    const d = ds('groups/{group}/', groups);
    const grant = resolveGrant('g', d, user('u', groups), 'read-write');
    if ('refused' in grant) throw new Error(grant.refused);
    expect(sessionPolicy('data', grant).length).toBeGreaterThan(SESSION_POLICY_LIMIT);
    // The endpoint refuses connections: any attempt to call STS would fail differently.
    const issue = createS3Backend({}).issue({ datasetName: 'g', dataset: d, grant, username: 'u', durationSeconds: 900, signal: new AbortController().signal });
    await expect(issue).rejects.toThrow(PolicyTooLargeError);
    await expect(issue).rejects.toThrow(/would be \d+ characters \(limit 2048\); too many groups match/);
  });

  it('a GCS access boundary over 10 rules is refused before any credentials are looked up', async () => {
    const groups = Array.from({ length: MAX_BOUNDARY_RULES + 1 }, (_, i) => `g${i}`);
    const d = datasetSchema.parse({ provider: 'gcs', bucket: 'data', prefix: 'groups/{group}/', groups });
    const grant = resolveGrant('g', d, user('u', groups), 'read');
    if ('refused' in grant) throw new Error(grant.refused);
    // No key file and no Application Default Credentials here: looking them up would fail differently.
    const issue = createGcsBackend({}).issue({ datasetName: 'g', dataset: d, grant, username: 'u', durationSeconds: 900, signal: new AbortController().signal });
    await expect(issue).rejects.toThrow(PolicyTooLargeError);
    await expect(issue).rejects.toThrow(/would need 11 rules \(limit 10\)/);
  });

  it('role session names stay within STS rules for any name', () => {
    fc.assert(fc.property(name, (n) => { expect(roleSessionName(n)).toMatch(/^[\w+=,.@-]{2,64}$/); }), { numRuns: 1000 });
  });

  it('GCS access boundaries: one rule per prefix, limited by resource name and list prefix', () => {
    fc.assert(
      fc.property(name, (n) => {
        const grant = resolveGrant('home', ds('home/{username}/'), user(n), 'read');
        if ('refused' in grant) throw new Error(grant.refused);
        const cab = accessBoundary('data', grant);
        const rules = cab.accessBoundary.accessBoundaryRules;
        expect(rules).toHaveLength(1);
        expect(rules[0]!.availableResource).toBe('//storage.googleapis.com/projects/_/buckets/data');
        expect(rules[0]!.availablePermissions).toEqual(['inRole:roles/storage.objectViewer']);
        const p = `home/${escapeName(n)}/`;
        expect(rules[0]!.availabilityCondition!.expression).toBe(
          `resource.name.startsWith('projects/_/buckets/data/objects/${p}') || api.getAttribute('storage.googleapis.com/objectListPrefix', '').startsWith('${p}')`,
        );
      }),
      { numRuns: 500 },
    );
    const rw = resolveGrant('home', ds('home/{username}/'), user('alice'), 'read-write');
    if ('refused' in rw) throw new Error(rw.refused);
    expect(accessBoundary('data', rw).accessBoundary.accessBoundaryRules[0]!.availablePermissions).toEqual(['inRole:roles/storage.objectUser']);
  });
});
