/** The pure rules, without a hub: KubeSpawner's merge and format semantics, config validation, the regex guard. */
import { describe, expect, it } from 'vitest';
import { configSchema } from '../src/app.js';
import { diffJson } from '../src/profiles/diff.js';
import { RegexGuard, applyOverrides, parseMemory, recursiveFormat, resolveSelection } from '../src/profiles/resolve.js';
import { checkDocument } from '../src/profiles/schema.js';

describe('KubeSpawner override semantics', () => {
  it('merges dicts recursively, deletes on a nested null, sets a top-level null, replaces lists', () => {
    const target: Record<string, any> = { environment: { A: '1', B: '2' }, args: ['x'], image: 'a' };
    applyOverrides(target, { environment: { B: null, C: '3', nested: { d: 1 } }, args: ['y'], image: null });
    expect(target).toEqual({ environment: { A: '1', C: '3', nested: { d: 1 } }, args: ['y'], image: null });
  });

  it('formats {value} in strings, lists and keys; {{ }} unescape; other fields stay', () => {
    expect(recursiveFormat({ image: '{value}', 'k-{value}': ['{{literal}}', '{other}', 3] }, 'img:1')).toEqual({ image: 'img:1', 'k-img:1': ['{literal}', '{other}', 3] });
  });

  it('reads memory as JupyterHub does: G is 1024³', () => {
    expect(parseMemory('2G')).toBe(2 * 1024 ** 3);
    expect(parseMemory('512M')).toBe(512 * 1024 ** 2);
    expect(parseMemory(1000)).toBe(1000);
    expect(parseMemory('lots')).toBeUndefined();
  });

  it('matches like re.match: anchored at the start only', () => {
    const guard = new RegexGuard({ maxLength: 100, timeoutMs: 50 });
    expect(guard.match('ab', 'abc')).toBe(true);
    expect(guard.match('bc', 'abc')).toBe(false);
    expect(guard.match('(a+)+$', `${'a'.repeat(40)}!`)).toBe('timeout');
  });

  it('options apply in document order, later ones winning', () => {
    const doc = [{
      display_name: 'P', slug: 'p', default: true, kubespawner_override: { image: 'base', environment: { X: 'p' } },
      profile_options: {
        first: { display_name: 'F', choices: { a: { display_name: 'A', kubespawner_override: { environment: { X: 'first' } } } } },
        second: { display_name: 'S', choices: { b: { display_name: 'B', kubespawner_override: { environment: { X: 'second' }, image: 'second' } } } },
      },
    }];
    const r = resolveSelection(doc, [], { profile: 'p' }, new RegexGuard({ maxLength: 10, timeoutMs: 50 }));
    expect(r.kubespawner_override).toEqual({ image: 'second', environment: { X: 'second' } });
  });
});

describe('document checks', () => {
  it('fills a missing slug from display_name and finds duplicates that way', () => {
    const res = checkDocument([{ display_name: 'Big Box', default: true }, { display_name: 'big-box' }]);
    expect(res.ok).toBe(false);
    if (!res.ok) expect(res.problems).toEqual([{ path: '[1].slug', message: 'duplicate slug "big-box" (also profile [0])' }]);
  });

  it('a bad community config names the field', () => {
    const res = configSchema.safeParse({ profiles: [{ display_name: 'A', default: true, kubespawner_override: 'no' }] });
    expect(res.success).toBe(false);
    expect(JSON.stringify(res.error?.issues[0]?.path)).toBe('["profiles",0,"kubespawner_override"]');
  });

  it('diffs profiles by slug', () => {
    expect(diffJson([{ slug: 'a', x: 1 }, { slug: 'b' }], [{ slug: 'b' }, { slug: 'a', x: 2 }])).toEqual([{ path: '[slug=a].x', op: 'changed', from: 1, to: 2 }]);
  });
});

describe('the service definition for check-config', () => {
  it('references every allowed_groups entry and admin group with its field path, and provides the slugs', async () => {
    const { service } = await import('../src/app.js');
    const { communityProfiles } = await import('./fixtures.js');
    const config = configSchema.parse({ profiles: communityProfiles, adminGroups: ['profile-editors'] });
    expect(service.references!(config)).toEqual([
      { kind: 'group', name: 'Instructors', field: 'profile-api.profiles[0].profile_options.memory.choices.16G.allowed_groups[0]' },
      { kind: 'group', name: 'gpu-users', field: 'profile-api.profiles[1].allowed_groups[0]' },
      { kind: 'group', name: 'profile-editors', field: 'profile-api.adminGroups[0]' },
    ]);
    expect(service.provides!(config)).toEqual({ profiles: ['datascience', 'gpu'] });
  });
});
