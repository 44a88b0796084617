import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfigError, loadSection, resolveSettings } from '../src/config.js';

function yamlFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'hubside-config-'));
  const file = join(dir, 'community.yaml');
  writeFileSync(file, text);
  return file;
}

function issuesOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('settings from the hub environment', () => {
  it('reads the standard JupyterHub service variables', () => {
    const s = resolveSettings('usage-collector', {
      JUPYTERHUB_SERVICE_URL: 'http://127.0.0.1:10101',
      JUPYTERHUB_SERVICE_PREFIX: '/services/usage/',
      JUPYTERHUB_API_URL: 'http://127.0.0.1:8081/hub/api',
      JUPYTERHUB_API_TOKEN: 'abcdef0123456789',
      JUPYTERHUB_CLIENT_ID: 'service-usage',
      JUPYTERHUB_OAUTH_CALLBACK_URL: '/services/usage/oauth_callback',
      JUPYTERHUB_BASE_URL: '/',
    });
    expect(s.host).toBe('127.0.0.1');
    expect(s.port).toBe(10101);
    expect(s.prefix).toBe('/services/usage/');
    expect(s.hub).toEqual({ apiUrl: 'http://127.0.0.1:8081/hub/api', token: 'abcdef0123456789', timeoutMs: 10_000 });
    expect(s.oauth).toEqual({
      clientId: 'service-usage',
      redirectUri: '/services/usage/oauth_callback',
      authorizeUrl: '/hub/api/oauth2/authorize',
    });
  });

  it('has laptop defaults: no hub, prefix after the service, PGlite data dir', () => {
    const s = resolveSettings('profile-api', {}, { port: 9102 });
    expect(s.hub).toBeNull();
    expect(s.oauth).toBeNull();
    expect(s.port).toBe(9102);
    expect(s.prefix).toBe('/services/profile-api/');
    expect(s.databaseUrl).toBeUndefined();
    expect(s.dataDir).toMatch(/\.hubside\/data$/);
  });

  it('names each bad variable and the reason', () => {
    const issues = issuesOf(() =>
      resolveSettings('profile-api', {
        JUPYTERHUB_API_URL: 'ftp://hub',
        JUPYTERHUB_SERVICE_PREFIX: 'services/x',
        DATABASE_URL: 'mysql://x',
        HUBSIDE_AUTH_CACHE_TTL: '-5',
        JUPYTERHUB_OAUTH_ACCESS_SCOPES: 'not json',
      }),
    );
    expect(issues.join('\n')).toMatch(/JUPYTERHUB_API_URL: must be an http\(s\) URL/);
    expect(issues.join('\n')).toMatch(/JUPYTERHUB_SERVICE_PREFIX: must be a path/);
    expect(issues.join('\n')).toMatch(/DATABASE_URL: must be a postgres:\/\/ URL/);
    expect(issues.join('\n')).toMatch(/HUBSIDE_AUTH_CACHE_TTL: must be a positive number/);
    expect(issues.join('\n')).toMatch(/JUPYTERHUB_OAUTH_ACCESS_SCOPES: must be a JSON list/);
  });

  it('wants the API URL and token together', () => {
    expect(issuesOf(() => resolveSettings('profile-api', { JUPYTERHUB_API_TOKEN: 'abcdef0123456789' }))).toEqual([
      'JUPYTERHUB_API_URL: is required when JUPYTERHUB_API_TOKEN is set',
    ]);
  });
});

describe('community file sections', () => {
  const schema = z.object({ pollSeconds: z.number().int().positive().default(30), rates: z.array(z.object({ name: z.string() })).default([]) }).strict();

  it('applies defaults when the section or the file is absent', () => {
    expect(loadSection(undefined, 'usage-collector', schema)).toEqual({ pollSeconds: 30, rates: [] });
    expect(loadSection(yamlFile('community: {name: x}\n'), 'usage-collector', schema)).toEqual({ pollSeconds: 30, rates: [] });
  });

  it('names the field path in the error', () => {
    const file = yamlFile('usage-collector:\n  pollSeconds: -1\n  rates:\n    - {name: 3}\n  typo: 1\n');
    const issues = issuesOf(() => loadSection(file, 'usage-collector', schema));
    expect(issues).toContainEqual(expect.stringMatching(/^usage-collector\.pollSeconds: /));
    expect(issues).toContainEqual(expect.stringMatching(/^usage-collector\.rates\[0\]\.name: /));
    expect(issues).toContainEqual(expect.stringMatching(/^usage-collector: .*typo/));
  });

  it('rejects unknown top-level sections, YAML syntax errors and duplicate keys', () => {
    expect(issuesOf(() => loadSection(yamlFile('profile_api: {}\n'), 'profile-api', schema)).join()).toMatch(/profile_api/);
    expect(issuesOf(() => loadSection(yamlFile('a: [1, 2\n'), 'profile-api', schema)).join()).toMatch(/\(yaml\)/);
    expect(issuesOf(() => loadSection(yamlFile('community: {name: a}\ncommunity: {name: b}\n'), 'profile-api', schema)).join()).toMatch(/\(yaml\).*[Dd]uplicate|unique/);
  });

  it('reports a missing file clearly', () => {
    expect(issuesOf(() => loadSection('/nonexistent/community.yaml', 'profile-api', schema)).join()).toMatch(/cannot be read: ENOENT/);
  });
});

describe('withoutPrototypes', () => {
  it('makes config maps safe to index with user and group names like constructor or __proto__', async () => {
    const { withoutPrototypes } = await import('../src/config.js');
    const parsed = z.object({ groups: z.record(z.string(), z.object({ limit: z.number() })), list: z.array(z.object({ a: z.number() })) }).parse({ groups: { physics: { limit: 1 } }, list: [{ a: 1 }] });
    expect((parsed.groups as Record<string, unknown>).constructor).toBeDefined();
    const safe = withoutPrototypes(parsed);
    expect((safe.groups as Record<string, unknown>).constructor).toBeUndefined();
    expect((safe.groups as Record<string, unknown>).__proto__).toBeUndefined();
    expect(safe.groups.physics).toEqual({ limit: 1 });
    expect(JSON.stringify(safe)).toBe(JSON.stringify(parsed));
    expect(Object.getPrototypeOf(safe.list[0])).toBeNull();
  });
});
