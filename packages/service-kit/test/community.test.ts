import { describe, expect, it } from 'vitest';
import { communitySchema, coursesTaughtBy, isCommunityAdmin } from '../src/community.js';

describe('the community model', () => {
  const community = communitySchema.parse({
    name: 'Example',
    currency: 'EUR',
    groups: { 'hub-staff': null, instructors: {}, 'physics-101': { displayName: 'Physics 101' } },
    admins: { groups: ['hub-staff'], users: ['dean'] },
    courses: { 'physics-101': { instructors: { groups: ['instructors'], users: ['prof-ada'] } } },
  });

  it('fills defaults and keeps declared groups', () => {
    expect(community.currency).toBe('EUR');
    expect(Object.keys(community.groups ?? {})).toEqual(['hub-staff', 'instructors', 'physics-101']);
    expect(communitySchema.parse({ name: 'x' })).toMatchObject({ currency: 'USD', admins: { groups: [], users: [] }, courses: {} });
  });

  it('refuses a currency that is not an ISO code, control characters and lone surrogates in names', () => {
    expect(communitySchema.safeParse({ name: 'x', currency: '$' }).success).toBe(false);
    expect(communitySchema.safeParse({ name: 'x', admins: { groups: ['a\u0000b'] } }).success).toBe(false);
    expect(communitySchema.safeParse({ name: 'x', admins: { groups: ['a\uD800'] } }).success).toBe(false);
    expect(communitySchema.safeParse({ name: 'x', admins: { groups: ['😀 ok'] } }).success).toBe(true);
  });

  it('keeps a group named __proto__ (JupyterHub allows it) without touching any prototype, and bounds the maps', () => {
    const parsed = communitySchema.parse(JSON.parse('{"name":"x","groups":{"__proto__":{"displayName":"P"},"a":null},"courses":{"__proto__":{}}}'));
    expect(Object.keys(parsed.groups ?? {})).toEqual(['__proto__', 'a']);
    expect(Object.getPrototypeOf(parsed.groups)).toBe(null);
    expect(parsed.groups?.['__proto__']).toEqual({ displayName: 'P' });
    expect(coursesTaughtBy(parsed, { name: 'u' })).toEqual([]);
    expect(Object.keys(parsed.courses)).toEqual(['__proto__']);
    const bad = communitySchema.safeParse({ name: 'x', groups: { ok: { nope: 1 }, 'a\u0000': {} } });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues.map((i) => i.path.join('.'))).toEqual(['groups.ok', 'groups.a\u0000']);
    const many = Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`g${i}`, {}]));
    expect(communitySchema.safeParse({ name: 'x', groups: many }).success).toBe(false);
  });

  it('decides community admins and instructors the same way for every service', () => {
    expect(isCommunityAdmin(community, { name: 'root', admin: true })).toBe(true);
    expect(isCommunityAdmin(community, { name: 'dean' })).toBe(true);
    expect(isCommunityAdmin(community, { name: 'kim', groups: ['hub-staff'] })).toBe(true);
    expect(isCommunityAdmin(community, { name: 'kim', groups: ['instructors'] })).toBe(false);
    expect(coursesTaughtBy(community, { name: 'prof-ada' })).toEqual(['physics-101']);
    expect(coursesTaughtBy(community, { name: 'tom', groups: ['instructors'] })).toEqual(['physics-101']);
    expect(coursesTaughtBy(community, { name: 'tom', groups: ['physics-101'] })).toEqual([]);
  });
});
