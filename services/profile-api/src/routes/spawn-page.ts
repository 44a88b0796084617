import { Readable } from 'node:stream';
// Request.cookies and unsignCookie come from @fastify/cookie, which hub-auth registers.
import type {} from '@fastify/cookie';
import { ForbiddenError, tokenFromHeader } from '@hubside/hub-client';
import { createError } from '@hubside/service-kit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { SPAWN_JS, spawnPageHtml } from './spawn-page-assets.js';

export interface SpawnPageOptions {
  prefix: string;
  /** community.currency: every price on the page is in it. */
  currency: string;
}

const HubRefused = createError('HUBSIDE_PROFILE_ERR_SPAWN', '%s', 409);
const PROGRESS_TIMEOUT_MS = 5 * 60_000;

/** The user's own hub token (OAuth cookie or Authorization header); spawning acts as them, never as the service. */
function userToken(request: FastifyRequest, clientId: string | undefined): string {
  const header = tokenFromHeader(request.headers.authorization);
  if (header) return header;
  const raw = clientId ? request.cookies?.[clientId] : undefined;
  const unsigned = raw ? request.unsignCookie(raw) : undefined;
  if (unsigned?.valid && unsigned.value) return unsigned.value;
  throw new ForbiddenError('no user token to start a server with');
}

/**
 * The spawn page: the user's profiles with resources and prices, options and a live-validated
 * unlisted choice. It starts the server through the hub API with the user's own OAuth token, so
 * the service's `oauth_client_allowed_scopes` must include `servers!user` and `read:servers!user`.
 */
async function spawnPage(fastify: FastifyInstance, opts: SpawnPageOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { prefix } = opts;
  const settings = fastify.kit.settings;
  const clientId = settings.oauth?.clientId;
  const hubApi = settings.hub?.apiUrl.replace(/\/+$/, '');

  app.get(prefix, { config: { auth: { browser: true } } }, async (request, reply) => {
    const user = request.hubUser!;
    return reply
      .type('text/html; charset=utf-8')
      .header('cache-control', 'no-store')
      .header('content-security-policy', "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
      .send(spawnPageHtml({ prefix, user: user.name, baseUrl: settings.baseUrl, currency: opts.currency }));
  });

  app.get(`${prefix}static/spawn.js`, { config: { auth: false } }, async (_request, reply) => {
    return reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(SPAWN_JS);
  });

  app.post(`${prefix}api/spawn`, { schema: { body: z.record(z.string().max(200), z.unknown()) } }, async (request, reply) => {
    const user = request.hubUser!;
    if (user.kind !== 'user') throw new ForbiddenError('only users start servers here');
    const checked = await fastify.resolveSelection(user.name, user.groups, request.body);
    if (!checked.ok) return reply.code(checked.status).send(checked.body);
    const token = userToken(request, clientId);
    const res = await fetch(`${hubApi}/users/${encodeURIComponent(user.name)}/server`, {
      method: 'POST',
      headers: { authorization: `token ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(request.body),
      signal: AbortSignal.timeout(settings.hub?.timeoutMs ?? 10_000),
    });
    const body = (await res.json().catch(() => ({}))) as { message?: string };
    if (res.status !== 201 && res.status !== 202) {
      // Whoever refused (the hub's scopes, the quota hook's budget, this service's check in the
      // pre-spawn hook) wrote the message: the person sees theirs, with the hub's status.
      const message = typeof body.message === 'string' && body.message !== '' ? body.message.slice(0, 500) : `the hub answered ${res.status}`;
      const status = res.status >= 400 && res.status < 500 ? res.status : 502;
      const scopeHint = res.status === 403 && /scope/i.test(message) ? ' (this service needs servers!user in oauth_client_allowed_scopes)' : '';
      return reply.code(status).send({ statusCode: status, error: status === 502 ? 'Bad Gateway' : 'Refused', code: 'HUBSIDE_PROFILE_ERR_SPAWN', message: `${message}${scopeHint}` });
    }
    return { status: res.status === 201 ? 'ready' : 'pending', url: `${settings.baseUrl}user/${encodeURIComponent(user.name)}/` };
  });

  // The hub's progress stream, relayed with the user's token: the page can't hold that token itself.
  app.get(`${prefix}api/spawn/progress`, async (request, reply) => {
    const user = request.hubUser!;
    const token = userToken(request, clientId);
    const upstream = await fetch(`${hubApi}/users/${encodeURIComponent(user.name)}/server/progress`, {
      headers: { authorization: `token ${token}`, accept: 'text/event-stream' },
      signal: AbortSignal.timeout(PROGRESS_TIMEOUT_MS),
    });
    if (!upstream.ok || !upstream.body) {
      await upstream.body?.cancel();
      throw new HubRefused(`the hub has no progress for your server (${upstream.status})`);
    }
    reply.header('content-type', 'text/event-stream').header('cache-control', 'no-store').header('x-accel-buffering', 'no');
    return reply.send(Readable.fromWeb(upstream.body as import('node:stream/web').ReadableStream));
  });
}

export const spawnPagePlugin = fp(spawnPage, { name: 'profile-api-spawn-page', dependencies: ['hubside-hub-auth', 'profile-api-profiles'], fastify: '5.x' });
