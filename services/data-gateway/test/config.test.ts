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

describe('limits and strings in the datasets config', () => {
  const s3 = { provider: 's3-compatible', bucket: 'hub-data', endpoint: 'http://127.0.0.1:9', prefix: 'shared/', s3: { roleArn: 'arn:aws:iam:::role/r' } };
  const paths = (cfg: unknown) => {
    const r = configSchema.safeParse(cfg);
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };

  it('refuses a NUL, a lone surrogate or a control character in group names and saved text, naming the field', () => {
    expect(paths({ datasets: { d: { ...s3, groups: ['ok', 'a\u0000b'] } } })).toEqual([expect.stringMatching(/^datasets\.d\.groups\.1: /)]);
    expect(paths({ datasets: { d: { ...s3, groups: ['\ud800'] } } })).toEqual([expect.stringMatching(/^datasets\.d\.groups\.0: must be valid Unicode/)]);
    expect(paths({ datasets: { d: { ...s3, groups: ['a\nb'] } } })).toHaveLength(1);
    expect(paths({ datasets: { d: { ...s3, description: 'x\udfff' } } })).toEqual([expect.stringMatching(/^datasets\.d\.description: /)]);
    expect(paths({ datasets: { d: { ...s3, region: 'eu\u0000' } } })).toHaveLength(1);
    expect(paths({ datasets: { d: { ...s3, groups: ['Физика 101', '🧪 lab'], description: 'Données 🌍' } } })).toEqual([]);
  });

  it('bounds the datasets, and the groups of each, at 1000', () => {
    const many = Array.from({ length: 1001 }, (_, i) => `g${i}`);
    expect(paths({ datasets: { d: { ...s3, groups: many } } })).toHaveLength(1);
    expect(paths({ datasets: { d: { ...s3, groups: many.slice(0, 1000) } } })).toEqual([]);
    expect(paths({ datasets: Object.fromEntries(many.map((g) => [g, s3])) })).toEqual([expect.stringMatching(/^datasets: must define at most 1000/)]);
  });

  it('bounds groupCheckSeconds and groupLifetimeSeconds', () => {
    expect(configSchema.parse({})).toMatchObject({ groupCheckSeconds: 30, groupLifetimeSeconds: 900 });
    expect(paths({ groupCheckSeconds: 301 })).toHaveLength(1);
    expect(paths({ groupLifetimeSeconds: 0 })).toHaveLength(1);
  });
});

describe('what the section names and defines, for check-config', () => {
  it('reports every dataset group with its field path, and the datasets it provides', async () => {
    const { references, provides } = await import('../src/index.js');
    const s3 = { provider: 's3-compatible', bucket: 'hub-data', endpoint: 'http://127.0.0.1:9', s3: { roleArn: 'arn:aws:iam:::role/r' } };
    const config = configSchema.parse({
      datasets: {
        'climate-shared': { ...s3, prefix: 'groups/{group}/', groups: ['climate', 'ocean'] },
        home: { ...s3, prefix: 'home/{username}/' },
      },
    });
    expect(references(config)).toEqual([
      { kind: 'group', name: 'climate', field: 'data-gateway.datasets.climate-shared.groups[0]' },
      { kind: 'group', name: 'ocean', field: 'data-gateway.datasets.climate-shared.groups[1]' },
    ]);
    expect(provides(config)).toEqual({ datasets: ['climate-shared', 'home'] });
  });
});
