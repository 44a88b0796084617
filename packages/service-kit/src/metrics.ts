import type { HubCallEvent, CacheResult } from '@hubside/hub-client';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The metrics every service exports, on a registry of its own (never prom-client's global one). */
export interface KitMetrics {
  registry: Registry;
  httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  hubCalls: Counter<'route' | 'status'>;
  hubCallDuration: Histogram<'route'>;
  authCache: Counter<'result'>;
  observeHubCall(event: HubCallEvent): void;
  observeCache(result: CacheResult): void;
}

export function createMetrics(service: string, opts: { defaultMetrics?: boolean } = {}): KitMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'hubside_' });

  const httpDuration = new Histogram({
    name: 'hubside_http_request_duration_seconds',
    help: 'Time to answer HTTP requests, by route template',
    labelNames: ['method', 'route', 'status_code'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const hubCalls = new Counter({
    name: 'hubside_hub_api_calls_total',
    help: 'Requests made to the JupyterHub API, by route template and status (or "error")',
    labelNames: ['route', 'status'] as const,
    registers: [registry],
  });
  const hubCallDuration = new Histogram({
    name: 'hubside_hub_api_call_duration_seconds',
    help: 'Latency of JupyterHub API requests',
    labelNames: ['route'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const authCache = new Counter({
    name: 'hubside_auth_cache_total',
    help: 'Token lookups by outcome: hit, negative_hit (known bad token), miss (asked the hub), joined (waited on an in-flight lookup)',
    labelNames: ['result'] as const,
    registers: [registry],
  });

  return {
    registry,
    httpDuration,
    hubCalls,
    hubCallDuration,
    authCache,
    observeHubCall(event) {
      hubCalls.inc({ route: event.route, status: String(event.status) });
      hubCallDuration.observe({ route: event.route }, event.durationMs / 1000);
    },
    observeCache(result) {
      authCache.inc({ result });
    },
  };
}
