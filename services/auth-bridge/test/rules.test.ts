/** What an institution sends that no database or hub could hold is dropped, not stored (and never a 500 later). */
import { describe, expect, it } from 'vitest';
import { configSchema } from '../src/config.js';
import { applyRules } from '../src/rules.js';

const cfg = configSchema.parse({
  upstreams: { u: { displayName: 'U', issuer: 'https://idp.example/', clientId: 'c', clientSecret: 's' } },
  hubs: { h: { clientId: 'h', clientSecret: 's', redirectUris: ['https://hub.example/cb'], keepUnmappedGroups: true, adminGroups: ['staff'] } },
});
const input = (claims: Record<string, unknown>, accessCode?: { group: string }) => ({
  hubName: 'h',
  hub: cfg.hubs.h!,
  idpName: 'u',
  idp: cfg.upstreams.u!,
  claims,
  accessCode,
});

describe('applyRules with hostile upstream claims', () => {
  it('drops groups that are no hub group name, and free text the database cannot hold', () => {
    const out = applyRules(input({ email: 'ann@u.edu', name: 'Ann\u0000', groups: ['ok', 'a\u0000b', '\ud800', 'x'.repeat(300), 'staff'] }));
    expect(out).toMatchObject({ ok: true, identity: { username: 'ann@u.edu', name: null, groups: ['ok', 'staff'], admin: true } });
  });

  it('refuses a username with a lone surrogate', () => {
    expect(applyRules(input({ email: 'a\udc00@u.edu' }))).toMatchObject({ ok: false, reason: 'bad_username' });
  });

  it('keeps an access code\u2019s group out of the account: it lives as a membership that a revoke ends', () => {
    const out = applyRules(input({ email: 'guest@u.edu' }, { group: 'staff' }));
    expect(out).toMatchObject({ ok: true, identity: { groups: [], admin: false } });
  });
});
