import { describe, expect, it } from 'vitest';
import { anyScopeSatisfied, defaultAccessScopes, parseScope, scopeSatisfied } from '../src/scopes.js';

describe('scope matching follows JupyterHub filter semantics', () => {
  it('parses base and filter', () => {
    expect(parseScope('read:users')).toEqual({ base: 'read:users' });
    expect(parseScope('access:services!service=usage')).toEqual({ base: 'access:services', filter: { kind: 'service', value: 'usage' } });
    // Names may contain "=" and "!" after the first filter separator.
    expect(parseScope('read:users!user=a=b!c')).toEqual({ base: 'read:users', filter: { kind: 'user', value: 'a=b!c' } });
  });

  it('an unfiltered grant covers every filtered need of the same base', () => {
    expect(scopeSatisfied(['access:services'], 'access:services!service=profile-api')).toBe(true);
    expect(scopeSatisfied(['read:users'], 'read:users!user=alice')).toBe(true);
  });

  it('a filtered grant never covers an unfiltered need', () => {
    expect(scopeSatisfied(['read:users!user=alice'], 'read:users')).toBe(false);
  });

  it('service filters must match exactly', () => {
    expect(scopeSatisfied(['access:services!service=profile-api'], 'access:services!service=profile-api')).toBe(true);
    expect(scopeSatisfied(['access:services!service=profile-api'], 'access:services!service=data-gateway')).toBe(false);
    expect(scopeSatisfied(['access:services!service=profile'], 'access:services!service=profile-api')).toBe(false);
  });

  it('user filters never match by prefix', () => {
    expect(scopeSatisfied(['read:users!user=alice'], 'read:users!user=alice2')).toBe(false);
    expect(scopeSatisfied(['read:users!user=alice'], 'read:users!user=alice')).toBe(true);
  });

  it('a user filter covers that user\'s servers only', () => {
    expect(scopeSatisfied(['access:servers!user=alice'], 'access:servers!server=alice/gpu')).toBe(true);
    expect(scopeSatisfied(['access:servers!user=alice'], 'access:servers!server=alice2/gpu')).toBe(false);
    expect(scopeSatisfied(['access:servers!user=alice'], 'access:servers!server=alice')).toBe(true);
  });

  it('a group filter covers members when membership is known, and nobody otherwise', () => {
    const ctx = { groupsOfUser: (u: string) => (u === 'alice' ? ['physics'] : undefined) };
    expect(scopeSatisfied(['read:users!group=physics'], 'read:users!user=alice', ctx)).toBe(true);
    expect(scopeSatisfied(['read:users!group=physics'], 'read:users!user=bob', ctx)).toBe(false);
    expect(scopeSatisfied(['read:users!group=physics'], 'read:users!user=alice')).toBe(false);
    expect(scopeSatisfied(['access:servers!group=physics'], 'access:servers!server=alice/x', ctx)).toBe(true);
    expect(scopeSatisfied(['read:users!group=physics'], 'read:users!group=physics')).toBe(true);
    expect(scopeSatisfied(['read:users!group=physics'], 'read:users!group=chemistry', ctx)).toBe(false);
  });

  it('role templates without a value grant nothing', () => {
    expect(scopeSatisfied(['read:users!user'], 'read:users!user=alice')).toBe(false);
  });

  it('different bases never match, even as prefixes', () => {
    expect(scopeSatisfied(['read:users:name'], 'read:users')).toBe(false);
    expect(scopeSatisfied(['read:users'], 'read:users:name')).toBe(false);
  });

  it('anyScopeSatisfied needs just one of the required scopes, like HubAuth.check_scopes', () => {
    expect(anyScopeSatisfied(['access:services!service=b'], ['access:services!service=a', 'access:services!service=b'])).toBe(true);
    expect(anyScopeSatisfied(['access:services!service=c'], ['access:services!service=a', 'access:services!service=b'])).toBe(false);
    expect(anyScopeSatisfied([], [])).toBe(false);
  });

  it('derives access scopes from the environment as JupyterHub does', () => {
    expect(defaultAccessScopes({ JUPYTERHUB_OAUTH_ACCESS_SCOPES: '["access:services!service=x","access:services"]' })).toEqual([
      'access:services!service=x',
      'access:services',
    ]);
    expect(defaultAccessScopes({ JUPYTERHUB_SERVICE_NAME: 'usage' })).toEqual(['access:services!service=usage']);
    expect(defaultAccessScopes({}, 'profile-api')).toEqual(['access:services!service=profile-api']);
    expect(() => defaultAccessScopes({ JUPYTERHUB_OAUTH_ACCESS_SCOPES: '{"a":1}' })).toThrow(/JSON list/);
  });
});
