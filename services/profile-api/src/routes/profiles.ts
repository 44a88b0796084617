import { isDeepStrictEqual } from 'node:util';
import { ForbiddenError, scopeSatisfied } from '@hubside/hub-client';
import type { HubIdentity } from '@hubside/hub-client';
import { createError, isCommunityAdmin } from '@hubside/service-kit';
import type { Community } from '@hubside/service-kit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Kysely } from 'kysely';
import { z } from 'zod';
import { diffJson } from '../profiles/diff.js';
import { spawnFormHtml } from './spawn-form-html.js';
import type { ProfilesDB } from '../profiles/profiles.table.js';
import { createProfileRepository } from '../profiles/repository.js';
import type { ProfileVersion } from '../profiles/repository.js';
import { RegexGuard, SelectionError, profilesForUser, resolveSelection } from '../profiles/resolve.js';
import { checkDocument, groupsNamed, safeString } from '../profiles/schema.js';
import type { Problem, ProfilesDocument } from '../profiles/schema.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Resolve a selection for a user against the live document (the spawn page uses it). */
    resolveSelection(user: string, groups: readonly string[], userOptions: unknown): Promise<SelectionOutcome>;
  }
}

export type SelectionOutcome = { ok: true; resolution: ReturnType<typeof resolveSelection> } | { ok: false; status: number; body: Record<string, unknown> };

export interface ProfilesRoutesOptions {
  prefix: string;
  initialProfiles: ProfilesDocument;
  adminGroups: readonly string[];
  unlistedMaxLength: number;
  regexTimeoutMs: number;
  groupsCacheMs: number;
  community: Community;
}

const NotFound = createError('HUBSIDE_PROFILE_ERR_NOT_FOUND', '%s', 404);
const BadRequest = createError('HUBSIDE_PROFILE_ERR_BAD_REQUEST', '%s', 400);
const NotAdmin = createError('HUBSIDE_PROFILE_ERR_NOT_ADMIN', '%s', 403);
const PreconditionRequired = createError('HUBSIDE_PROFILE_ERR_IF_MATCH_REQUIRED', '%s', 428);

const nameParam = z.object({ name: z.string().min(1).max(500) });
const idParam = z.object({ id: z.coerce.number().int().min(1).max(2 ** 31 - 1) });

export function etagOf(version: { id: number } | null): string {
  return `"v${version?.id ?? 0}"`;
}

/** The version id an If-Match names, `*` for any, or undefined when absent or unparseable. */
function ifMatch(request: FastifyRequest): { any: true } | { id: number } | undefined {
  const raw = request.headers['if-match'];
  if (typeof raw !== 'string') return undefined;
  if (raw.trim() === '*') return { any: true };
  const m = /^\s*(?:W\/)?"v(\d{1,10})"\s*$/.exec(raw);
  return m ? { id: Number(m[1]) } : { id: -1 };
}

async function profilesRoutes(fastify: FastifyInstance, opts: ProfilesRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { prefix } = opts;
  const repo = createProfileRepository(fastify.db as Kysely<ProfilesDB>);
  const guard = new RegexGuard({ maxLength: opts.unlistedMaxLength, timeoutMs: opts.regexTimeoutMs });
  const adminGroups = new Set(opts.adminGroups.map((g) => g.toLowerCase()));

  // The first start writes version 1 from the community file; replicas racing here collide on id 1 harmlessly.
  fastify.addHook('onReady', async () => {
    if (!(await repo.current())) {
      await repo.append(null, opts.initialProfiles, 'community config', 'initial version from the community config');
    }
  });

  // The live document is read on every spawn; a short cache spares the database a class-start storm.
  let cached: { at: number; version: ProfileVersion | null } | undefined;
  async function live(): Promise<ProfileVersion | null> {
    if (cached && Date.now() - cached.at < 1_000) return cached.version;
    const version = await repo.current();
    cached = { at: Date.now(), version };
    return version;
  }

  // Group lookups of other users, briefly cached and shared by concurrent requests for one user.
  const groupCache = new Map<string, { at: number; groups: Promise<string[] | null> }>();
  function groupsOf(name: string): Promise<string[] | null> {
    const hit = groupCache.get(name);
    if (hit && Date.now() - hit.at < opts.groupsCacheMs) return hit.groups;
    if (groupCache.size > 10_000) groupCache.clear();
    const groups = fastify.kit.hub!.getUser(name).then((u) => (u ? [...u.groups] : null));
    groupCache.set(name, { at: Date.now(), groups });
    groups.catch(() => groupCache.delete(name));
    return groups;
  }

  /**
   * The groups of `name`, if the caller may act for them. The route needs `read:users!user=<name>`:
   * a user's own `self` grants it for themselves; the hub's service token holds `read:users`; a
   * `read:users!group=g` grant covers members of g, which needs the target's groups to decide.
   */
  async function groupsFor(caller: HubIdentity, name: string): Promise<string[]> {
    if (caller.kind === 'user' && caller.name === name) return caller.groups;
    const required = `read:users!user=${name}`;
    if (!caller.scopes.some((s) => s === 'read:users' || s.startsWith('read:users!'))) {
      throw new ForbiddenError(`this token lacks the scope ${required}`);
    }
    const groups = await groupsOf(name);
    const ok = scopeSatisfied(caller.scopes, required, { groupsOfUser: (u) => (u === name ? (groups ?? undefined) : undefined) });
    if (!ok) throw new ForbiddenError(`this token lacks the scope ${required}`);
    if (groups === null) throw new NotFound(`no such user: ${name.slice(0, 100)}`);
    return groups;
  }

  function requireAdmin(request: FastifyRequest): HubIdentity {
    const user = request.hubUser!;
    if (user.kind === 'user' && (isCommunityAdmin(opts.community, user) || user.groups.some((g) => adminGroups.has(g.toLowerCase())))) return user;
    throw new NotAdmin('editing profiles needs a community admin: a hub admin, someone named in community.admins, or a member of its groups');
  }

  // Users with the same relevant groups get the same list: compute it once per version and group set.
  const lists = new Map<string, ReturnType<typeof profilesForUser>>();
  let listsVersion = -1;
  let relevant = new Set<string>();
  function listFor(version: ProfileVersion | null, groups: readonly string[]) {
    const id = version?.id ?? 0;
    if (id !== listsVersion) {
      lists.clear();
      listsVersion = id;
      relevant = new Set(groupsNamed(version?.document ?? []).keys());
    }
    // JSON of the sorted list: a group name may contain any separator ("a\nb" is one hub group).
    const key = JSON.stringify([...new Set(groups.map((g) => g.toLowerCase()).filter((g) => relevant.has(g)))].sort());
    let list = lists.get(key);
    if (!list) {
      list = profilesForUser(version?.document ?? [], groups);
      if (lists.size > 1000) lists.clear();
      lists.set(key, list);
    }
    return list;
  }

  async function sendList(reply: FastifyReply, groups: string[]) {
    const version = await live();
    reply.header('etag', etagOf(version)).header('cache-control', 'no-store');
    return listFor(version, groups);
  }

  app.get(`${prefix}api/profiles`, async (request, reply) => {
    const user = request.hubUser!;
    if (user.kind !== 'user') throw new BadRequest(`a service has no profiles of its own: ask for ${prefix}api/users/{name}/profiles`);
    return sendList(reply, user.groups);
  });

  app.get(`${prefix}api/users/:name/profiles`, { schema: { params: nameParam } }, async (request, reply) => {
    return sendList(reply, await groupsFor(request.hubUser!, request.params.name));
  });

  // The fragment the hub's own /hub/spawn shows (hub/profile_list.py's options_form asks with the service token).
  app.get(`${prefix}api/users/:name/spawn-form`, { schema: { params: nameParam } }, async (request, reply) => {
    const groups = await groupsFor(request.hubUser!, request.params.name);
    const list = listFor(await live(), groups);
    return reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(spawnFormHtml(list, { currency: opts.community.currency }));
  });

  async function select(_user: string, groups: readonly string[], userOptions: unknown): Promise<SelectionOutcome & { version: number }> {
    const version = await live();
    try {
      return { ok: true, resolution: resolveSelection(version?.document ?? [], groups, userOptions ?? {}, guard), version: version?.id ?? 0 };
    } catch (err) {
      if (!(err instanceof SelectionError)) throw err;
      const error = err.status === 403 ? 'Forbidden' : err.status === 404 ? 'Not Found' : err.status === 422 ? 'Unprocessable Entity' : 'Bad Request';
      const body = { statusCode: err.status, error, code: 'HUBSIDE_PROFILE_ERR_SELECTION', message: err.message, field: err.field };
      return { ok: false, status: err.status, body, version: version?.id ?? 0 };
    }
  }
  fastify.decorate('resolveSelection', select);

  app.post(
    `${prefix}api/users/:name/resolve`,
    { schema: { params: nameParam, body: z.unknown() } },
    async (request, reply) => {
      const groups = await groupsFor(request.hubUser!, request.params.name);
      const outcome = await select(request.params.name, groups, request.body);
      if (!outcome.ok) return reply.code(outcome.status).send(outcome.body);
      // What the hub records in user_options.hubside: the price shown is the price billed.
      return { ...outcome.resolution, currency: opts.community.currency, profile_version: outcome.version, version: outcome.version };
    },
  );

  // ---- editing ----

  function versionBody(v: ProfileVersion, withDocument: boolean) {
    return {
      id: v.id,
      author: v.author,
      message: v.message,
      parent_id: v.parentId,
      created_at: v.createdAt.toISOString(),
      ...(withDocument ? { profiles: v.document } : {}),
    };
  }

  async function unknownGroupWarnings(doc: ProfilesDocument): Promise<string[]> {
    const named = groupsNamed(doc);
    if (named.size === 0) return [];
    try {
      const known = new Set<string>();
      for await (const g of fastify.kit.hub!.listGroups()) known.add(g.name.toLowerCase());
      return [...named].filter(([g]) => !known.has(g)).map(([g, path]) => `${path}: group "${g}" does not exist on the hub (yet)`);
    } catch {
      return ['could not list the hub\'s groups to check allowed_groups'];
    }
  }

  async function write(request: FastifyRequest, reply: FastifyReply, doc: ProfilesDocument, message: string) {
    const user = requireAdmin(request);
    const match = ifMatch(request);
    if (!match) throw new PreconditionRequired('send If-Match with the ETag of the version you edited, so no edit is lost (or "*" to overwrite)');
    const current = await repo.current();
    const currentId = current?.id ?? 0;
    if ('id' in match && match.id !== currentId) {
      // A retry of a write that already landed (same author, same document, on the same parent) is not a conflict.
      if (current && current.parentId === match.id && current.author === user.name && isDeepStrictEqual(current.document, doc)) {
        reply.header('etag', etagOf(current));
        return { version: versionBody(current, false), warnings: [], replayed: true };
      }
      return reply.code(412).header('etag', etagOf(current)).send({
        statusCode: 412,
        error: 'Precondition Failed',
        code: 'HUBSIDE_PROFILE_ERR_STALE',
        message: `the profiles changed since you loaded them (now version ${currentId}, by ${current?.author ?? 'nobody'}); reload and apply your edit again`,
        current: currentId,
      });
    }
    const result = await repo.append(current?.id ?? null, doc, user.name, message);
    if (!result.ok) {
      return reply.code(412).header('etag', etagOf(result.current)).send({
        statusCode: 412,
        error: 'Precondition Failed',
        code: 'HUBSIDE_PROFILE_ERR_STALE',
        message: 'another edit was saved at the same moment; reload and apply your edit again',
        current: result.current?.id ?? 0,
      });
    }
    cached = undefined;
    reply.code(201).header('etag', etagOf(result.version));
    return { version: versionBody(result.version, false), warnings: await unknownGroupWarnings(doc), replayed: false };
  }

  function invalid(reply: FastifyReply, problems: Problem[], lead = '') {
    return reply.code(422).send({
      statusCode: 422,
      error: 'Unprocessable Entity',
      code: 'HUBSIDE_PROFILE_ERR_INVALID_DOCUMENT',
      message: lead + problems.map((p) => `profiles${p.path.startsWith('[') ? '' : '.'}${p.path}: ${p.message}`).join('; ').slice(0, 4000),
      problems: problems.slice(0, 500),
    });
  }

  app.get(`${prefix}api/profiles/document`, async (request, reply) => {
    requireAdmin(request);
    const current = await repo.current();
    reply.header('etag', etagOf(current)).header('cache-control', 'no-store');
    return { version: current?.id ?? 0, profiles: current?.document ?? [] };
  });

  app.put(
    `${prefix}api/profiles`,
    { schema: { body: z.object({ profiles: z.unknown(), message: safeString(2000).optional() }) } },
    async (request, reply) => {
      requireAdmin(request);
      const checked = checkDocument(request.body.profiles);
      if (!checked.ok) return invalid(reply, checked.problems);
      return write(request, reply, checked.document, request.body.message ?? '');
    },
  );

  app.get(
    `${prefix}api/profiles/versions`,
    { schema: { querystring: z.object({ limit: z.coerce.number().int().min(1).max(500).default(50), before: z.coerce.number().int().min(1).optional() }) } },
    async (request) => {
      requireAdmin(request);
      const versions = await repo.list({ limit: request.query.limit, ...(request.query.before ? { before: request.query.before } : {}) });
      return { versions: versions.map((v) => versionBody(v, false)) };
    },
  );

  async function version(id: number): Promise<ProfileVersion> {
    const v = await repo.get(id);
    if (!v) throw new NotFound(`no profiles version ${id}`);
    return v;
  }

  app.get(`${prefix}api/profiles/versions/:id`, { schema: { params: idParam } }, async (request) => {
    requireAdmin(request);
    return versionBody(await version(request.params.id), true);
  });

  app.get(
    `${prefix}api/profiles/versions/:id/diff`,
    { schema: { params: idParam, querystring: z.object({ to: z.coerce.number().int().min(1).max(2 ** 31 - 1).optional() }) } },
    async (request) => {
      requireAdmin(request);
      const from = await version(request.params.id);
      const to = request.query.to ? await version(request.query.to) : await repo.current();
      return { from: from.id, to: to?.id ?? 0, changes: diffJson(from.document, to?.document ?? []) };
    },
  );

  app.post(
    `${prefix}api/profiles/versions/:id/restore`,
    { schema: { params: idParam, body: z.object({ message: safeString(2000).optional() }).optional() } },
    async (request, reply) => {
      requireAdmin(request);
      const old = await version(request.params.id);
      // A version saved under older rules is checked again: a restore is a save.
      const checked = checkDocument(old.document);
      if (!checked.ok) return invalid(reply, checked.problems, `version ${old.id} no longer passes the checks: `);
      return write(request, reply, checked.document, request.body?.message ?? `restore version ${old.id}`);
    },
  );
}

export const profilesPlugin = fp(profilesRoutes, { name: 'profile-api-profiles', dependencies: ['hubside-database', 'hubside-hub-auth'], fastify: '5.x' });
