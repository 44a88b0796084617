/**
 * charts/grafana/usage-collector.json: it parses as a Grafana dashboard, every Prometheus query
 * names metrics (and labels) the collector really exports, and every JSON-API query reads a route
 * the collector serves and fields its answer really has.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { resolveSettings } from '@hubside/service-kit';
import { createTestDatabase } from '@hubside/testing';
import type { TestDatabase } from '@hubside/testing';
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createViews } from '../../src/dashboard/views.js';
import { buildApp, configSchema } from '../../src/index.js';
import { resolveConfig } from '../../src/config.js';
import { sessionsRepository } from '../../src/sessions-repository.js';
import type { UsageDB } from '../../src/usage.table.js';

const FILE = fileURLToPath(new URL('../../../../charts/grafana/usage-collector.json', import.meta.url));
const config = configSchema.parse({
  rateCards: [{ id: 'r', effectiveFrom: '2026-01-01', profileHour: { small: '1' } }],
  budgets: { default: { limit: '1', window: 'rolling', days: 30 } },
});

interface Target {
  refId: string;
  datasource: { type: string; uid: string };
  expr?: string;
  url?: string;
  root_selector?: string;
  columns?: { selector: string }[];
}
interface Dashboard {
  uid: string;
  title: string;
  panels: { id: number; title: string; type: string; gridPos: { x: number; y: number; w: number; h: number }; targets: Target[] }[];
  templating: { list: { name: string }[] };
}

let db: TestDatabase;
let app: FastifyInstance;
let dashboard: Dashboard;

beforeAll(async () => {
  dashboard = JSON.parse(await readFile(FILE, 'utf8')) as Dashboard;
  db = await createTestDatabase({ schemas: ['usage_collector'] });
  const settings = resolveSettings('usage-collector', { HUBSIDE_DATA_DIR: db.dataDir, ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}) });
  app = await buildApp({ settings, config, logger: false, defaultMetrics: false, autoPoll: false });
  await app.ready();
}, 60_000);

afterAll(async () => {
  await app?.close();
  await db?.drop();
});

const targets = () => dashboard.panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, ...t })));

describe('the Grafana dashboard', () => {
  it('is a dashboard with unique panel ids, data sources from its variables, and panels on the grid', () => {
    expect(dashboard.uid).toBe('hubside-usage');
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const vars = new Set(dashboard.templating.list.map((v) => v.name));
    for (const t of targets()) expect(vars.has(t.datasource.uid.replace(/^\$\{(.+)\}$/, '$1'))).toBe(true);
    for (const p of dashboard.panels) expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
    expect(targets().some((t) => t.expr)).toBe(true);
    expect(targets().some((t) => t.url)).toBe(true);
  });

  it('queries only metrics and labels the collector exports, and never a user label', async () => {
    const registry = app.kit.metrics.registry;
    const exported = new Map((await registry.getMetricsAsJSON()).map((m) => [m.name, m]));
    for (const t of targets().filter((x) => x.expr)) {
      const names = t.expr!.match(/hubside_[a-z_]+/g) ?? [];
      expect(names.length, t.panel).toBeGreaterThan(0);
      for (const n of names) {
        const base = n.replace(/_(bucket|sum|count)$/, '');
        expect(exported.has(base), `${t.panel}: ${n}`).toBe(true);
        const labels = new Set([...((registry.getSingleMetric(base) as unknown as { labelNames?: string[] }).labelNames ?? []), 'service', 'le']);
        for (const m of t.expr!.matchAll(/by \(([^)]*)\)/g)) for (const l of m[1]!.split(',').map((x) => x.trim())) expect(labels.has(l), `${t.panel}: label ${l}`).toBe(true);
        for (const m of t.expr!.matchAll(/\b([a-z_]+)=~?"/g)) expect(labels.has(m[1]!), `${t.panel}: label ${m[1]}`).toBe(true);
      }
      expect(t.expr).not.toMatch(/\buser\b/);
    }
  });

  it('reads JSON API routes the collector serves, and fields their answers have', async () => {
    const prefix = app.kit.settings.prefix;
    const now = Date.now();
    const t = (h: number) => new Date(now - h * 3_600_000);
    await app.db
      .insertInto('sessions')
      .values({ user_name: 'ann', server_name: '', started: t(5), profile: 'small', user_options: '{}', resources: '{}', groups: '["g1"]', first_seen: t(5), last_seen: t(2), stopped: t(2), stop_observed: t(2), stop_source: 'poll' })
      .execute();
    const day = 86_400_000;
    // Whole UTC days, as the API's ranges always are.
    const today = Math.floor(now / day) * day;
    const answer = (await createViews(app.db as Kysely<UsageDB>, sessionsRepository(app.db as Kysely<UsageDB>), resolveConfig(config)).hub({ from: today - 10 * day, to: today + day }, now)) as unknown as Record<string, unknown>;
    const at = (obj: unknown, path: string): unknown => path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], obj);
    for (const target of targets().filter((x) => x.url)) {
      const path = target.url!.replace('${collector_url}', '');
      expect(app.hasRoute({ method: 'GET', url: `${prefix}${path}` }), `${target.panel}: ${path}`).toBe(true);
      const root = at(answer, target.root_selector!);
      expect(root, `${target.panel}: ${target.root_selector}`).toBeDefined();
      const sample = Array.isArray(root) ? root[0] : root;
      expect(sample, `${target.panel}: ${target.root_selector} has no rows in the fixture`).toBeDefined();
      for (const c of target.columns ?? []) expect(at(sample, c.selector), `${target.panel}: ${c.selector}`).toBeDefined();
    }
  });
});
