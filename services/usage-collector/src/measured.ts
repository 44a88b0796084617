/**
 * Measured usage from Prometheus (kube-state-metrics + cAdvisor series). Pods are tied to users
 * only through the `hub.jupyter.org/username` pod annotation (kube-state-metrics exposes it as
 * the label `annotation_hub_jupyter_org_username`), joined on (namespace, pod) — never by a
 * pod-name pattern, so `alice` can never pick up `alice2`'s pods.
 */
import type { Kysely } from 'kysely';
import { z } from 'zod';
import type { UsageDB } from './usage.table.js';

export const USER_LABEL = 'annotation_hub_jupyter_org_username';
const OWNER = `max by (namespace, pod, ${USER_LABEL}) (kube_pod_annotations{${USER_LABEL}!=""})`;
const byUser = (inner: string) => `sum by (${USER_LABEL}) ((${inner}) * on (namespace, pod) group_left(${USER_LABEL}) ${OWNER})`;

export function measuredQueries(windowSeconds: number): Record<'cpuSeconds' | 'memory' | 'cpuRequest' | 'memoryRequest', string> {
  const w = `${Math.max(1, Math.round(windowSeconds))}s`;
  return {
    cpuSeconds: byUser(`sum by (namespace, pod) (increase(container_cpu_usage_seconds_total{container!=""}[${w}]))`),
    memory: byUser(`sum by (namespace, pod) (container_memory_working_set_bytes{container!=""})`),
    cpuRequest: byUser(`sum by (namespace, pod) (kube_pod_container_resource_requests{resource="cpu"})`),
    memoryRequest: byUser(`sum by (namespace, pod) (kube_pod_container_resource_requests{resource="memory"})`),
  };
}

const vectorAnswer = z.object({
  status: z.literal('success'),
  data: z.object({
    resultType: z.literal('vector'),
    result: z.array(z.object({ metric: z.record(z.string(), z.string()), value: z.tuple([z.number(), z.string()]) })),
  }),
});

export interface MeasuredUsage {
  cpuSeconds: number;
  memoryWorkingSetBytes: number;
  cpuRequest: number;
  memoryRequestBytes: number;
}

async function instant(prometheusUrl: string, query: string, at: Date): Promise<Map<string, number>> {
  const url = new URL('api/v1/query', prometheusUrl.endsWith('/') ? prometheusUrl : `${prometheusUrl}/`);
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ query, time: String(at.getTime() / 1000) }),
    signal: AbortSignal.timeout(10_000),
  });
  if (!res.ok) throw new Error(`Prometheus answered HTTP ${res.status} to a query`);
  const body = vectorAnswer.parse(await res.json());
  const out = new Map<string, number>();
  for (const r of body.data.result) {
    const user = r.metric[USER_LABEL];
    const v = Number(r.value[1]);
    if (user !== undefined && Number.isFinite(v)) out.set(user, v);
  }
  return out;
}

/** Per-user measured usage over the `windowSeconds` before `at`. */
export async function queryMeasured(prometheusUrl: string, windowSeconds: number, at: Date): Promise<Map<string, MeasuredUsage>> {
  const q = measuredQueries(windowSeconds);
  const [cpu, mem, cpuReq, memReq] = await Promise.all([q.cpuSeconds, q.memory, q.cpuRequest, q.memoryRequest].map((query) => instant(prometheusUrl, query, at)));
  const users = new Set([...cpu!.keys(), ...mem!.keys(), ...cpuReq!.keys(), ...memReq!.keys()]);
  const out = new Map<string, MeasuredUsage>();
  for (const u of users) {
    out.set(u, { cpuSeconds: cpu!.get(u) ?? 0, memoryWorkingSetBytes: mem!.get(u) ?? 0, cpuRequest: cpuReq!.get(u) ?? 0, memoryRequestBytes: memReq!.get(u) ?? 0 });
  }
  return out;
}

export async function storeMeasured(db: Kysely<UsageDB>, at: Date, windowSeconds: number, samples: Map<string, MeasuredUsage>): Promise<number> {
  if (samples.size === 0) return 0;
  const rows = [...samples].map(([user, m]) => ({
    user_name: user,
    at,
    window_seconds: Math.round(windowSeconds),
    cpu_seconds: m.cpuSeconds,
    memory_working_set_bytes: m.memoryWorkingSetBytes,
    cpu_request: m.cpuRequest,
    memory_request_bytes: m.memoryRequestBytes,
  }));
  await db.insertInto('measured_samples').values(rows).onConflict((oc) => oc.columns(['user_name', 'at']).doNothing()).execute();
  return rows.length;
}
