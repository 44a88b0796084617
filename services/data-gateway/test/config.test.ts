/** The data-gateway section is validated at startup; every error names the field. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadSection } from '@hubside/service-kit';
import { describe, expect, it } from 'vitest';
import { configSchema } from '../src/config.js';

const EXAMPLE = fileURLToPath(new URL('../../../examples/community.yaml', import.meta.url));

async function load(yaml: string): Promise<unknown> {
  const dir = await mkdtemp(join(tmpdir(), 'dg-config-'));
  try {
    await writeFile(join(dir, 'c.yaml'), yaml);
    return loadSection(join(dir, 'c.yaml'), 'data-gateway', configSchema);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const issues = async (yaml: string) => {
  const err = await load(yaml).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ConfigError);
  return (err as ConfigError).issues.join('\n');
};

describe('data-gateway config', () => {
  it('defaults to no datasets when the section is absent', () => {
    expect(loadSection(undefined, 'data-gateway', configSchema)).toMatchObject({ datasets: {}, backendTimeoutSeconds: 10, cacheRefreshFraction: 0.8, audit: { flushSeconds: 1, maxPendingBatches: 1000 } });
  });

  it('audit batching settings are checked', async () => {
    expect(await issues('data-gateway:\n  audit: { flushSeconds: 0.001 }\n')).toContain('data-gateway.audit.flushSeconds: must be 0 (write every delivery) or at least 0.05');
    expect(await issues('data-gateway:\n  audit: { maxPendingBatches: 0 }\n')).toContain('data-gateway.audit.maxPendingBatches');
    expect(await issues('data-gateway:\n  audit: { flushEvery: 2 }\n')).toContain('data-gateway.audit');
  });

  it('accepts the example community file', () => {
    const config = loadSection(EXAMPLE, 'data-gateway', configSchema);
    expect(Object.keys(config.datasets).length).toBeGreaterThan(2);
  });

  it.each([
    ['prefix: "home/{username}"', 'data-gateway.datasets.d.prefix: must end with "/"'],
    ['prefix: "home/*/"', 'data-gateway.datasets.d.prefix: may hold only'],
    ['prefix: "home/../{username}/"', 'data-gateway.datasets.d.prefix: must not contain empty, "." or ".."'],
    ['prefix: "groups/{group}/"', 'data-gateway.datasets.d.groups: must list the groups'],
    ['prefix: "x/"\n    maxLifetimeSeconds: 0', 'data-gateway.datasets.d.maxLifetimeSeconds'],
    ['prefix: "x/"\n    access: write', 'data-gateway.datasets.d.access'],
    ['prefix: "x/"\n    surprise: 1', 'data-gateway.datasets.d'],
  ])('%s → %s', async (extra, message) => {
    const text = await issues(`data-gateway:\n  datasets:\n    d:\n      provider: s3\n      bucket: data\n      s3: { roleArn: "arn:aws:iam::1:role/r" }\n      ${extra.replaceAll('\n    ', '\n      ')}\n`);
    expect(text).toContain(message);
  });

  it('requires the provider settings and an endpoint for s3-compatible', async () => {
    const text = await issues('data-gateway:\n  datasets:\n    d: { provider: s3-compatible, bucket: data, prefix: "x/" }\n');
    expect(text).toContain('data-gateway.datasets.d.s3: is required');
    expect(text).toContain('data-gateway.datasets.d.endpoint: is required');
  });

  it('refuses odd dataset names and secrets written into the file', async () => {
    expect(await issues('data-gateway:\n  datasets:\n    "Bad Name": { provider: gcs, bucket: data, prefix: "" }\n')).toContain('data-gateway.datasets.Bad Name');
    expect(
      await issues('data-gateway:\n  datasets:\n    d: { provider: s3, bucket: data, prefix: "", s3: { roleArn: r, secretAccessKey: "abc" } }\n'),
    ).toContain('data-gateway.datasets.d.s3');
  });
});
