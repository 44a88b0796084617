import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { ForbiddenError } from '@hubside/hub-client';
import { createError, isCommunityAdmin } from '@hubside/service-kit';
import type { Community } from '@hubside/service-kit';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { hubIdps } from '../config.js';
import { hashCode, newSecret } from '../bridge.js';
import { LIMITS, dbText, hubName } from '../text.js';

const NotFound = createError('HUBSIDE_AUTH_ERR_NOT_FOUND', '%s', 404);
const BadRequest = createError('HUBSIDE_AUTH_ERR_BAD_REQUEST', '%s', 400);
const Conflict = createError('HUBSIDE_AUTH_ERR_TOO_MANY_CODES', '%s', 409);

const hubParam = z.object({ hub: dbText(100) });

/**
 * The admin API: hub admins (their hub token or a service token with admin:users); access codes
 * also for the community's admins (`community.admins`).
 */
async function adminRoutes(app: FastifyInstance, opts: { community: Community }): Promise<void> {
  const b = app.bridge;
  const { prefix, db } = b;
  const typed = app.withTypeProvider<ZodTypeProvider>();
  const auth = { auth: { access: false, scopes: [] as string[] } };
  // Runs as a route onRequest hook (after hubAuth's, before validation), so a non-admin is
  // refused with 403 whatever the request holds, and learns nothing from validation messages.
  const requireAdmin = async (request: FastifyRequest) => {
    const user = request.hubUser;
    if (!user || !(user.admin || user.scopes.includes('admin:users'))) {
      throw new ForbiddenError('the auth-bridge admin API is for hub admins');
    }
  };
  const requireCodeManager = async (request: FastifyRequest) => {
    const user = request.hubUser;
    if (user && (user.scopes.includes('admin:users') || (user.kind === 'user' && isCommunityAdmin(opts.community, user)))) return;
    throw new ForbiddenError('access codes are managed by hub admins and community admins');
  };
  const knownHub = (hub: string) => {
    if (!b.config.hubs[hub]) throw new NotFound(`no hub named ${JSON.stringify(hub)}`);
    return b.config.hubs[hub]!;
  };

  typed.get(`${prefix}api/hubs`, { config: auth, onRequest: requireAdmin }, async () =>
    Object.entries(b.config.hubs).map(([name, hub]) => ({
      name,
      displayName: hub.displayName ?? name,
      clientId: hub.clientId,
      redirectUris: hub.redirectUris,
      idps: hubIdps(b.config.upstreams, hub),
      requirePkce: hub.requirePkce,
    })),
  );

  typed.get(`${prefix}api/idps`, { config: auth, onRequest: requireAdmin }, async () =>
    Object.entries(b.config.upstreams).map(([name, up]) => ({
      name,
      displayName: up.displayName,
      type: up.type,
      issuer: up.issuer ?? null,
      callbackUrl: b.upstreams.get(name)!.callbackUrl,
    })),
  );

  typed.get(
    `${prefix}api/logins`,
    {
      config: auth,
      onRequest: requireAdmin,
      schema: { querystring: z.object({ hub: dbText(100).optional(), limit: z.coerce.number().int().min(1).max(1000).default(100) }) },
    },
    async (request) => {
      let q = db.selectFrom('login_event').selectAll().orderBy('id', 'desc').limit(request.query.limit);
      if (request.query.hub) q = q.where('hub', '=', request.query.hub);
      const rows = await q.execute();
      return rows.map((r) => ({ at: new Date(r.at).toISOString(), hub: r.hub, idp: r.idp, username: r.username, outcome: r.outcome, reason: r.reason }));
    },
  );

  typed.delete(
    `${prefix}api/hubs/:hub/users/:username/sessions`,
    { config: auth, onRequest: requireAdmin, schema: { params: hubParam.extend({ username: dbText(255) }) } },
    async (request) => {
      knownHub(request.params.hub);
      const accounts = await db
        .selectFrom('account')
        .select('id')
        .where('hub', '=', request.params.hub)
        .where('username', '=', request.params.username)
        .execute();
      const ids = accounts.map((a) => a.id);
      if (ids.length === 0) return { revoked: 0 };
      // Sessions, grants, codes and tokens all carry the account id.
      const res = await db.deleteFrom('oidc_model').where('account_id', 'in', ids).executeTakeFirst();
      return { revoked: Number(res.numDeletedRows) };
    },
  );

  const codeBody = z
    .object({
      // The same rules as a group named in the community file.
      group: hubName,
      expiresAt: z.iso.datetime({ offset: true }),
      maxUses: z.number().int().min(1).max(LIMITS.codeUses),
      idps: z.array(dbText(100)).max(LIMITS.ruleEntries).default([]),
    })
    .strict();

  typed.post(
    `${prefix}api/hubs/:hub/codes`,
    { config: auth, onRequest: requireCodeManager, schema: { params: hubParam, body: codeBody } },
    async (request, reply) => {
      const hub = knownHub(request.params.hub);
      const body = request.body;
      const user = request.hubUser!;
      // A code into an admin group makes hub admins: only a hub admin may hand that out.
      if (hub.adminGroups.includes(body.group) && !(user.admin || user.scopes.includes('admin:users'))) {
        throw new ForbiddenError(`group ${JSON.stringify(body.group)} makes hub admins (adminGroups): only a hub admin may create codes for it`);
      }
      const expiresAt = new Date(body.expiresAt);
      if (expiresAt.getTime() <= Date.now()) throw new BadRequest('body.expiresAt: must be in the future');
      if (expiresAt.getTime() > Date.now() + LIMITS.codeDays * 86_400_000) throw new BadRequest(`body.expiresAt: must be at most ${LIMITS.codeDays} days ahead`);
      const offered = hubIdps(b.config.upstreams, hub);
      const unknown = body.idps.filter((i) => !offered.includes(i));
      if (unknown.length > 0) throw new BadRequest(`body.idps: ${unknown.map((u) => JSON.stringify(u)).join(', ')} not offered by this hub`);
      const live = await db
        .selectFrom('access_code')
        .select((eb) => eb.fn.countAll<string | number>().as('n'))
        .where('hub', '=', request.params.hub)
        .where('revoked_at', 'is', null)
        .where('expires_at', '>', new Date())
        .executeTakeFirstOrThrow();
      if (Number(live.n) >= LIMITS.liveCodesPerHub) {
        throw new Conflict(`this hub already has ${LIMITS.liveCodesPerHub} live access codes: revoke some first`);
      }
      const code = newSecret(18);
      const id = randomUUID();
      await db
        .insertInto('access_code')
        .values({
          id,
          code_hash: hashCode(code),
          hub: request.params.hub,
          group_name: body.group,
          idps: JSON.stringify(body.idps),
          max_uses: body.maxUses,
          expires_at: expiresAt,
          revoked_at: null,
          created_by: request.hubUser!.name,
        })
        .execute();
      return reply.code(201).send({ id, code, link: `${b.publicUrl}${prefix}code/${code}`, expiresAt: expiresAt.toISOString() });
    },
  );

  typed.get(`${prefix}api/hubs/:hub/codes`, { config: auth, onRequest: requireCodeManager, schema: { params: hubParam } }, async (request) => {
    knownHub(request.params.hub);
    const rows = await db.selectFrom('access_code').selectAll().where('hub', '=', request.params.hub).orderBy('created_at', 'desc').execute();
    return rows.map((r) => ({
      id: r.id,
      group: r.group_name,
      idps: Array.isArray(r.idps) ? r.idps : (JSON.parse(String(r.idps)) as string[]),
      maxUses: r.max_uses,
      uses: r.uses,
      expiresAt: new Date(r.expires_at).toISOString(),
      revoked: r.revoked_at !== null,
      createdBy: r.created_by,
    }));
  });

  typed.delete(
    `${prefix}api/hubs/:hub/codes/:id`,
    { config: auth, onRequest: requireCodeManager, schema: { params: hubParam.extend({ id: z.uuid() }) } },
    async (request) => {
      knownHub(request.params.hub);
      // The groups the code granted end with it: the next userinfo or refresh no longer has them.
      const ended = await db.transaction().execute(async (trx) => {
        const res = await trx
          .updateTable('access_code')
          .set({ revoked_at: new Date() })
          .where('id', '=', request.params.id)
          .where('hub', '=', request.params.hub)
          .executeTakeFirst();
        if (Number(res.numUpdatedRows) === 0) return undefined;
        const gone = await trx.deleteFrom('code_membership').where('code_id', '=', request.params.id).executeTakeFirst();
        return Number(gone.numDeletedRows);
      });
      if (ended === undefined) throw new NotFound('no such code');
      return { revoked: true, membershipsEnded: ended };
    },
  );

  typed.post(`${prefix}api/keys/rotate`, { config: auth, onRequest: requireAdmin }, async () => ({ kid: await b.rotateKeys() }));
}

export const adminRoutesPlugin = fp<{ community: Community }>(adminRoutes, { name: 'auth-bridge-admin', dependencies: ['auth-bridge-core'] });
