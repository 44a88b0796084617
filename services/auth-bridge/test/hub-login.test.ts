/**
 * End to end with a REAL JupyterHub: the hub logs users in through the bridge (behind the hub's
 * own proxy) with an authenticator that behaves like GenericOAuthenticator (client secret in
 * the body, its default), and two oidc-provider universities with different username rules sit
 * upstream. hub-login-basic.test.ts does the same with HTTP Basic client authentication.
 */
import { waitFor } from '@hubside/testing';
import fc from 'fast-check';
import type { RunningHub } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadClaims } from '../src/accounts.js';
import { loginVia, startBridgedHub } from './fixtures/hub.js';
import type { BridgedHub } from './fixtures/hub.js';
import { PREFIX, portOf } from './fixtures/setup.js';
import type { Universities } from './fixtures/setup.js';

let env: BridgedHub;
let hub: RunningHub;
let unis: Universities;
let bridge: FastifyInstance;
let adminToken: string;

beforeAll(async () => {
  env = await startBridgedHub({ basicAuth: false });
  ({ hub, unis, bridge, adminToken } = env);
}, 120_000);

afterAll(async () => {
  await env?.close();
});

async function hubUser(name: string) {
  return hub.api<{ name: string; admin: boolean; groups: string[] }>('GET', `/users/${encodeURIComponent(name)}`);
}

describe('a real JupyterHub logging in through the bridge', () => {
  it('logs in a University A user as "alice", an admin in "instructors"', async () => {
    unis.a.nextUser = 'alice';
    const browser = hub.browser();
    const page = await loginVia(browser, 'uni-a');
    expect(page.status).toBe(200);
    expect(new URL(page.url).pathname).toBe('/hub/home');
    // The chain went through the proxy to the bridge, to the university, and back.
    expect(page.redirects.some((u) => u.startsWith(`${hub.url}${PREFIX}oidc/auth`))).toBe(true);
    expect(page.redirects.some((u) => u.startsWith(unis.a.issuer))).toBe(true);
    const user = await hubUser('alice');
    expect(user.status).toBe(200);
    expect(user.body).toMatchObject({ name: 'alice', admin: true, groups: ['instructors'] });
    // What the hub sent, as the bridge saw it: PKCE S256, no nonce, openid added to its empty
    // scope, and the client secret in the body along with oauthenticator's stray data=None.
    expect(env.authorizations.at(-1)).toEqual({ nonce: undefined, codeChallengeMethod: 'S256', scope: 'openid' });
    expect(env.tokenRequests.at(-1)).toEqual({ grantType: 'authorization_code', basic: false, secretInBody: true, data: 'None' });
  });

  it('refreshes with the refresh_token grant, picking up new groups', async () => {
    const token = await hub.createToken('alice');
    const account = await bridge.db.selectFrom('account').select('id').where('username', '=', 'alice').executeTakeFirstOrThrow();
    await bridge.db
      .insertInto('code_membership')
      .values({ account_id: account.id, code_id: 'manual', group_name: 'late-joiners', expires_at: new Date(Date.now() + 3600_000) })
      .execute();
    await waitFor(
      async () => {
        const me = await hub.api<{ groups: string[] }>('GET', '/user', undefined, token);
        return me.body.groups.includes('late-joiners');
      },
      { timeoutMs: 20_000, intervalMs: 300, what: 'the hub to refresh alice and see her new group' },
    );
    expect(hub.logTail(400)).toContain('bridge refresh_token grant ok for alice');
    expect(env.tokenRequests.filter((r) => r.grantType === 'refresh_token')[0]).toMatchObject({ basic: false, secretInBody: true });
  });

  it('refuses a University B user whose domain the hub does not allow, and creates no hub user', async () => {
    unis.b.nextUser = 'bob';
    const page = await loginVia(hub.browser(), 'uni-b');
    expect(page.status).toBe(403);
    expect(page.body).toContain('Your domain is not allowed on this hub');
    expect((await hubUser('bob@uni-b.edu')).status).toBe(404);
  });

  it('gives a refused person a way back: another institution on the same login, or the hub', async () => {
    unis.b.nextUser = 'bob';
    const browser = hub.browser();
    const refused = await loginVia(browser, 'uni-b');
    expect(refused.status).toBe(403);
    const links = [...refused.body.matchAll(/<a href="([^"]*)">([^<]*)<\/a>/g)].map((m) => ({ href: m[1]!.replaceAll('&amp;', '&'), text: m[2]! }));
    expect(links.map((l) => l.text)).toEqual(['Choose another institution', 'Go to Community Hub']);
    expect(links[1]!.href).toBe(`${hub.url}/hub/`);
    // The same login goes on: back to the chooser, this time with University A.
    const chooser = await browser.get(new URL(links[0]!.href, refused.url).href);
    expect(chooser.status).toBe(200);
    expect(chooser.body).toContain('University A');
    const link = /href="([^"]*\/login\/uni-a)"/.exec(chooser.body)![1]!;
    unis.a.nextUser = 'arno';
    const done = await browser.get(new URL(link.replaceAll('&amp;', '&'), chooser.url).href);
    expect(new URL(done.url).pathname).toBe('/hub/home');
    expect((await hubUser('arno')).status).toBe(200);
  });

  it('shows the chooser with both universities when no hint is given', async () => {
    const page = await hub.browser().get('/hub/oauth_login');
    expect(page.status).toBe(200);
    expect(page.url).toContain(`${PREFIX}interaction/`);
    expect(page.body).toContain('University A');
    expect(page.body).toContain('University B');
  });
});

describe('event access codes and the admin API', () => {
  const auth = () => ({ authorization: `token ${adminToken}`, 'content-type': 'application/json' });

  it('lets a workshop guest in with a code, into the code\u2019s group', async () => {
    const created = await fetch(`${hub.url}${PREFIX}api/hubs/community/codes`, {
      method: 'POST',
      headers: auth(),
      body: JSON.stringify({ group: 'workshop', expiresAt: new Date(Date.now() + 3600_000).toISOString(), maxUses: 1, idps: ['uni-b'] }),
    });
    expect(created.status).toBe(201);
    const code = (await created.json()) as { id: string; link: string };
    unis.b.nextUser = 'bob';
    const page = await hub.browser().get(code.link);
    expect(new URL(page.url).pathname).toBe('/hub/home');
    const user = await hubUser('bob@uni-b.edu');
    expect(user.body).toMatchObject({ name: 'bob@uni-b.edu', groups: ['workshop'], admin: false });

    const list = await fetch(`${hub.url}${PREFIX}api/hubs/community/codes`, { headers: auth() });
    expect(((await list.json()) as { id: string; uses: number }[]).find((c) => c.id === code.id)).toMatchObject({ uses: 1 });
    // A second person cannot use a one-use code.
    const second = await hub.browser().get(code.link);
    expect(second.status).toBe(410);
    expect(second.body).toContain('used as many times as it allows');
  });

  it('ends what a revoked code granted: the bridge at once, the hub at its next refresh (auth_refresh_age)', async () => {
    const created = await fetch(`${hub.url}${PREFIX}api/hubs/community/codes`, {
      method: 'POST',
      headers: auth(),
      // instructors is one of the hub's adminGroups: the code makes whoever redeems it an admin.
      body: JSON.stringify({ group: 'instructors', expiresAt: new Date(Date.now() + 3600_000).toISOString(), maxUses: 1, idps: ['uni-b'] }),
    });
    expect(created.status).toBe(201);
    const code = (await created.json()) as { id: string; link: string };
    unis.b.nextUser = 'bob';
    const page = await hub.browser().get(code.link);
    expect(new URL(page.url).pathname).toBe('/hub/home');
    const before = await hubUser('bob@uni-b.edu');
    expect(before.body.admin).toBe(true);
    expect(before.body.groups).toContain('instructors');
    const bobCodeToken = await hub.createToken('bob@uni-b.edu');

    const revoked = await fetch(`${hub.url}${PREFIX}api/hubs/community/codes/${code.id}`, { method: 'DELETE', headers: { authorization: `token ${adminToken}` } });
    expect(revoked.status).toBe(200);
    // What the bridge asserts (userinfo and refresh both read these claims) changes at once.
    const account = await bridge.db.selectFrom('account').select('id').where('username', '=', 'bob@uni-b.edu').executeTakeFirstOrThrow();
    const claims = await loadClaims(bridge.db, account.id, bridge.bridge.config.hubs);
    expect(claims).toMatchObject({ username: 'bob@uni-b.edu', admin: false });
    expect(claims!.groups).not.toContain('instructors');
    // The hub learns it when it next refreshes carol (here auth_refresh_age = 1 s).
    await waitFor(
      async () => {
        const me = await hub.api<{ admin: boolean; groups: string[] }>('GET', '/user', undefined, bobCodeToken);
        return me.body.admin === false && !me.body.groups.includes('instructors');
      },
      { timeoutMs: 20_000, intervalMs: 300, what: 'the hub to refresh bob and drop his admin and group' },
    );
    const after = await hubUser('bob@uni-b.edu');
    expect(after.body.admin).toBe(false);
    expect(after.body.groups).not.toContain('instructors');
    expect(await revoked.json()).toEqual({ revoked: true, membershipsEnded: 1 });
  });

  it('holds access codes to the community file’s limits: names, uses, expiry, live codes per hub', async () => {
    const post = (body: unknown) => fetch(`${hub.url}${PREFIX}api/hubs/community/codes`, { method: 'POST', headers: auth(), body: JSON.stringify(body) });
    const soon = new Date(Date.now() + 3600_000).toISOString();
    const before = await bridge.db.selectFrom('access_code').select('id').execute();
    const refused = [
      await post({ group: 'a\u0000b', expiresAt: soon, maxUses: 1 }),
      // JSON.stringify writes a lone surrogate as the escape \ud800, which JSON.parse turns back into one.
      await post({ group: '\ud800', expiresAt: soon, maxUses: 1 }),
      await post({ group: 'tab\there', expiresAt: soon, maxUses: 1 }),
      await post({ group: 'x'.repeat(256), expiresAt: soon, maxUses: 1 }),
      await post({ group: 'ok', expiresAt: soon, maxUses: 100_001 }),
      await post({ group: 'ok', expiresAt: new Date(Date.now() + 367 * 86_400_000).toISOString(), maxUses: 1 }),
      await post({ group: 'ok', expiresAt: soon, maxUses: 1, idps: ['\udfff'] }),
    ];
    for (const res of refused) {
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ statusCode: 400, error: 'Bad Request' });
    }
    expect(await bridge.db.selectFrom('access_code').select('id').execute()).toHaveLength(before.length);

    // At most 1000 live codes per hub; revoked and expired ones do not count.
    const live = await bridge.db.selectFrom('access_code').select('id').where('revoked_at', 'is', null).where('expires_at', '>', new Date()).execute();
    const filler = Array.from({ length: 1000 - live.length }, (_, i) => ({
      id: crypto.randomUUID(),
      code_hash: `filler-${i}`,
      hub: 'community',
      group_name: 'filler',
      idps: '[]',
      max_uses: 1,
      expires_at: new Date(Date.now() + 3600_000),
      revoked_at: null,
      created_by: 'test',
    }));
    await bridge.db.insertInto('access_code').values(filler).execute();
    const full = await post({ group: 'ok', expiresAt: soon, maxUses: 1 });
    expect(full.status).toBe(409);
    expect(await full.json()).toMatchObject({ statusCode: 409, code: 'HUBSIDE_AUTH_ERR_TOO_MANY_CODES' });
    await bridge.db.deleteFrom('access_code').where('group_name', '=', 'filler').execute();
    const room = await post({ group: 'Физика 101 🧪', expiresAt: soon, maxUses: 100_000 });
    expect(room.status).toBe(201);
    const listed = (await (await fetch(`${hub.url}${PREFIX}api/hubs/community/codes`, { headers: auth() })).json()) as { group: string }[];
    expect(listed.map((c) => c.group)).toContain('Физика 101 🧪');
  });

  it('lets a community admin manage access codes, and nothing else of the admin API', async () => {
    const dean = { authorization: `token ${await hub.createToken('dean')}`, 'content-type': 'application/json' };
    expect((await hubUser('dean')).body.admin).toBe(false);
    const created = await fetch(`${hub.url}${PREFIX}api/hubs/community/codes`, {
      method: 'POST',
      headers: dean,
      body: JSON.stringify({ group: 'summer-school', expiresAt: new Date(Date.now() + 3600_000).toISOString(), maxUses: 30 }),
    });
    expect(created.status).toBe(201);
    const code = (await created.json()) as { id: string };
    const listed = (await (await fetch(`${hub.url}${PREFIX}api/hubs/community/codes`, { headers: dean })).json()) as { id: string; createdBy: string }[];
    expect(listed.find((c) => c.id === code.id)).toMatchObject({ createdBy: 'dean' });
    const revoked = await fetch(`${hub.url}${PREFIX}api/hubs/community/codes/${code.id}`, { method: 'DELETE', headers: { authorization: dean.authorization } });
    expect(revoked.status).toBe(200);
    // A code into an admin group would make hub admins: that stays with the hub's admins.
    const adminCode = await fetch(`${hub.url}${PREFIX}api/hubs/community/codes`, {
      method: 'POST',
      headers: dean,
      body: JSON.stringify({ group: 'instructors', expiresAt: new Date(Date.now() + 3600_000).toISOString(), maxUses: 1 }),
    });
    expect(adminCode.status).toBe(403);
    for (const path of ['api/hubs', 'api/idps', 'api/logins']) {
      expect((await fetch(`${hub.url}${PREFIX}${path}`, { headers: dean })).status, path).toBe(403);
    }
    expect((await fetch(`${hub.url}${PREFIX}api/keys/rotate`, { method: 'POST', headers: dean })).status).toBe(403);
  });

  it('refuses an expired code with a clear page', async () => {
    const created = await fetch(`${hub.url}${PREFIX}api/hubs/community/codes`, {
      method: 'POST',
      headers: auth(),
      body: JSON.stringify({ group: 'old-workshop', expiresAt: new Date(Date.now() + 3600_000).toISOString(), maxUses: 10 }),
    });
    const code = (await created.json()) as { id: string; link: string };
    await bridge.db.updateTable('access_code').set({ expires_at: new Date(Date.now() - 1000) }).where('id', '=', code.id).execute();
    const page = await hub.browser().get(code.link);
    expect(page.status).toBe(410);
    expect(page.body).toContain('This event access code has expired');
  });

  it('revokes codes, lists hubs, IdPs and recent logins, and only for hub admins', async () => {
    const created = await fetch(`${hub.url}${PREFIX}api/hubs/community/codes`, {
      method: 'POST',
      headers: auth(),
      body: JSON.stringify({ group: 'g', expiresAt: new Date(Date.now() + 3600_000).toISOString(), maxUses: 5 }),
    });
    const code = (await created.json()) as { id: string; link: string };
    const revoked = await fetch(`${hub.url}${PREFIX}api/hubs/community/codes/${code.id}`, { method: 'DELETE', headers: { authorization: `token ${adminToken}` } });
    expect(revoked.status).toBe(200);
    expect((await hub.browser().get(code.link)).body).toContain('revoked');

    const hubs = (await (await fetch(`${hub.url}${PREFIX}api/hubs`, { headers: auth() })).json()) as { name: string; idps: string[] }[];
    expect(hubs).toEqual([expect.objectContaining({ name: 'community', idps: ['uni-a', 'uni-b'] })]);
    const idps = (await (await fetch(`${hub.url}${PREFIX}api/idps`, { headers: auth() })).json()) as { callbackUrl: string }[];
    expect(idps.map((i) => i.callbackUrl)).toEqual([`${hub.url}${PREFIX}callback/uni-a`, `${hub.url}${PREFIX}callback/uni-b`]);
    const logins = (await (await fetch(`${hub.url}${PREFIX}api/logins?hub=community`, { headers: auth() })).json()) as { outcome: string; reason: string | null }[];
    expect(logins.some((l) => l.outcome === 'success')).toBe(true);
    expect(logins.some((l) => l.reason === 'hub_domain')).toBe(true);

    // Text the database cannot hold (a NUL) is a 400, not a database error.
    const nul = await fetch(`${hub.url}${PREFIX}api/hubs/community/users/a%00b/sessions`, { method: 'DELETE', headers: { authorization: `token ${adminToken}` } });
    expect(nul.status).toBe(400);
    const nulLogins = await fetch(`${hub.url}${PREFIX}api/logins?hub=%00`, { headers: auth() });
    expect(nulLogins.status).toBe(400);

    // bob came in with a workshop code and is no hub admin.
    const bobToken = await hub.createToken('bob@uni-b.edu');
    const forbidden = await fetch(`${hub.url}${PREFIX}api/hubs`, { headers: { authorization: `token ${bobToken}` } });
    expect(forbidden.status).toBe(403);
    // Refused before validation: a bad body or path is still a 403, never a 400 that would tell
    // a non-admin what the API expects.
    const bob = { authorization: `token ${bobToken}`, 'content-type': 'application/json' };
    const refused = [
      await fetch(`${hub.url}${PREFIX}api/hubs/community/codes`, { method: 'POST', headers: bob, body: JSON.stringify({ group: 42 }) }),
      await fetch(`${hub.url}${PREFIX}api/hubs/community/users/a%00b/sessions`, { method: 'DELETE', headers: bob }),
      await fetch(`${hub.url}${PREFIX}api/hubs/community/codes/not-a-uuid`, { method: 'DELETE', headers: bob }),
      await fetch(`${hub.url}${PREFIX}api/logins?hub=%00`, { headers: bob }),
    ];
    for (const res of refused) {
      expect(res.status, res.url).toBe(403);
      expect(await res.json()).toMatchObject({ statusCode: 403, error: 'Forbidden', message: expect.stringMatching(/^(the auth-bridge admin API is for hub admins|access codes are managed by hub admins and community admins)$/) });
    }
  });

  it('revokes a user\u2019s sessions and grants', async () => {
    const res = await fetch(`${hub.url}${PREFIX}api/hubs/community/users/alice/sessions`, { method: 'DELETE', headers: { authorization: `token ${adminToken}` } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { revoked: number }).revoked).toBeGreaterThan(0);
    const alice = await bridge.db.selectFrom('account').select('id').where('username', '=', 'alice').executeTakeFirstOrThrow();
    const rows = await bridge.db.selectFrom('oidc_model').select('id').where('account_id', '=', alice.id).execute();
    expect(rows).toEqual([]);
  });
});

describe('the admin API under fuzzing, with a real hub admin token', () => {
  it('answers every method, path and body with a result or a 4xx in the error format, never a 500', async () => {
    const direct = `http://127.0.0.1:${portOf(bridge)}${PREFIX}`;
    const segment = fc.oneof(fc.constantFrom('community', 'nope', 'alice', '', '..', '%00', '%zz', crypto.randomUUID()), fc.string({ maxLength: 20 }).map(encodeURIComponent));
    const path = fc.oneof(
      fc.constant('api/hubs'),
      fc.constant('api/idps'),
      fc.tuple(segment, fc.oneof(fc.integer({ min: -5, max: 5000 }).map(String), segment)).map(([hub, limit]) => `api/logins?hub=${hub}&limit=${limit}`),
      fc.tuple(segment, segment).map(([hub, user]) => `api/hubs/${hub}/users/${user}/sessions`),
      segment.map((hub) => `api/hubs/${hub}/codes`),
      fc.tuple(segment, segment).map(([hub, id]) => `api/hubs/${hub}/codes/${id}`),
    );
    const body = fc.oneof(
      fc.constant(undefined),
      fc.record(
        {
          group: fc.oneof(fc.string({ maxLength: 300 }), fc.integer(), fc.constant('\u0000')),
          expiresAt: fc.oneof(fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), fc.string({ maxLength: 30 })),
          maxUses: fc.oneof(fc.integer({ min: -2, max: 200_000 }), fc.double()),
          idps: fc.oneof(fc.array(fc.constantFrom('uni-a', 'uni-b', 'nope', ''), { maxLength: 3 }), fc.string()),
          extra: fc.string(),
        },
        { requiredKeys: [] },
      ).map((o) => JSON.stringify(o)),
      fc.constantFrom('not json', '[]', 'null', '{"group":'),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('GET', 'POST', 'DELETE', 'PUT'), path, body, async (method, p, payload) => {
        const res = await fetch(`${direct}${p}`, {
          method,
          headers: { authorization: `token ${adminToken}`, ...(payload !== undefined ? { 'content-type': 'application/json' } : {}) },
          ...(payload !== undefined && method !== 'GET' ? { body: payload } : {}),
          signal: AbortSignal.timeout(10_000),
        });
        const text = await res.text();
        const what = `${method} ${p} ${payload ?? ''} -> ${res.status} ${text.slice(0, 200)}`;
        expect(res.status, what).toBeLessThan(500);
        if (res.status >= 400) expect(JSON.parse(text), what).toMatchObject({ statusCode: res.status, error: expect.any(String), message: expect.any(String) });
      }),
      { numRuns: 300, ...(process.env.HUBSIDE_FUZZ_SEED ? { seed: Number(process.env.HUBSIDE_FUZZ_SEED) } : {}) },
    );
  }, 120_000);
});
