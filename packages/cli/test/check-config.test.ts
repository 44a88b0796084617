/** check-config's rule: every schema error and every unresolved reference between sections, in one pass. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { service as authBridge } from '@hubside/auth-bridge';
import { service as dataGateway } from '@hubside/data-gateway';
import { service as profileApi } from '@hubside/profile-api';
import { service as usageCollector } from '@hubside/usage-collector';
import type { CommunityProvides, CommunityReference } from '@hubside/service-kit';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { checkCommunityFile, parseCommunityYaml } from '../src/check-config.js';
import type { CheckedDefinition } from '../src/check-config.js';

/*
 * Stub definitions, only to exercise the checker: each section is a list of names it refers to
 * and names it defines, and the stub reports them as the services' `references`/`provides` do.
 */
const refsSchema = z
  .object({
    groups: z.array(z.string()).default([]),
    profilesUsed: z.array(z.string()).default([]),
    datasetsUsed: z.array(z.string()).default([]),
    currency: z.string().optional(),
    profiles: z.array(z.string()).optional(),
    datasets: z.array(z.string()).optional(),
  })
  .strict();
type Refs = z.output<typeof refsSchema>;

function stub(name: CheckedDefinition['name']): CheckedDefinition {
  return {
    name,
    configSchema: refsSchema,
    references(config: Refs): CommunityReference[] {
      return [
        ...config.groups.map((g, i) => ({ kind: 'group' as const, name: g, field: `${name}.groups[${i}]` })),
        ...config.profilesUsed.map((p, i) => ({ kind: 'profile' as const, name: p, field: `${name}.profilesUsed[${i}]` })),
        ...config.datasetsUsed.map((d, i) => ({ kind: 'dataset' as const, name: d, field: `${name}.datasetsUsed[${i}]` })),
        ...(config.currency ? [{ kind: 'currency' as const, name: config.currency, field: `${name}.currency` }] : []),
      ];
    },
    provides(config: Refs): CommunityProvides {
      return { ...(config.profiles ? { profiles: config.profiles } : {}), ...(config.datasets ? { datasets: config.datasets } : {}) };
    },
  };
}
const STUBS = (['auth-bridge', 'profile-api', 'usage-collector', 'data-gateway'] as const).map(stub);
const REAL = [authBridge, profileApi, usageCollector, dataGateway];

const community = {
  name: 'Test',
  currency: 'EUR',
  groups: { students: null, instructors: null, 'hub-staff': null, 'physics-101': null },
  admins: { groups: ['hub-staff'] },
  courses: { 'physics-101': { instructors: { groups: ['instructors'], users: ['prof-ada'] } } },
};

describe('references between sections', () => {
  it('accepts a file whose sections agree', () => {
    const r = checkCommunityFile(
      {
        community,
        'profile-api': { profiles: ['datascience', 'gpu'], groups: ['students'] },
        'usage-collector': { profilesUsed: ['datascience', 'gpu'], groups: ['physics-101'], currency: 'EUR' },
        'data-gateway': { datasets: ['scratch'] },
        'auth-bridge': { datasetsUsed: ['scratch'], groups: ['instructors'] },
      },
      STUBS,
    );
    expect(r).toEqual({ problems: [], notes: [] });
  });

  it('names each unknown profile, group, dataset and currency with its field and what there is', () => {
    const r = checkCommunityFile(
      {
        community,
        'profile-api': { profiles: ['datascience', 'gpu'], groups: ['Students'] },
        'usage-collector': { profilesUsed: ['small', 'gpu', 'large'], groups: ['chem-201'], currency: 'USD' },
        'data-gateway': { datasets: ['scratch', 'climate-shared'] },
        'auth-bridge': { datasetsUsed: ['archive'] },
      },
      STUBS,
    );
    expect(r.problems).toEqual([
      'auth-bridge.datasetsUsed[0]: no dataset "archive" in data-gateway.datasets (there are: climate-shared, scratch)',
      'profile-api.groups[0]: no group "Students" in community.groups (did you mean "students"? there are: hub-staff, instructors, physics-101, students)',
      'usage-collector.groups[0]: no group "chem-201" in community.groups (there are: hub-staff, instructors, physics-101, students)',
      'usage-collector.profilesUsed[0]: no profile "small" in profile-api.profiles (there are: datascience, gpu)',
      'usage-collector.profilesUsed[2]: no profile "large" in profile-api.profiles (there are: datascience, gpu)',
      `usage-collector.currency: "USD" is not the community's currency (community.currency is "EUR"); every price and budget is in community.currency`,
    ]);
  });

  it('reports every section\'s schema errors and the other sections\' reference errors together', () => {
    const r = checkCommunityFile(
      {
        community: { ...community, colour: 'blue' },
        'profile-api': { profiles: ['datascience'], surprise: 1 },
        'usage-collector': { profilesUsed: ['datascience'], groups: ['nobody'] },
        'data-gateway': { datasets: 'not a list' },
        'auth-bridge': { groups: ['students'] },
      },
      STUBS,
    );
    expect(r.problems).toHaveLength(3);
    expect(r.problems[0]).toMatch(/^community: .*colour/);
    expect(r.problems[1]).toMatch(/^profile-api: .*surprise/);
    expect(r.problems[2]).toMatch(/^data-gateway\.datasets: /);
    // The community section is invalid, so its groups can't be trusted: group references are not checked...
    expect(r.problems.join('\n')).not.toContain('nobody');
    // ...and profile-api's profiles are unknown, so a profile reference is not called missing.
    expect(r.problems.join('\n')).not.toContain('no profile');
  });

  it('checks the group references of the community section itself', () => {
    const r = checkCommunityFile(
      {
        community: {
          ...community,
          admins: { groups: ['hub-staf'] },
          courses: { 'chem-201': { instructors: { groups: ['instructors', 'chem-teachers'] } } },
        },
      },
      STUBS,
    );
    expect(r.problems).toEqual([
      'community.admins.groups[0]: no group "hub-staf" in community.groups (there are: hub-staff, instructors, physics-101, students)',
      'community.courses.chem-201: no group "chem-201" in community.groups (there are: hub-staff, instructors, physics-101, students)',
      'community.courses.chem-201.instructors.groups[1]: no group "chem-teachers" in community.groups (there are: hub-staff, instructors, physics-101, students)',
    ]);
  });

  it('checks groups only when community.groups is given, and says how many it could not check', () => {
    const r = checkCommunityFile({ community: { name: 'No groups' }, 'usage-collector': { groups: ['a', 'b'] } }, STUBS);
    expect(r.problems).toEqual([]);
    expect(r.notes).toEqual(['2 group references were not checked: declare the community\'s groups in community.groups to check them']);
  });

  it('holds a section currency to the default community currency when the file has no community section', () => {
    const r = checkCommunityFile({ 'usage-collector': { currency: 'EUR' } }, STUBS);
    expect(r.problems).toEqual([
      `usage-collector.currency: "EUR" is not the community's currency (community.currency is "USD", the default); every price and budget is in community.currency`,
    ]);
  });

  it('falls back to nothing for a service without references or provides', () => {
    const bare: CheckedDefinition[] = STUBS.map(({ name, configSchema }) => ({ name, configSchema }));
    const r = checkCommunityFile({ community, 'usage-collector': { profilesUsed: ['small'], groups: ['nobody'] } }, bare);
    expect(r).toEqual({ problems: [], notes: [] });
  });

  it('uses a service\'s own references over the CLI\'s fallback for it', () => {
    const fallback = { references: () => [{ kind: 'group' as const, name: 'from-fallback', field: 'usage-collector.x' }] };
    const own = checkCommunityFile({ community, 'usage-collector': { groups: ['from-definition'] } }, STUBS, { 'usage-collector': fallback });
    expect(own.problems.join('\n')).toContain('from-definition');
    expect(own.problems.join('\n')).not.toContain('from-fallback');
    const bare = STUBS.map(({ name, configSchema }) => ({ name, configSchema }));
    const viaFallback = checkCommunityFile({ community, 'usage-collector': {} }, bare, { 'usage-collector': fallback });
    expect(viaFallback.problems.join('\n')).toContain('usage-collector.x: no group "from-fallback"');
  });

  it('reports a service whose listing fails, and still checks the rest', () => {
    const broken = STUBS.map((d) =>
      d.name === 'data-gateway'
        ? {
            ...d,
            references: () => {
              throw new Error('boom');
            },
          }
        : d,
    );
    const r = checkCommunityFile({ community, 'data-gateway': {}, 'usage-collector': { groups: ['nobody'] } }, broken);
    expect(r.problems).toEqual([
      'data-gateway: could not list the names this section uses and defines (boom); please report this',
      'usage-collector.groups[0]: no group "nobody" in community.groups (there are: hub-staff, instructors, physics-101, students)',
    ]);
  });

  it('an empty profile list is a list: a profile reference then finds none', () => {
    const r = checkCommunityFile({ community, 'profile-api': { profiles: [] }, 'usage-collector': { profilesUsed: ['gpu'] } }, STUBS);
    expect(r.problems).toEqual(['usage-collector.profilesUsed[0]: no profile "gpu" in profile-api.profiles (there are none)']);
  });

  it('never takes a name for a member of Object.prototype', () => {
    const r = checkCommunityFile({ community, 'usage-collector': { groups: ['constructor', 'toString', '__proto__'] } }, STUBS);
    expect(r.problems.map((p) => p.split(':')[0])).toEqual(['usage-collector.groups[0]', 'usage-collector.groups[1]', 'usage-collector.groups[2]']);
    // JupyterHub allows a group called __proto__; declared, it is found like any other.
    const groups = JSON.parse('{"__proto__": null, "constructor": {"displayName": "C"}}') as Record<string, unknown>;
    const declared = checkCommunityFile({ community: { name: 'P', groups }, 'usage-collector': { groups: ['__proto__', 'constructor'] } }, STUBS);
    expect(declared).toEqual({ problems: [], notes: [] });
  });

  it('property: a group reference is a problem exactly when the group is not declared', () => {
    const name = fc.constantFrom('a', 'b', 'B', 'c d', 'é', 'constructor', '__proto__', 'x.y');
    fc.assert(
      fc.property(fc.uniqueArray(name, { maxLength: 5 }), fc.array(name, { maxLength: 6 }), (declared, used) => {
        const groups = Object.fromEntries(declared.map((g) => [g, null]));
        const r = checkCommunityFile({ community: { name: 'P', groups }, 'data-gateway': { groups: used } }, STUBS);
        const missing = used.flatMap((g, i) => (declared.includes(g) ? [] : [`data-gateway.groups[${i}]`]));
        expect(r.problems.map((p) => p.split(': no group')[0])).toEqual(missing);
      }),
      { numRuns: 200 },
    );
  });
});

describe('the YAML itself', () => {
  it('reports a syntax error once, with its line and column', () => {
    const r = parseCommunityYaml('community:\n  name: x\nprofile-api:\n  profiles: [a, b\nusage-collector: {}\n');
    expect(r).toEqual({ ok: false, problems: [expect.stringMatching(/^\(yaml\) line 5, column 1: .*end with a \]$/)] });
    const quote = parseCommunityYaml('community:\n  name: "unterminated\n');
    expect(quote.ok ? [] : quote.problems).toHaveLength(1);
    expect(quote.ok ? '' : quote.problems[0]).toMatch(/^\(yaml\) line \d+, column \d+: Missing closing "quote$/);
  });

  it('reports every duplicate key', () => {
    const r = parseCommunityYaml('community:\n  name: a\n  name: b\nprofile-api: {}\nprofile-api: {}\n');
    expect(r).toEqual({
      ok: false,
      problems: ['(yaml) line 3, column 3: Map keys must be unique', '(yaml) line 5, column 1: Map keys must be unique'],
    });
  });

  it('refuses an alias bomb rather than expanding it', () => {
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]', ...Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}]`)].join('\n');
    const r = parseCommunityYaml(bomb);
    expect(r.ok).toBe(false);
    expect(r.ok ? '' : r.problems[0]).toMatch(/^\(yaml\): .*alias/i);
  });

  it('an empty file is an empty community', () => {
    expect(parseCommunityYaml('')).toEqual({ ok: true, value: {} });
  });
});

describe('with the four real services', () => {
  const read = (url: string) => {
    const parsed = parseCommunityYaml(readFileSync(fileURLToPath(new URL(url, import.meta.url)), 'utf8'));
    if (!parsed.ok) throw new Error(parsed.problems.join('\n'));
    return parsed.value;
  };

  it('refuses the example file of issue 14, naming each reference its sections disagree on', () => {
    const r = checkCommunityFile(read('./fixtures/issue-14-community.yaml'), REAL);
    expect(r.problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^usage-collector\.currency: "EUR" is not the community's currency \(community\.currency is "USD", the default\)/),
        'usage-collector.rateCards[0].profileHour.small: no profile "small" in profile-api.profiles (there are: datascience, gpu)',
        'usage-collector.rateCards[0].profileHour.large: no profile "large" in profile-api.profiles (there are: datascience, gpu)',
        'usage-collector.profiles.small: no profile "small" in profile-api.profiles (there are: datascience, gpu)',
        'usage-collector.profiles.large: no profile "large" in profile-api.profiles (there are: datascience, gpu)',
      ]),
    );
    expect(r.problems).toHaveLength(5);
  });

  it('accepts the example community, checking every group it names', () => {
    const r = checkCommunityFile(read('../../../examples/community.yaml'), REAL);
    expect(r).toEqual({ problems: [], notes: [] });
  });

  it('the example bills, without the hook, each profile at the price its spawn page shows', () => {
    const doc = read('../../../examples/community.yaml') as Record<string, unknown>;
    const profiles = profileApi.configSchema.parse(doc['profile-api']).profiles;
    const cards = usageCollector.configSchema.parse(doc['usage-collector']).rateCards;
    expect(cards.length).toBeGreaterThan(0);
    for (const card of cards) {
      expect(card.mode).toBe('profile-hour');
      expect(Object.keys(card.profileHour).sort()).toEqual(profiles.map((p) => p.slug).sort());
      for (const p of profiles) expect(Number(card.profileHour[p.slug!]), `${card.id} ${p.slug}`).toBe(p.price_per_hour);
    }
  });

  it('each service names every group, profile and dataset its section refers to', () => {
    const bare = REAL;
    const doc = {
      community: { name: 'All', currency: 'EUR', groups: { known: null } },
      'auth-bridge': {
        hubs: {
          h: { clientId: 'h', redirectUris: ['http://127.0.0.1/cb'], allowedGroups: ['g1'], adminGroups: ['g2'], groupMap: { 'idp:faculty': 'g3', 'x.y': 'known' } },
        },
      },
      'profile-api': {
        adminGroups: ['g4'],
        profiles: [
          {
            display_name: 'Data Science',
            default: true,
            allowed_groups: ['g5'],
            profile_options: {
              memory: {
                display_name: 'Memory',
                choices: { '16G': { display_name: '16 GB', allowed_groups: ['g6'] } },
                unlisted_choice: { enabled: true, allowed_groups: ['g7'] },
              },
            },
          },
        ],
      },
      'usage-collector': {
        currency: 'USD',
        profiles: { 'data-science': {}, small: {} },
        rateCards: [{ id: 'c', effectiveFrom: '2026-01-01', profileHour: { large: '1' } }],
        attribution: { groupOrder: ['g8'] },
        access: { adminGroups: ['g9'], managers: { 'prof-ada': ['g10'] }, managerGroups: { g11: ['g12'] } },
        budgets: { groups: { g13: { limit: '1' }, 'a.b': { limit: '1' } } },
      },
      'data-gateway': {
        datasets: { d: { provider: 'gcs', bucket: 'bucket', prefix: 'x/', groups: ['g14'] } },
      },
    };
    const r = checkCommunityFile(doc, bare);
    // Each service lists its own references in its own order; what matters is that none is missing.
    const fields = r.problems.map((p) => p.slice(0, p.indexOf(': '))).sort();
    expect(fields).toEqual([
      'auth-bridge.hubs.h.allowedGroups[0]',
      'auth-bridge.hubs.h.adminGroups[0]',
      'auth-bridge.hubs.h.groupMap.idp:faculty',
      'profile-api.adminGroups[0]',
      'profile-api.profiles[0].allowed_groups[0]',
      'profile-api.profiles[0].profile_options.memory.choices.16G.allowed_groups[0]',
      'profile-api.profiles[0].profile_options.memory.unlisted_choice.allowed_groups[0]',
      'usage-collector.currency',
      'usage-collector.profiles.small',
      'usage-collector.rateCards[0].profileHour.large',
      'usage-collector.budgets.groups.g13',
      'usage-collector.budgets.groups["a.b"]',
      'usage-collector.attribution.groupOrder[0]',
      'usage-collector.access.adminGroups[0]',
      'usage-collector.access.managers.prof-ada[0]',
      'usage-collector.access.managerGroups.g11',
      'usage-collector.access.managerGroups.g11[0]',
      'data-gateway.datasets.d.groups[0]',
    ].sort());
    // The profile without a slug is known by KubeSpawner's slug of its display name.
    expect(r.problems.join('\n')).toContain('no profile "large" in profile-api.profiles (there are: data-science)');
    // Without a currency of its own, usage-collector names none (today's schema fills in USD).
    const { currency: _c, ...noCurrency } = doc['usage-collector'];
    expect(checkCommunityFile({ ...doc, 'usage-collector': noCurrency }, bare).problems.join('\n')).not.toContain('currency');
  });
});
