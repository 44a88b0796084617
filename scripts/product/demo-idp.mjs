// The demo identity provider of `npm start`: a real OpenID Provider (oidc-provider, the certified
// package auth-bridge itself is built on) that plays the university behind auth-bridge. Its login
// page lists the demo people; choosing one logs in as them. Nothing is stored: a restart forgets
// every session, which suits a demo.
import { createServer } from 'node:http';
import escapeHtml from 'escape-html';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

/**
 * @param {{ port: number, people: Array<{ name: string, role: string, groups: string[] }>, clientId: string, clientSecret: string, redirectUris: string[] }} opts
 * @returns {Promise<{ issuer: string, close(): Promise<void> }>}
 */
export async function startDemoIdp(opts) {
  const issuer = `http://127.0.0.1:${opts.port}`;
  const people = new Map(opts.people.map((p) => [p.name, p]));
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const provider = new Provider(issuer, {
    jwks: { keys: [{ ...(await exportJWK(privateKey)), kid: 'hubside-demo-idp', alg: 'RS256', use: 'sig' }] },
    adapter: memoryAdapter(),
    ttl: { AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 1800, RefreshToken: 86_400, Session: 86_400, Grant: 86_400 },
    clients: [
      { client_id: opts.clientId, client_secret: opts.clientSecret, redirect_uris: opts.redirectUris, token_endpoint_auth_method: 'client_secret_post' },
    ],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'], groups: ['groups'] },
    scopes: ['openid', 'email', 'profile', 'groups'],
    features: { devInteractions: { enabled: false } },
    findAccount: async (_ctx, id) => {
      const person = people.get(id);
      if (!person) return undefined;
      return {
        accountId: id,
        claims: async () => ({ sub: id, preferred_username: id, name: id, email: `${id}@demo.hubside.invalid`, email_verified: true, groups: person.groups }),
      };
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    // A demo: every login grants what the bridge asks, with no consent page.
    loadExistingGrant: async (ctx) => {
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid email profile groups');
      await grant.save();
      return grant;
    },
  });
  const handler = provider.callback();
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', issuer);
    const m = /^\/interaction\/([A-Za-z0-9_-]+)$/.exec(url.pathname);
    if (!m) return handler(req, res);
    void (async () => {
      try {
        if (req.method === 'POST') {
          let body = '';
          for await (const chunk of req) {
            body += chunk;
            if (body.length > 10_000) throw new Error('too long');
          }
          const name = new URLSearchParams(body).get('person') ?? '';
          const result = people.has(name) ? { login: { accountId: name } } : { error: 'access_denied', error_description: 'not a demo person' };
          await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
          return;
        }
        await provider.interactionDetails(req, res);
        res.writeHead(200, {
          'content-type': 'text/html; charset=utf-8',
          'cache-control': 'no-store',
          'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        });
        res.end(loginPage(m[1], opts.people));
      } catch {
        res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' });
        res.end('This login has expired or is not valid: start again from the hub.');
      }
    })();
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, '127.0.0.1', resolve);
  });
  return {
    issuer,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function loginPage(uid, people) {
  const rows = people
    .map((p) => `<li><button name="person" value="${escapeHtml(p.name)}">${escapeHtml(p.name)}</button> ${escapeHtml(p.role)}</li>`)
    .join('');
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Demo University: log in</title>` +
    `<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:2em auto}li{margin:.4em 0}button{min-width:8em}</style></head>` +
    `<body><main><h1>Demo University</h1><p>The identity provider of <code>npm start</code>, behind Hubside's auth-bridge. Log in as:</p>` +
    `<form method="post" action="/interaction/${escapeHtml(uid)}"><ul>${rows}</ul></form></main></body></html>`
  );
}

function memoryAdapter() {
  const rows = new Map();
  return (name) => {
    const key = (id) => `${name}:${id}`;
    const get = (id) => {
      const row = rows.get(key(id));
      return row && row.expiresAt > Date.now() ? row.payload : undefined;
    };
    const find = (field, value) => {
      for (const [k, row] of rows) if (k.startsWith(`${name}:`) && row.payload[field] === value && row.expiresAt > Date.now()) return row.payload;
      return undefined;
    };
    return {
      upsert: async (id, payload, expiresIn) => void rows.set(key(id), { payload, expiresAt: Date.now() + expiresIn * 1000 }),
      find: async (id) => get(id),
      findByUid: async (uid) => find('uid', uid),
      findByUserCode: async (code) => find('userCode', code),
      consume: async (id) => {
        const payload = get(id);
        if (payload) payload.consumed = Math.floor(Date.now() / 1000);
      },
      destroy: async (id) => void rows.delete(key(id)),
      revokeByGrantId: async (grantId) => {
        for (const [k, row] of rows) if (row.payload.grantId === grantId) rows.delete(k);
      },
    };
  };
}
