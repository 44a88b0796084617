import type {} from '@fastify/cookie';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { sql } from 'kysely';
import * as client from 'openid-client';
import { z } from 'zod';
import { accountId, saveAccount } from '../accounts.js';
import { hubIdps } from '../config.js';
import { hashCode } from '../bridge.js';
import { CHOOSER_JS, PAGE_CSP, chooserPage, errorPage } from '../pages.js';
import type { PageLink } from '../pages.js';
import type { HubConfig } from '../config.js';
import { applyRules } from '../rules.js';
import { UpstreamError } from '../upstream.js';
import { storable } from '../text.js';

export const LAST_IDP_COOKIE = 'hubside_auth_last_idp';
export const ACCESS_CODE_COOKIE = 'hubside_auth_access_code';

function page(reply: FastifyReply, status: number, html: string): FastifyReply {
  return reply.code(status).type('text/html; charset=utf-8').header('content-security-policy', PAGE_CSP).header('cache-control', 'no-store').send(html);
}

function refusal(reply: FastifyReply, status: number, title: string, message: string, links: PageLink[] = []): FastifyReply {
  return page(reply, status, errorPage({ title, message, links }));
}

/** The hub's own pages (`…/hub/`), from where it logs in or gets its OAuth callback. */
export function hubHome(hub: HubConfig): string {
  return new URL('.', hub.loginUrl ?? hub.redirectUris[0]!).href;
}

/**
 * Where a refused person can go next: back to this login's chooser (another institution), a
 * fresh login at the hub, and the hub itself.
 */
function waysOn(hub: HubConfig | undefined, chooser?: string): PageLink[] {
  const links: PageLink[] = [];
  if (chooser) links.push({ href: chooser, text: 'Choose another institution' });
  else if (hub?.loginUrl) links.push({ href: hub.loginUrl, text: 'Log in again, with another institution' });
  if (hub) links.push({ href: hubHome(hub), text: `Go to ${hub.displayName ?? 'the hub'}` });
  return links;
}

function readCookie(request: FastifyRequest, name: string): string | undefined {
  return request.cookies[name];
}

function setCookie(reply: FastifyReply, name: string, value: string, path: string, maxAge: number, secure: boolean): void {
  reply.setCookie(name, value, { path, maxAge, httpOnly: true, sameSite: 'lax', secure });
}

type CodeRow = { id: string; hub: string; group_name: string; idps: unknown; max_uses: number; uses: number; expires_at: Date; revoked_at: Date | null };

/** Why an access code cannot be used now, or null when it can. */
function codeProblem(code: CodeRow | undefined, hub: string | undefined): string | null {
  if (!code) return 'This event access code does not exist. Check the link you were given.';
  if (hub !== undefined && code.hub !== hub) return 'This event access code is for another hub.';
  if (code.revoked_at) return 'This event access code was revoked by the hub\u2019s administrators.';
  if (new Date(code.expires_at).getTime() <= Date.now()) return 'This event access code has expired.';
  if (code.uses >= code.max_uses) return 'This event access code has been used as many times as it allows.';
  return null;
}

const jsonArray = (v: unknown): string[] => (Array.isArray(v) ? (v as string[]) : typeof v === 'string' ? (JSON.parse(v) as string[]) : []);

async function loginRoutes(app: FastifyInstance): Promise<void> {
  const b = app.bridge;
  const { prefix, db } = b;
  const secure = b.publicUrl.startsWith('https:');
  const noAuth = { auth: false as const };
  const typed = app.withTypeProvider<import('fastify-type-provider-zod').ZodTypeProvider>();

  // When the login itself is gone we cannot tell which hub it was for; with one hub, it is that one.
  const onlyHub = () => {
    const hubs = Object.values(b.config.hubs);
    return hubs.length === 1 ? hubs[0] : undefined;
  };
  const chooserOf = (uid: string) => `${prefix}interaction/${encodeURIComponent(uid)}`;

  const findCode = (code: string) =>
    db
      .selectFrom('access_code')
      .select(['id', 'hub', 'group_name', 'idps', 'max_uses', 'uses', 'expires_at', 'revoked_at'])
      .where('code_hash', '=', hashCode(code))
      .executeTakeFirst() as Promise<CodeRow | undefined>;

  app.get(`${prefix}static/chooser.js`, { config: noAuth }, async (_request, reply) =>
    reply.type('text/javascript; charset=utf-8').header('cache-control', 'public, max-age=300').send(CHOOSER_JS),
  );

  /** Where the chooser and the upstream redirect begin. */
  typed.get(
    `${prefix}interaction/:uid`,
    { config: noAuth, schema: { params: z.object({ uid: z.string().min(1).max(100) }) } },
    async (request, reply) => {
      let details;
      try {
        details = await b.provider().interactionDetails(request.raw, reply.raw);
      } catch {
        return refusal(reply, 400, 'This login has expired', 'This login was started too long ago or in another browser. Go back to your hub and log in again.', waysOn(onlyHub()));
      }
      if (details.uid !== request.params.uid) return refusal(reply, 400, 'This login has expired', 'Go back to your hub and log in again.', waysOn(onlyHub()));
      const hubName = b.hubByClient.get(String(details.params.client_id));
      const hub = hubName ? b.config.hubs[hubName] : undefined;
      if (!hubName || !hub) return refusal(reply, 400, 'Unknown hub', 'This login was started by a hub this service does not know.');

      let idps = hubIdps(b.config.upstreams, hub);
      const codeValue = typeof details.params.access_code === 'string' ? details.params.access_code : readCookie(request, ACCESS_CODE_COOKIE);
      if (codeValue) {
        const code = await findCode(codeValue);
        const problem = codeProblem(code, hubName);
        if (problem) {
          setCookie(reply, ACCESS_CODE_COOKIE, '', prefix, 0, secure);
          return refusal(reply, 403, 'This access code cannot be used', problem, waysOn(hub));
        }
        const allowed = jsonArray(code!.idps);
        if (allowed.length > 0) idps = idps.filter((i) => allowed.includes(i));
      }
      if (idps.length === 0) return refusal(reply, 403, 'No way to log in', 'No identity provider is available for this hub.', waysOn(hub));

      const startUrl = (idp: string) => `${prefix}interaction/${encodeURIComponent(details.uid)}/login/${encodeURIComponent(idp)}`;
      const hint = typeof details.params.idp_hint === 'string' ? details.params.idp_hint : undefined;
      if (hint && idps.includes(hint)) return reply.redirect(startUrl(hint), 303);
      if (idps.length === 1) return reply.redirect(startUrl(idps[0]!), 303);
      return page(
        reply,
        200,
        chooserPage({
          hubName: hub.displayName ?? hubName,
          scriptUrl: `${prefix}static/chooser.js`,
          lastIdp: readCookie(request, LAST_IDP_COOKIE),
          entries: idps.map((name) => {
            const up = b.config.upstreams[name]!;
            return { name, displayName: up.displayName, keywords: up.keywords, href: startUrl(name) };
          }),
        }),
      );
    },
  );

  /** Send the browser to the chosen institution with fresh state, nonce and PKCE. */
  typed.get(
    `${prefix}interaction/:uid/login/:idp`,
    { config: noAuth, schema: { params: z.object({ uid: z.string().min(1).max(100), idp: z.string().min(1).max(100) }) } },
    async (request, reply) => {
      let details;
      try {
        details = await b.provider().interactionDetails(request.raw, reply.raw);
      } catch {
        return refusal(reply, 400, 'This login has expired', 'Go back to your hub and log in again.', waysOn(onlyHub()));
      }
      const hubName = b.hubByClient.get(String(details.params.client_id));
      const hub = hubName ? b.config.hubs[hubName] : undefined;
      const upstream = b.upstreams.get(request.params.idp);
      if (!hubName || !hub || !upstream || !hubIdps(b.config.upstreams, hub).includes(upstream.name) || details.uid !== request.params.uid) {
        return refusal(reply, 400, 'Unknown institution', 'This hub does not offer that institution for login.', waysOn(hub ?? onlyHub(), chooserOf(details.uid)));
      }
      const codeValue = typeof details.params.access_code === 'string' ? details.params.access_code : readCookie(request, ACCESS_CODE_COOKIE);
      if (codeValue) {
        const code = await findCode(codeValue);
        const problem = codeProblem(code, hubName);
        if (problem) return refusal(reply, 403, 'This access code cannot be used', problem, waysOn(hub));
        const allowed = jsonArray(code!.idps);
        if (allowed.length > 0 && !allowed.includes(upstream.name)) {
          return refusal(reply, 403, 'Not with this code', 'This event access code does not allow that institution.', waysOn(hub, chooserOf(details.uid)));
        }
      }
      const checks = { state: client.randomState(), nonce: client.randomNonce(), codeVerifier: client.randomPKCECodeVerifier() };
      let target: URL;
      try {
        target = await upstream.authorizationUrl(checks);
      } catch (err) {
        request.log.warn({ err, idp: upstream.name }, 'upstream discovery failed');
        return refusal(reply, 502, `${upstream.config.displayName} is unavailable`, `We could not reach ${upstream.config.displayName}. Try again in a few minutes.`, waysOn(hub, chooserOf(details.uid)));
      }
      await db
        .insertInto('upstream_login')
        .values({
          state: checks.state,
          idp: upstream.name,
          interaction_uid: details.uid,
          hub: hubName,
          nonce: checks.nonce,
          code_verifier: checks.codeVerifier,
          access_code: codeValue ?? null,
          // As long as the interaction it belongs to: past that, the login cannot finish anyway.
          expires_at: new Date(Date.now() + b.config.ttl.interaction * 1000),
        })
        .execute();
      setCookie(reply, LAST_IDP_COOKIE, upstream.name, prefix, 365 * 86400, secure);
      return reply.redirect(target.href, 303);
    },
  );

  /** One callback per institution, so a response can only be redeemed where it was meant to go. */
  typed.get(
    `${prefix}callback/:idp`,
    {
      config: noAuth,
      schema: { params: z.object({ idp: z.string().min(1).max(100) }), querystring: z.record(z.string(), z.union([z.string(), z.array(z.string())])) },
    },
    async (request, reply) => {
      const upstream = b.upstreams.get(request.params.idp);
      if (!upstream) return refusal(reply, 404, 'Unknown institution', 'There is no institution by that name here.', waysOn(onlyHub()));
      // Our states are random base64url; anything else (a NUL, a list) matches no login.
      const state = storable(request.query.state) ? request.query.state : undefined;
      // Taking the row deletes it: a state (and with it the code) is good for one try only.
      const row = state
        ? await db.deleteFrom('upstream_login').where('state', '=', state).returningAll().executeTakeFirst()
        : undefined;
      const refuse = async (status: number, title: string, message: string, reason: string, hub = row?.hub, username?: string) => {
        await db
          .insertInto('login_event')
          .values({ hub: hub ?? '-', idp: upstream.name, username: username ?? null, outcome: 'refused', reason })
          .execute();
        // Back to this login's chooser while the login lasts, and to the hub it came from.
        const from = hub ? b.config.hubs[hub] : undefined;
        return refusal(reply, status, title, message, waysOn(from ?? onlyHub(), row && from ? chooserOf(row.interaction_uid) : undefined));
      };
      if (!row) {
        return refuse(400, 'Login refused: state mismatch', 'This login response does not match any login in progress (state mismatch, or it was already used). Go back to your hub and log in again.', 'state_mismatch');
      }
      if (row.idp !== upstream.name) {
        return refuse(
          400,
          'Login refused: wrong institution',
          `This login was started with ${b.config.upstreams[row.idp]?.displayName ?? row.idp}, but the response arrived for ${upstream.config.displayName}. Go back to your hub and log in again.`,
          'idp_mismatch',
        );
      }
      if (new Date(row.expires_at).getTime() <= Date.now()) {
        return refuse(400, 'This login has expired', 'You took too long at your institution. Go back to your hub and log in again.', 'expired');
      }
      const currentUrl = new URL(request.url, b.publicUrl);
      let result;
      try {
        result = await upstream.finish(currentUrl, { state: row.state, nonce: row.nonce, codeVerifier: row.code_verifier });
      } catch (err) {
        if (err instanceof UpstreamError) return refuse(400, 'Login refused', err.message, err.reason);
        request.log.warn({ err, idp: upstream.name }, 'upstream login failed');
        return refuse(502, 'Login failed', `Signing in with ${upstream.config.displayName} failed. Try again.`, 'upstream_error');
      }
      const hub = b.config.hubs[row.hub];
      if (!hub) return refuse(400, 'Unknown hub', 'This hub is no longer configured.', 'unknown_hub');

      let code: CodeRow | undefined;
      if (row.access_code) {
        code = await findCode(row.access_code);
        const problem = codeProblem(code, row.hub);
        if (problem) return refuse(403, 'This access code cannot be used', problem, 'access_code');
      }
      const outcome = applyRules({
        hubName: row.hub,
        hub,
        idpName: upstream.name,
        idp: upstream.config,
        claims: result.claims,
        extraGroups: result.extraGroups,
        accessCode: code ? { group: code.group_name } : undefined,
      });
      if (!outcome.ok) return refuse(403, outcome.title, outcome.message, outcome.reason);

      const id = accountId(row.hub, upstream.name, result.sub);
      if (code) {
        // Count the use only if one is left: concurrent logins cannot overdraw the code.
        const used = await db
          .updateTable('access_code')
          .set({ uses: sql`uses + 1` })
          .where('id', '=', code.id)
          .where('uses', '<', sql<number>`max_uses`)
          .where('revoked_at', 'is', null)
          .where('expires_at', '>', new Date())
          .executeTakeFirst();
        if (Number(used.numUpdatedRows) === 0) return refuse(403, 'This access code cannot be used', 'This event access code has been used up.', 'access_code');
        await db
          .insertInto('code_membership')
          .values({ account_id: id, code_id: code.id, group_name: code.group_name, expires_at: code.expires_at })
          .onConflict((oc) => oc.columns(['account_id', 'code_id']).doNothing())
          .execute();
        setCookie(reply, ACCESS_CODE_COOKIE, '', prefix, 0, secure);
      }
      await saveAccount(db, { id, hub: row.hub, idp: upstream.name, upstreamSub: result.sub, ...outcome.identity });

      const interaction = await b.provider().Interaction.find(row.interaction_uid);
      if (!interaction) return refuse(400, 'This login has expired', 'Go back to your hub and log in again.', 'interaction_expired', row.hub, outcome.identity.username);
      interaction.result = { login: { accountId: id, remember: true } };
      await interaction.save(Math.max(1, interaction.exp - Math.floor(Date.now() / 1000)));
      await db.insertInto('login_event').values({ hub: row.hub, idp: upstream.name, username: outcome.identity.username, outcome: 'success', reason: null }).execute();
      return reply.redirect(interaction.returnTo, 303);
    },
  );

  /** An event access code link: remember the code, then start the hub's own login. */
  typed.get(
    `${prefix}code/:code`,
    { config: noAuth, schema: { params: z.object({ code: z.string().min(1).max(200) }) } },
    async (request, reply) => {
      const code = await findCode(request.params.code);
      const problem = codeProblem(code, undefined);
      if (problem) return refusal(reply, code ? 410 : 404, 'This access code cannot be used', problem, waysOn(code ? b.config.hubs[code.hub] : onlyHub()));
      const hub = b.config.hubs[code!.hub];
      if (!hub?.loginUrl) return refusal(reply, 400, 'This access code cannot be used', 'This hub has no login URL configured.', waysOn(hub));
      const maxAge = Math.max(60, Math.min(3600, Math.floor((new Date(code!.expires_at).getTime() - Date.now()) / 1000)));
      setCookie(reply, ACCESS_CODE_COOKIE, request.params.code, prefix, maxAge, secure);
      return reply.redirect(hub.loginUrl, 303);
    },
  );
}

export const loginRoutesPlugin = fp(loginRoutes, { name: 'auth-bridge-login', dependencies: ['auth-bridge-core'] });
