/** The demo community npm start derives from the community file: it follows the file's names. */
import { join } from 'node:path';
import { readYamlFile } from '@hubside/service-kit';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, demoCommunity, demoUsagePlan, productRoles } from '../../scripts/product/product.mjs';

const profiles = [
  { slug: 'datascience', display_name: 'Data science', price_per_hour: 0.05, kubespawner_override: { cpu_limit: 2, mem_limit: '4G' } },
  { slug: 'gpu', display_name: 'GPU', price_per_hour: 0.9, allowed_groups: ['gpu-users'], kubespawner_override: { extra_resource_limits: { 'nvidia.com/gpu': 1 } } },
];

describe('the demo community', () => {
  it("takes the course, its instructor, the admin group and the currency from the file's community section", () => {
    const demo = demoCommunity({
      community: {
        name: 'Chemistry Hub',
        currency: 'CHF',
        admins: { groups: ['chem-staff'] },
        courses: { 'chem-201': { instructors: { groups: ['teachers'], users: ['prof-bo'] } } },
      },
      'profile-api': { profiles },
    });
    expect(demo).toMatchObject({ name: 'Chemistry Hub', course: 'chem-201', instructor: 'prof-bo', instructorsGroup: 'teachers', adminGroup: 'chem-staff', currency: 'CHF', communityAdmins: true });
    expect(demo.groups['chem-201']).toEqual(expect.arrayContaining(['alice', 'bob', 'dan']));
    expect(demo.groups.teachers).toEqual(['prof-bo']);
    expect(demo.groups['chem-staff']).toEqual(['grace']);
    // A group-only profile: bob is in its group, alice is not.
    expect(demo.groups['gpu-users']).toEqual(['bob']);
    expect(demo.people.find((p) => p.hubAdmin)?.name).toBe('admin');
  });

  it("falls back to the older per-service fields, then to the example's names", () => {
    const older = demoCommunity({ 'usage-collector': { currency: 'EUR', access: { adminGroups: ['ops'], managers: { 'prof-x': ['bio-1'] } } } });
    expect(older).toMatchObject({ course: 'bio-1', instructor: 'prof-x', adminGroup: 'ops', currency: 'EUR', communityAdmins: false });
    expect(demoCommunity({})).toMatchObject({ course: 'physics-101', instructor: 'prof-ada', instructorsGroup: 'instructors', adminGroup: 'hub-staff' });
  });

  it('reads examples/community.yaml as it is now', () => {
    const demo = demoCommunity(readYamlFile(join(REPO_ROOT, 'examples', 'community.yaml')));
    expect(demo.profiles.map((p) => p.slug)).toEqual(expect.arrayContaining(['datascience', 'gpu']));
    expect(demo.people.map((p) => p.name)).toContain(demo.instructor);
  });

  it('seeds past sessions only, and enough for dan to be over a month budget', () => {
    const demo = demoCommunity({ 'profile-api': { profiles } });
    const now = new Date('2026-12-20T12:00:00Z');
    const plan = demoUsagePlan(demo, now);
    for (const entry of plan) for (const s of entry.sessions) expect(s.startMs + s.hours * 3_600_000).toBeLessThan(now.getTime());
    const dan = plan.find((e) => e.user === 'dan')!;
    expect(dan.profile.slug).toBe('gpu');
    const monthStart = Date.UTC(2026, 11, 1);
    expect(dan.sessions.every((s) => s.startMs >= monthStart)).toBe(true);
    // 0.9 an hour for more than 20 hours: over the example's 10 EUR default budget.
    expect(dan.sessions.reduce((h, s) => h + s.hours, 0)).toBeGreaterThan(20);
    expect(plan.map((e) => e.user)).toEqual(expect.arrayContaining(['alice', 'bob', demo.instructor]));
    // Early in a month, on servers side by side; in its first minutes, nothing rather than a session in the future.
    const early = demoUsagePlan(demo, new Date('2026-12-01T06:00:00Z')).find((e) => e.user === 'dan')!;
    expect(early.sessions.reduce((h, s) => h + s.hours, 0)).toBeGreaterThan(20);
    expect(new Set(early.sessions.map((s) => s.server)).size).toBe(early.sessions.length);
    expect(demoUsagePlan(demo, new Date('2026-12-01T00:05:00Z')).find((e) => e.user === 'dan')).toBeUndefined();
  });

  it("gives usage-collector's role what its poll needs, and users what the spawn page's Start needs", () => {
    const roles = Object.fromEntries(productRoles().map((r) => [r.name, r]));
    expect(roles['hubside-usage-collector']!.scopes).toEqual(expect.arrayContaining(['list:users', 'read:users', 'read:servers', 'read:groups']));
    expect(roles.user!.scopes).toEqual(expect.arrayContaining(['self', 'access:services', 'servers!user', 'read:servers!user']));
    for (const role of productRoles()) for (const scope of role.scopes) expect(scope).not.toMatch(/^(admin|admin:|tokens$)/);
  });
});
