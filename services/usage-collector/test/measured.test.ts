/**
 * Measured usage against a real Prometheus (Debian's) scraping a small exporter that serves
 * kube-state-metrics- and cAdvisor-shaped series. Users are joined on the pod annotation
 * `hub.jupyter.org/username`, so `alice` never picks up `alice2`'s pod.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDatabase, migrate } from '@hubside/service-kit';
import type { Database } from '@hubside/service-kit';
import { createTestDatabase, freePort, waitFor } from '@hubside/testing';
import type { TestDatabase } from '@hubside/testing';
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prometheusUrl } from '../src/config.js';
import { queryMeasured, storeMeasured } from '../src/measured.js';
import { migrations } from '../src/migrations/index.js';
import type { UsageDB } from '../src/usage.table.js';

const PODS = [
  { pod: 'jupyter-alice', user: 'alice', cores: 0.5, request: 0.5, mem: 1_000_000_000 },
  { pod: 'jupyter-alice2', user: 'alice2', cores: 2, request: 2, mem: 4_000_000_000 },
  { pod: 'jupyter-e-2eo-40x', user: 'é.o@x', cores: 1, request: 1, mem: 2_000_000_000 },
];

const PROMETHEUS = '/usr/bin/prometheus';

/** Fails at once, naming what to install, instead of waiting a minute for a server that never starts. */
function requirePrometheus(): void {
  try {
    accessSync(PROMETHEUS, constants.X_OK);
  } catch {
    throw new Error(`${PROMETHEUS} is missing: this test runs a real Prometheus; install the Debian package \`prometheus\` (apt-get install -y prometheus)`);
  }
}

let exporter: ChildProcess;
let prom: ChildProcess;
let promUrl: string;
let dir: string;
let tdb: TestDatabase;
let database: Database<any>;

// The exporter runs in its own process: PGlite's start-up blocks this one's event loop for longer
// than a scrape timeout, and failed scrapes would mark the series stale.
const EXPORTER = `
const { createServer } = require('node:http');
const PODS = ${JSON.stringify(PODS)};
const esc = (v) => v.replaceAll('\\\\', '\\\\\\\\').replaceAll('"', '\\\\"').replaceAll('\\n', '\\\\n');
const t0 = Date.now();
const server = createServer((_req, res) => {
  const elapsed = (Date.now() - t0) / 1000;
  let body = '# TYPE kube_pod_annotations gauge\\n# TYPE container_cpu_usage_seconds_total counter\\n';
  for (const p of PODS) {
    const base = 'namespace="hub",pod="' + p.pod + '"';
    body += 'kube_pod_annotations{' + base + ',annotation_hub_jupyter_org_username="' + esc(p.user) + '"} 1\\n';
    body += 'container_cpu_usage_seconds_total{' + base + ',container="notebook"} ' + (p.cores * elapsed).toFixed(3) + '\\n';
    body += 'container_memory_working_set_bytes{' + base + ',container="notebook"} ' + p.mem + '\\n';
    body += 'kube_pod_container_resource_requests{' + base + ',container="notebook",resource="cpu",unit="core"} ' + p.request + '\\n';
    body += 'kube_pod_container_resource_requests{' + base + ',container="notebook",resource="memory",unit="byte"} ' + p.mem * 2 + '\\n';
  }
  res.setHeader('content-type', 'text/plain; version=0.0.4');
  res.end(body);
});
server.listen(Number(process.argv[1]), '127.0.0.1');
`;

beforeAll(async () => {
  requirePrometheus();
  tdb = await createTestDatabase({ schemas: ['usage_collector'] });
  database = await createDatabase({ databaseUrl: tdb.databaseUrl, dataDir: tdb.dataDir, schema: 'usage_collector' });
  await migrate(database, migrations);
  const exporterPort = await freePort();
  exporter = spawn(process.execPath, ['-e', EXPORTER, String(exporterPort)], { stdio: 'ignore' });
  dir = await mkdtemp(join(tmpdir(), 'hubside-prom-'));
  await writeFile(
    join(dir, 'prometheus.yml'),
    `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ksm\n    honor_labels: true\n    static_configs:\n      - targets: ['127.0.0.1:${exporterPort}']\n`,
  );
  const port = await freePort();
  promUrl = `http://127.0.0.1:${port}/`;
  prom = spawn(PROMETHEUS, [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: 'ignore' });
  // A Prometheus that can't start fails the wait at once, with why.
  const exited = new AbortController();
  prom.once('error', (err) => exited.abort(new Error(`could not start ${PROMETHEUS}: ${err.message}`)));
  prom.once('exit', (code, signal) => exited.abort(new Error(`${PROMETHEUS} exited (${signal ?? `code ${code}`}) before it scraped the exporter`)));
  await waitFor(
    async () => {
      try {
        const m = await queryMeasured(promUrl, 5, new Date());
        return m.size === 3 && [...m.values()].every((v) => v.cpuSeconds > 0);
      } catch {
        return false;
      }
    },
    { timeoutMs: 60_000, intervalMs: 500, what: 'Prometheus to have scraped the exporter twice', signal: exited.signal },
  );
}, 90_000);

afterAll(async () => {
  prom?.kill('SIGTERM');
  if (prom && prom.exitCode === null) await new Promise((r) => prom.once('exit', r));
  exporter?.kill('SIGTERM');
  await database?.destroy();
  await tdb?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('measured usage from Prometheus', () => {
  it('joins on the username annotation, exactly, including unicode names', async () => {
    const m = await queryMeasured(promUrl, 5, new Date());
    // With a pod-name regex, alice would also get alice2's 2 cores.
    expect(m.get('alice')).toMatchObject({ cpuRequest: 0.5, memoryWorkingSetBytes: 1_000_000_000, memoryRequestBytes: 2_000_000_000 });
    expect(m.get('alice2')).toMatchObject({ cpuRequest: 2 });
    expect(m.get('é.o@x')).toMatchObject({ cpuRequest: 1 });
    // CPU seconds over 5 s follow each pod's own rate (0.5 vs 2 cores): alice2 ≈ 4 × alice.
    const ratio = m.get('alice2')!.cpuSeconds / m.get('alice')!.cpuSeconds;
    expect(ratio).toBeGreaterThan(3.5);
    expect(ratio).toBeLessThan(4.5);
  });

  it('stores one sample per user and poll, idempotently', async () => {
    const db = database.db as Kysely<UsageDB>;
    const at = new Date();
    const m = await queryMeasured(promUrl, 5, at);
    expect(await storeMeasured(db, at, 5, m)).toBe(3);
    await storeMeasured(db, at, 5, m);
    const rows = await db.selectFrom('measured_samples').select(['user_name', 'cpu_request']).orderBy('user_name').execute();
    expect(rows.map((r) => [r.user_name, Number(r.cpu_request)])).toEqual([
      ['alice', 0.5],
      ['alice2', 2],
      ['é.o@x', 1],
    ]);
  });

  it('PROMETHEUS_URL must be an http URL', () => {
    expect(prometheusUrl({})).toBeUndefined();
    expect(prometheusUrl({ PROMETHEUS_URL: 'http://prom:9090' })).toBe('http://prom:9090/');
    expect(() => prometheusUrl({ PROMETHEUS_URL: 'file:///etc/passwd' })).toThrow(/PROMETHEUS_URL/);
  });
});
