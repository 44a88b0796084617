/**
 * The dashboards' JSON API. The pages read only these routes (and the usage API's), and every
 * rule about who sees what is enforced here, with the same `visibilityOf` as the usage API.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { HubUnavailableError } from '@hubside/hub-client';
import { createError, hubName } from '@hubside/service-kit';
import { z } from 'zod';
import { maySeeGroup, visibilityOf } from '../access.js';
import type { Visibility } from '../access.js';
import { entryOf } from '../config.js';
import type { UsageCollectorConfig } from '../config.js';
import { csvLine } from '../csv.js';
import type { SessionsRepository } from '../sessions-repository.js';
import { editableSettingsSchema, noteSchema } from '../settings.js';
import type { SettingsStore } from '../settings.js';
import { MAX_SHARE_DAYS } from './shares.js';
import type { SharesService } from './shares.js';
import { SORT_KEYS } from './views.js';
import type { Range, Views } from './views.js';

const Forbidden = createError('HUBSIDE_USAGE_ERR_FORBIDDEN', '%s', 403);
const NotFound = createError('HUBSIDE_USAGE_ERR_NOT_FOUND', '%s', 404);
const BadRange = createError('HUBSIDE_USAGE_ERR_RANGE', '%s', 400);
const ShareRefused = createError('HUBSIDE_USAGE_ERR_SHARE', '%s', 403);
const Conflict = createError('HUBSIDE_USAGE_ERR_SETTINGS_CHANGED', '%s', 412);
const PreconditionRequired = createError('HUBSIDE_USAGE_ERR_IF_MATCH', '%s', 428);

const etagOf = (id: number) => `"v${id}"`;
/** The version an If-Match names ("v3", weak or not), or undefined. */
function versionOf(header: string | string[] | undefined): number | undefined {
  const m = typeof header === 'string' ? /^\s*(?:W\/)?"v(\d{1,9})"\s*$/.exec(header) : null;
  return m ? Number(m[1]) : undefined;
}

const MAX_RANGE_DAYS = 400;
// A hub name: no NUL (PostgreSQL can't compare with it) or lone surrogate, at most 255 characters.
const name = hubName;
const day = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date, YYYY-MM-DD')
  .transform((v, ctx) => {
    const t = Date.parse(`${v}T00:00:00Z`);
    if (Number.isNaN(t) || new Date(t).toISOString().slice(0, 10) !== v || t < Date.UTC(2000, 0, 1) || t > Date.UTC(2100, 0, 1)) {
      ctx.addIssue({ code: 'custom', message: 'must be a real date between 2000 and 2100' });
      return z.NEVER;
    }
    return t;
  });
/** `to` is exclusive: the first day not shown. Default: the current calendar month. */
const rangeQuery = z.object({ from: day.optional(), to: day.optional() }).strict();
const courseQuery = rangeQuery
  .extend({
    page: z.coerce.number().int().min(1).max(100_000).default(1),
    per_page: z.coerce.number().int().min(1).max(500).default(50),
    sort: z.enum(SORT_KEYS).default('net'),
    order: z.enum(['asc', 'desc']).default('desc'),
  })
  .strict();
export const SHARE_HEADER = 'x-hubside-share';

function rangeOf(q: { from?: number | undefined; to?: number | undefined }, now: number): Range {
  const d = new Date(now);
  const from = q.from ?? Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
  const to = q.to ?? (q.from !== undefined ? from + 31 * 86_400_000 : Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1));
  if (to <= from) throw new BadRange('query.to: must be after query.from');
  if (to - from > MAX_RANGE_DAYS * 86_400_000) throw new BadRange(`query: a range may span at most ${MAX_RANGE_DAYS} days`);
  return { from, to };
}

export interface DashboardApiOptions {
  routePrefix: string;
  config: UsageCollectorConfig;
  repo: SessionsRepository;
  /** The views of the settings in force, and that configuration. */
  live: () => Promise<{ views: Views; config: UsageCollectorConfig }>;
  settings: SettingsStore;
  shares: SharesService;
  /** Every group that appears in recorded sessions. */
  listGroups: () => Promise<string[]>;
  /** Default 7 days. */
  shareDays?: number;
}

/** What the signed-in caller may open; the pages use it to show only the views that work. */
export async function managedGroups(v: Visibility, listGroups: () => Promise<string[]>, config: UsageCollectorConfig): Promise<string[]> {
  if (!v.all) return [...v.groups].sort();
  const known = new Set<string>([...Object.keys(config.budgets.groups), ...config.attribution.groupOrder, ...(await listGroups())]);
  return [...known].sort();
}

export async function dashboardApi(fastify: FastifyInstance, opts: DashboardApiOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { routePrefix: prefix, config, repo, shares, settings } = opts;

  // Access rules come from the community file; rate cards and budgets from the settings in force.
  const vis = (request: FastifyRequest) => visibilityOf(request.hubUser!, config);
  const views = async () => (await opts.live()).views;

  /**
   * A link grants what its creator may see, no more and no longer: their rights are asked of the
   * hub now (cached as long as the auth cache keeps a token's identity, no longer), so a link stops
   * working once its creator loses the course or their admin role. A hub that can't be asked
   * refuses the link (503) rather than serving it on an old answer.
   */
  const creatorChecks = new Map<string, { at: number; ok: boolean }>();
  async function creatorMaySee(creator: string, group: string): Promise<boolean> {
    const ttl = fastify.kit.settings.authCacheTtlMs;
    const key = JSON.stringify([creator, group]);
    const hit = creatorChecks.get(key);
    if (hit && Date.now() - hit.at < ttl) return hit.ok;
    const hub = fastify.kit.hub;
    if (!hub) return false;
    let model;
    try {
      model = await hub.getUser(creator);
    } catch (err) {
      throw new HubUnavailableError(`could not ask the hub about the link's creator: ${(err as Error).message}`);
    }
    const ok = model !== null && maySeeGroup(visibilityOf({ kind: 'user', name: model.name, admin: model.admin ?? false, groups: [...(model.groups ?? [])], scopes: [] }, config), group);
    if (creatorChecks.size >= 10_000) creatorChecks.clear();
    if (ttl > 0) creatorChecks.set(key, { at: Date.now(), ok });
    return ok;
  }

  async function courseAllowed(request: FastifyRequest, group: string): Promise<void> {
    const v = vis(request);
    if (!maySeeGroup(v, group)) throw new Forbidden(`params.group: you do not manage group ${JSON.stringify(group)}`);
    const { config } = await opts.live();
    if (v.all && !(await repo.knownGroup(group)) && !entryOf(config.budgets.groups, group) && !config.attribution.groupOrder.includes(group)) {
      const hub = fastify.kit.hub;
      if (!hub || (await hub.getGroup(group).catch(() => null)) === null) throw new NotFound(`params.group: no group ${JSON.stringify(group)}`);
    }
  }

  app.get(`${prefix}api/dashboard/me`, { schema: { querystring: rangeQuery } }, async (request) => {
    const user = request.hubUser!;
    if (user.kind !== 'user') throw new Forbidden('only hub users have a personal dashboard');
    const now = Date.now();
    return (await views()).student(user.name, user.groups, rangeOf(request.query, now), now);
  });

  app.get(`${prefix}api/dashboard/access`, async (request) => {
    const v = vis(request);
    const groups = await managedGroups(v, opts.listGroups, (await opts.live()).config);
    return { user: request.hubUser!.name, admin: v.all, groups };
  });

  app.get(`${prefix}api/dashboard/groups/:group`, { schema: { params: z.object({ group: name }).strict(), querystring: courseQuery } }, async (request) => {
    await courseAllowed(request, request.params.group);
    const now = Date.now();
    const q = request.query;
    return (await views()).course(request.params.group, rangeOf(q, now), now, { page: q.page, perPage: q.per_page, sort: q.sort, order: q.order });
  });

  app.get(`${prefix}api/dashboard/groups/:group/students.csv`, { schema: { params: z.object({ group: name }).strict(), querystring: rangeQuery } }, async (request, reply) => {
    await courseAllowed(request, request.params.group);
    const now = Date.now();
    const range = rangeOf(request.query, now);
    const lines = await (await views()).courseLines(request.params.group, range, now);
    let out = csvLine(['user', 'hours', `gross_${config.currency}`, `net_${config.currency}`, 'idle_hours', 'budget_used', 'budget_limit', 'budget_unit', 'budget_percent']);
    for (const l of lines) out += csvLine([l.user, l.hours, l.gross, l.net, l.idle_hours, l.budget_used ?? '', l.budget_limit ?? '', l.budget_unit ?? '', l.budget_percent ?? '']);
    // The file name carries only the dates: group names are free text.
    const file = `course-${new Date(range.from).toISOString().slice(0, 10)}-${new Date(range.to).toISOString().slice(0, 10)}.csv`;
    return reply.type('text/csv; charset=utf-8').header('content-disposition', `attachment; filename="${file}"`).send(out);
  });

  app.get(`${prefix}api/dashboard/hub`, { schema: { querystring: rangeQuery } }, async (request) => {
    if (!vis(request).all) throw new Forbidden('only hub admins and the configured admin groups see the whole hub');
    const now = Date.now();
    return (await views()).hub(rangeOf(request.query, now), now);
  });

  // Rate cards and budgets: admins read, validate and save them here (settings.ts keeps the
  // versions). A save names the version it edits (If-Match: "v<id>"), so two admins cannot
  // overwrite each other unknowingly.
  app.get(`${prefix}api/dashboard/settings`, async (request, reply) => {
    if (!vis(request).all) throw new Forbidden('only admins see rate cards and budgets');
    const { version, newest, skipped } = await settings.current();
    // A save goes on top of the newest stored version, even one that was passed over as not valid.
    reply.header('etag', etagOf(newest));
    return {
      version: version.id,
      newest,
      // Versions not in force because they are not valid (see settings.ts), so the page can say so.
      skipped,
      source: version.source,
      author: version.author,
      note: version.note,
      created_at: version.created_at,
      editable: version.settings,
      // Kept in the community file: shown, not edited here.
      currency: config.currency,
      attribution: config.attribution,
      webhook: config.budgets.webhook ? '(set in the community file)' : null,
      history: await settings.history(),
    };
  });

  const issuesOf = (error: z.ZodError) => error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));

  app.post(`${prefix}api/dashboard/settings/validate`, { schema: { body: z.record(z.string(), z.unknown()) } }, async (request) => {
    if (!vis(request).all) throw new Forbidden('only admins validate settings');
    const parsed = editableSettingsSchema.safeParse(request.body);
    if (parsed.success) return { valid: true, issues: [] };
    return { valid: false, issues: issuesOf(parsed.error) };
  });

  app.put(
    `${prefix}api/dashboard/settings`,
    // The body is checked below, so a bad one gets every issue with its field, as /validate gives.
    { schema: { body: z.object({ editable: z.unknown(), note: noteSchema.default('') }).strict() } },
    async (request, reply) => {
      if (!vis(request).all) throw new Forbidden('only admins change rate cards and budgets');
      const expected = versionOf(request.headers['if-match']);
      if (expected === undefined) throw new PreconditionRequired('send If-Match with the ETag of the settings you edited, e.g. If-Match: "v3"');
      const parsed = editableSettingsSchema.safeParse(request.body.editable);
      if (!parsed.success) {
        return reply.code(422).send({
          statusCode: 422,
          error: 'Unprocessable Entity',
          code: 'HUBSIDE_USAGE_ERR_SETTINGS',
          message: `the settings are not valid: ${issuesOf(parsed.error).map((i) => `${i.path || '(top)'}: ${i.message}`).join('; ')}`,
          issues: issuesOf(parsed.error),
        });
      }
      const r = await settings.save(expected, parsed.data, request.hubUser!.name, request.body.note);
      if (!r.saved) throw new Conflict(`the settings changed since you loaded them: version ${r.current} is in force now; reload and edit that`);
      request.log.info({ version: r.version.id }, 'rate cards and budgets saved from the dashboard');
      return reply.header('etag', etagOf(r.version.id)).send({ version: r.version.id, author: r.version.author, created_at: r.version.created_at });
    },
  );

  app.post(
    `${prefix}api/dashboard/shares`,
    { schema: { body: z.object({ group: name, days: z.number().int().min(1).max(MAX_SHARE_DAYS).default(opts.shareDays ?? 7) }).strict() } },
    async (request, reply) => {
      await courseAllowed(request, request.body.group);
      const { share, token } = await shares.create(request.body.group, request.hubUser!.name, request.body.days);
      return reply.code(201).send({ ...share, token, url: `${prefix}dashboard/shared#${token}` });
    },
  );

  app.get(`${prefix}api/dashboard/shares`, async (request) => {
    const v = vis(request);
    return { shares: await shares.list(v.all ? {} : { createdBy: request.hubUser!.name }) };
  });

  app.delete(`${prefix}api/dashboard/shares/:id`, { schema: { params: z.object({ id: z.uuid() }).strict() } }, async (request) => {
    const v = vis(request);
    const share = await shares.get(request.params.id);
    if (!share) throw new NotFound('params.id: no such share link');
    if (!v.all && share.created_by !== request.hubUser!.name) throw new Forbidden('only an admin or the link\'s creator may revoke it');
    return shares.revoke(share.id, request.hubUser!.name);
  });

  // The shared, read-only course view. No hub login: the signed link is the credential. It comes in
  // a header (the page keeps it in the URL fragment), so it never lands in access logs.
  app.get(`${prefix}api/dashboard/shared`, { config: { auth: false }, schema: { querystring: courseQuery } }, async (request) => {
    const raw = request.headers[SHARE_HEADER];
    if (typeof raw !== 'string' || raw.length === 0 || raw.length > 4096) throw new ShareRefused(`send the share link's token in the ${SHARE_HEADER} header`);
    const checked = await shares.check(raw);
    if (!checked.ok) {
      const why = { invalid: 'this share link is not valid', expired: 'this share link has expired', revoked: 'this share link was revoked by an admin' }[checked.reason];
      throw new ShareRefused(why);
    }
    if (!(await creatorMaySee(checked.share.created_by, checked.share.group))) {
      throw new ShareRefused('this share link no longer works: the person who created it no longer has access to this course');
    }
    const now = Date.now();
    const q = request.query;
    const view = await (await views()).course(checked.share.group, rangeOf(q, now), now, { page: q.page, perPage: q.per_page, sort: q.sort, order: q.order });
    return { ...view, shared: { expires_at: checked.share.expires_at } };
  });
}
