/** The config refuses setups where one IdP's user could become another IdP's user. */
import { describe, expect, it } from 'vitest';
import { configSchema, domainMatches, resolveSecret } from '../src/config.js';

const idp = (extra: Record<string, unknown>) => ({ displayName: 'X', issuer: 'https://idp.example/', clientId: 'c', clientSecret: 's', ...extra });
const hub = { clientId: 'h', clientSecret: 's', redirectUris: ['https://hub.example/hub/oauth_callback'] };

function issues(cfg: unknown): string[] {
  const r = configSchema.safeParse(cfg);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

describe('username collisions', () => {
  it('refuses two IdPs that strip the domain with no prefix, and says why', () => {
    const out = issues({ upstreams: { a: idp({ username: { stripDomain: true } }), b: idp({ username: { stripDomain: true } }) }, hubs: { h: hub } });
    expect(out).toHaveLength(1);
    expect(out[0]).toMatch(/^hubs\.h\.idps: IdPs "a" and "b" could both yield the same username/);
    expect(out[0]).toContain('sharedUsernames');
  });

  it('refuses a prefix that starts another IdP\u2019s prefix', () => {
    expect(issues({ upstreams: { a: idp({ username: { prefix: 'x-' } }), b: idp({ username: { prefix: 'x-y-' } }) }, hubs: { h: hub } })).toHaveLength(1);
  });

  it('accepts disjoint prefixes, an explicit shared pair, and kept addresses with disjoint domains', () => {
    expect(issues({ upstreams: { a: idp({ username: { prefix: 'a-' } }), b: idp({ username: { prefix: 'b-' } }) }, hubs: { h: hub } })).toEqual([]);
    expect(
      issues({ upstreams: { a: idp({}), b: idp({}) }, hubs: { h: { ...hub, sharedUsernames: [['a', 'b']] } } }),
    ).toEqual([]);
    expect(issues({ upstreams: { a: idp({ domains: ['a.edu'] }), b: idp({ domains: ['*.b.edu'] }) }, hubs: { h: hub } })).toEqual([]);
    expect(issues({ upstreams: { a: idp({ domains: ['x.b.edu'] }), b: idp({ domains: ['*.b.edu'] }) }, hubs: { h: hub } })).toHaveLength(1);
    // A stripped name has no "@", a kept address always has one.
    expect(issues({ upstreams: { a: idp({ username: { stripDomain: true } }), b: idp({ domains: ['b.edu'] }) }, hubs: { h: hub } })).toEqual([]);
  });

  it('only checks the IdPs a hub offers', () => {
    expect(issues({ upstreams: { a: idp({}), b: idp({}) }, hubs: { h: { ...hub, idps: ['a'] } } })).toEqual([]);
  });
});

describe('other config checks', () => {
  it('names unknown IdPs, duplicate client ids and bad fields', () => {
    const out = issues({
      upstreams: { a: idp({}) },
      hubs: { h: { ...hub, idps: ['nope'] }, g: { ...hub, redirectUris: ['not a url'] } },
    });
    expect(out.some((m) => m.startsWith('hubs.h.idps') && m.includes('"nope"'))).toBe(true);
    expect(out.some((m) => m.startsWith('hubs.g.redirectUris.0'))).toBe(true);
    expect(out.some((m) => m.startsWith('hubs.g.clientId') && m.includes('also the client id'))).toBe(true);
  });

  it('has defaults for everything', () => {
    expect(configSchema.parse({})).toMatchObject({ upstreams: {}, hubs: {}, keyRotationDays: 90, cleanupIntervalSeconds: 600, loginLogDays: 90 });
  });

  it('sets every lifetime explicitly; a grant lasts as long as its refresh tokens unless told otherwise', () => {
    expect(configSchema.parse({}).ttl).toEqual({
      accessToken: 3600,
      authorizationCode: 60,
      idToken: 3600,
      interaction: 1800,
      refreshToken: 14 * 86400,
      session: 14 * 86400,
      grant: 14 * 86400,
      upstreamClaims: 14 * 86400,
    });
    expect(configSchema.parse({ ttl: { refreshToken: 7200 } }).ttl.grant).toBe(7200);
    expect(issues({ ttl: { refreshToken: 7200, grant: 3600 } })).toEqual(['ttl.grant: grant must be at least refreshToken: refresh tokens end with their grant']);
    expect(issues({ ttl: { authorizationCode: 3600 } })[0]).toMatch(/^ttl\.authorizationCode/);
  });

  it('matches wildcard domains on subdomains only', () => {
    expect(domainMatches('*.uni.edu', 'lab.uni.edu')).toBe(true);
    expect(domainMatches('*.uni.edu', 'uni.edu')).toBe(false);
    expect(domainMatches('*.uni.edu', 'evil-uni.edu')).toBe(false);
    expect(domainMatches('uni.edu', 'UNI.edu')).toBe(true);
  });

  it('reads secrets from env and names what is missing', () => {
    expect(resolveSecret('x', { clientSecretEnv: 'S' }, { S: 'v' })).toBe('v');
    expect(() => resolveSecret('auth-bridge.hubs.h', { clientSecretEnv: 'S' }, {})).toThrow(/auth-bridge\.hubs\.h\.clientSecretEnv: the environment variable S is not set/);
    expect(() => resolveSecret('auth-bridge.hubs.h', { clientSecretFile: '/nonexistent/x' }, {})).toThrow(/clientSecretFile: cannot be read/);
  });
});

describe('limits and strings in the login rules (the same as the admin API)', () => {
  it('refuses a NUL, a lone surrogate or a control character in a group or user name, naming the field', () => {
    expect(issues({ hubs: { h: { ...hub, allowedGroups: ['ok', 'a\u0000b'] } } })).toEqual([expect.stringMatching(/^hubs\.h\.allowedGroups\.1: /)]);
    expect(issues({ hubs: { h: { ...hub, adminGroups: ['\ud800'] } } })).toEqual([expect.stringMatching(/^hubs\.h\.adminGroups\.0: must be valid Unicode/)]);
    expect(issues({ hubs: { h: { ...hub, adminUsers: ['a\nb'] } } })).toEqual([expect.stringMatching(/^hubs\.h\.adminUsers\.0: must not contain control characters/)]);
    expect(issues({ hubs: { h: { ...hub, groupMap: { staff: 'x\udc00' } } } })).toHaveLength(1);
    expect(issues({ hubs: { h: { ...hub, allowedGroups: ['x'.repeat(256)] } } })).toHaveLength(1);
    // Well-formed names of any script stay welcome.
    expect(issues({ hubs: { h: { ...hub, allowedGroups: ['Физика 101', 'a@b.c', '🧪 lab'], groupMap: { staff: 'Физика 101' } } } })).toEqual([]);
  });

  it('bounds every list of a hub\u2019s rules at 1000 entries', () => {
    const many = Array.from({ length: 1001 }, (_, i) => `g${i}`);
    for (const field of ['allowedGroups', 'adminGroups', 'allowedUsers', 'adminUsers']) {
      expect(issues({ hubs: { h: { ...hub, [field]: many } } }), field).toHaveLength(1);
      expect(issues({ hubs: { h: { ...hub, [field]: many.slice(0, 1000) } } }), field).toEqual([]);
    }
    expect(issues({ hubs: { h: { ...hub, groupMap: Object.fromEntries(many.map((g) => [g, g])) } } })).toHaveLength(1);
  });
});

describe('what the section names, for check-config', () => {
  it('reports every group of every hub\u2019s rules with its field path', async () => {
    const { references } = await import('../src/index.js');
    const config = configSchema.parse({
      hubs: { h: { ...hub, allowedGroups: ['students'], adminGroups: ['staff'], groupMap: { 'uni-a:physics-staff': 'staff', students: 'students' } } },
    });
    expect(references(config)).toEqual([
      { kind: 'group', name: 'students', field: 'auth-bridge.hubs.h.allowedGroups[0]' },
      { kind: 'group', name: 'staff', field: 'auth-bridge.hubs.h.adminGroups[0]' },
      { kind: 'group', name: 'staff', field: 'auth-bridge.hubs.h.groupMap.uni-a:physics-staff' },
      { kind: 'group', name: 'students', field: 'auth-bridge.hubs.h.groupMap.students' },
    ]);
  });
});
