/**
 * The dashboard pages: small HTML shells that load one script, which reads the JSON API. A page
 * a caller may not open answers 403 (as HTML) before any data is fetched; the API refuses too.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import escapeHtml from 'escape-html';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { visibilityOf } from '../access.js';
import type { UsageCollectorConfig } from '../config.js';

export type View = 'student' | 'course' | 'admin' | 'shared';

const TITLES: Record<View, string> = { student: 'My usage', course: 'Course usage', admin: 'Hub usage', shared: 'Shared course usage' };
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

export function pageHtml(opts: { prefix: string; view: View; user: string | null }): string {
  const p = escapeHtml(opts.prefix);
  const title = TITLES[opts.view];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Hubside</title><link rel="stylesheet" href="${p}dashboard/assets/dashboard.css"></head>
<body data-view="${opts.view}" data-prefix="${p}">
<a class="skip" href="#main">Skip to content</a>
<header class="top"><div class="brand">Hubside usage</div>
<nav aria-label="Dashboards" id="nav"></nav>
<div class="who">${opts.user ? `Signed in as <strong id="user">${escapeHtml(opts.user)}</strong> · <a href="${p}logout">Log out</a>` : 'Read-only shared view'}</div></header>
<main id="main" tabindex="-1"><h1>${title}</h1>
<form id="period-form" class="period" aria-label="Period">
<label for="period">Period</label>
<select id="period" name="period"><option value="this-month">This month</option><option value="last-month">Last month</option><option value="last-30">Last 30 days</option><option value="custom">Custom…</option></select>
<span id="custom" hidden><label for="from">From</label> <input type="date" id="from" name="from"> <label for="to">Until (exclusive)</label> <input type="date" id="to" name="to"></span>
<button type="submit" id="apply">Show</button>
</form>
<p id="status" role="status" aria-live="polite"></p>
<div id="error" role="alert" hidden></div>
<div id="content"></div>
</main>
<script src="${p}dashboard/assets/chart.umd.min.js"></script>
<script src="${p}dashboard/assets/dashboard.js"></script>
</body></html>`;
}

function forbiddenHtml(prefix: string, message: string): string {
  const p = escapeHtml(prefix);
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Forbidden · Hubside</title><link rel="stylesheet" href="${p}dashboard/assets/dashboard.css"></head>
<body><main id="main"><h1>403 · Not allowed</h1><p id="forbidden">${escapeHtml(message)}</p>
<p><a href="${p}">Back to your own usage</a></p></main></body></html>`;
}

/** The query parameters the pages read (web/dashboard.js). */
const VIEW_PARAMS = new Set(['period', 'from', 'to', 'group', 'page', 'sort', 'order']);

export interface PagesOptions {
  routePrefix: string;
  config: UsageCollectorConfig;
}

export async function dashboardPages(fastify: FastifyInstance, opts: PagesOptions): Promise<void> {
  const { routePrefix: prefix, config } = opts;
  const require = createRequire(import.meta.url);
  // chart.js exports only its module entry points; the browser build sits beside them in dist/.
  // Served from node_modules and our own web/ folder: no CDN, nothing fetched at run time.
  const assets = new Map<string, { type: string; body: Buffer }>([
    ['chart.umd.min.js', { type: 'text/javascript; charset=utf-8', body: await readFile(join(dirname(require.resolve('chart.js')), 'chart.umd.min.js')) }],
    ['dashboard.js', { type: 'text/javascript; charset=utf-8', body: await readFile(fileURLToPath(new URL('../../web/dashboard.js', import.meta.url))) }],
    ['dashboard.css', { type: 'text/css; charset=utf-8', body: await readFile(fileURLToPath(new URL('../../web/dashboard.css', import.meta.url))) }],
  ]);

  fastify.get<{ Params: { file: string } }>(`${prefix}dashboard/assets/:file`, { config: { auth: false } }, async (request, reply) => {
    const asset = assets.get(request.params.file);
    if (!asset) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: 'no such asset', code: 'HUBSIDE_ERR_NOT_FOUND' });
    return reply.type(asset.type).header('cache-control', 'public, max-age=300').header('x-content-type-options', 'nosniff').send(asset.body);
  });

  const send = (reply: FastifyReply, html: string, status = 200) =>
    reply.code(status).type('text/html; charset=utf-8').header('cache-control', 'no-store').header('content-security-policy', CSP).send(html);

  // The student view is the service's home page; its first address, `dashboard/`, still leads there.
  fastify.get(prefix, { config: { auth: { browser: true } } }, async (request, reply) => {
    return send(reply, pageHtml({ prefix, view: 'student', user: request.hubUser!.name }));
  });
  fastify.get(`${prefix}dashboard/`, { config: { auth: false } }, async (request, reply) => {
    // Only the view's own settings travel on; anything else (a `next=`, say) is dropped, so this
    // public redirect can't be used to carry an attacker's address anywhere.
    const query = new URLSearchParams();
    for (const [key, value] of new URL(request.url, 'http://x').searchParams) {
      if (VIEW_PARAMS.has(key)) query.append(key, value);
    }
    const search = query.size > 0 ? `?${query}` : '';
    return reply.redirect(`${prefix}${search}`, 301);
  });

  fastify.get(`${prefix}dashboard/course`, { config: { auth: { browser: true } } }, async (request, reply) => {
    const v = visibilityOf(request.hubUser!, config);
    if (!v.all && v.groups.size === 0) return send(reply, forbiddenHtml(prefix, 'The course view is for instructors: you manage no group on this hub.'), 403);
    return send(reply, pageHtml({ prefix, view: 'course', user: request.hubUser!.name }));
  });

  fastify.get(`${prefix}dashboard/admin`, { config: { auth: { browser: true } } }, async (request, reply) => {
    if (!visibilityOf(request.hubUser!, config).all) return send(reply, forbiddenHtml(prefix, 'The hub view is for hub admins and the configured admin groups.'), 403);
    return send(reply, pageHtml({ prefix, view: 'admin', user: request.hubUser!.name }));
  });

  fastify.get(`${prefix}dashboard/shared`, { config: { auth: false } }, async (_request, reply) => {
    return send(reply, pageHtml({ prefix, view: 'shared', user: null }));
  });
}
