import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { DEFAULT_COMMUNITY, communitySchema } from './community.js';
import type { Community } from './community.js';
import { DEFAULT_PROTECTION } from './protection.js';
import type { ProtectionSettings } from './protection.js';

/** The four services, as named in the hub's `c.JupyterHub.services` and in the community file. */
export const SERVICE_NAMES = ['auth-bridge', 'profile-api', 'usage-collector', 'data-gateway'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** Each service owns one database schema, named after it (`profile-api` → `profile_api`). */
export function schemaFor(name: ServiceName): string {
  return name.replaceAll('-', '_');
}

/** A configuration problem: every issue names the field and says what is wrong. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly issues: readonly string[];
  constructor(source: string, issues: readonly string[]) {
    super(`Invalid configuration (${source}):\n${issues.map((i) => `  - ${i}`).join('\n')}`);
    this.issues = issues;
  }
}

function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out === '' ? '(root)' : out;
}

/** Render zod issues as `field.path: reason` lines. */
export function describeIssues(error: z.ZodError, prefix = ''): string[] {
  return error.issues.map((issue) => {
    const path = fieldPath([...(prefix ? [prefix] : []), ...issue.path]);
    return `${path}: ${issue.message}`;
  });
}

/** Parse with a schema, or throw a ConfigError naming every bad field. */
export function parseOrThrow<S extends z.ZodType>(schema: S, value: unknown, source: string, prefix = ''): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) throw new ConfigError(source, describeIssues(result.error, prefix));
  return result.data;
}

const url = (what: string) =>
  z.string().refine((v) => {
    try {
      const u = new URL(v);
      return u.protocol === 'http:' || u.protocol === 'https:';
    } catch {
      return false;
    }
  }, `must be an http(s) URL (${what})`);

const prefixPath = z
  .string()
  .regex(/^\/([^\s?#]*\/)?$/, 'must be a path that starts and ends with "/", e.g. /services/usage/');

const seconds = z.coerce.number().positive('must be a positive number of seconds');

const perMinute = z.coerce.number().int('must be a whole number of requests a minute').min(0, 'must be 0 (no limit) or more');

const boolish = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

/**
 * Settings every service reads from the environment: the hub's standard service variables
 * plus HUBSIDE_* ones. Names match JupyterHub's, so a hub-managed service needs no extra setup.
 */
export const envSchema = z.object({
  JUPYTERHUB_SERVICE_NAME: z.string().min(1).optional(),
  JUPYTERHUB_SERVICE_URL: url('where this service listens').optional(),
  JUPYTERHUB_SERVICE_PREFIX: prefixPath.optional(),
  JUPYTERHUB_API_URL: url('the hub API, e.g. http://127.0.0.1:8081/hub/api').optional(),
  JUPYTERHUB_API_TOKEN: z.string().min(8, 'must be a JupyterHub API token').optional(),
  JUPYTERHUB_CLIENT_ID: z.string().min(1).optional(),
  JUPYTERHUB_OAUTH_CALLBACK_URL: z.string().min(1).optional(),
  JUPYTERHUB_OAUTH_ACCESS_SCOPES: z
    .string()
    .optional()
    .refine((v) => {
      if (v === undefined) return true;
      try {
        const p: unknown = JSON.parse(v);
        return Array.isArray(p) && p.every((s) => typeof s === 'string');
      } catch {
        return false;
      }
    }, 'must be a JSON list of scope strings'),
  JUPYTERHUB_BASE_URL: prefixPath.optional(),
  JUPYTERHUB_HOST: z.string().optional(),
  HUBSIDE_CONFIG: z.string().min(1).optional(),
  HUBSIDE_DATA_DIR: z.string().min(1).optional(),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
    .optional(),
  HUBSIDE_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
  HUBSIDE_AUTH_CACHE_TTL: seconds.optional(),
  HUBSIDE_HUB_TIMEOUT: seconds.optional(),
  HUBSIDE_COOKIE_SECRET: z.string().min(32, 'must be at least 32 characters; several may be given, comma-separated, newest first').optional(),
  HUBSIDE_METRICS_PUBLIC: boolish.optional(),
  HUBSIDE_TRUST_PROXY: z.string().optional(),
  HUBSIDE_HOST: z.string().optional(),
  HUBSIDE_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  HUBSIDE_RATE_LIMIT_USER: perMinute.optional(),
  HUBSIDE_RATE_LIMIT_SERVICE: perMinute.optional(),
  HUBSIDE_RATE_LIMIT_ANONYMOUS: perMinute.optional(),
  HUBSIDE_MAX_EVENT_LOOP_DELAY: z.coerce.number().int().min(0, 'must be 0 (off) or milliseconds').optional(),
  HUBSIDE_MAX_HEAP_FRACTION: z.coerce.number().min(0).max(1, 'must be a fraction of the heap limit, 0 (off) to 1').optional(),
  HUBSIDE_REQUEST_TIMEOUT: seconds.optional(),
});

export type ServiceEnv = z.output<typeof envSchema>;

/** Everything a service needs to know about where it runs, resolved from env with defaults. */
export interface ServiceSettings {
  name: ServiceName;
  /** Route prefix, ending in `/`. */
  prefix: string;
  host: string;
  port: number;
  hub: { apiUrl: string; token: string; timeoutMs: number } | null;
  /** Hub base URL (`/` by default); the hub's pages live under `{baseUrl}hub/`. */
  baseUrl: string;
  oauth: { clientId: string; redirectUri: string; authorizeUrl: string } | null;
  accessScopes: string[] | undefined;
  authCacheTtlMs: number;
  cookieSecrets: string[] | undefined;
  metricsPublic: boolean;
  trustProxy: string;
  logLevel: string;
  databaseUrl: string | undefined;
  dataDir: string;
  configFile: string | undefined;
  /** Rate limits, load shedding and request timeouts. */
  protection: ProtectionSettings;
}

export interface SettingsDefaults {
  port?: number;
  host?: string;
  prefix?: string;
  configFile?: string;
}

/** Resolve settings for one service from the environment. Throws ConfigError naming each bad variable. */
export function resolveSettings(name: ServiceName, env: NodeJS.ProcessEnv, defaults: SettingsDefaults = {}): ServiceSettings {
  const e = parseOrThrow(envSchema, env, 'environment');
  const issues: string[] = [];

  let host = e.HUBSIDE_HOST ?? defaults.host ?? '127.0.0.1';
  let port = e.HUBSIDE_PORT ?? defaults.port ?? 0;
  if (e.JUPYTERHUB_SERVICE_URL) {
    const bind = new URL(e.JUPYTERHUB_SERVICE_URL);
    host = bind.hostname.replace(/^\[|\]$/g, '');
    port = bind.port ? Number(bind.port) : bind.protocol === 'https:' ? 443 : 80;
  }
  const prefix = e.JUPYTERHUB_SERVICE_PREFIX ?? defaults.prefix ?? `/services/${name}/`;
  const baseUrl = e.JUPYTERHUB_BASE_URL ?? '/';

  let hub: ServiceSettings['hub'] = null;
  if (e.JUPYTERHUB_API_URL || e.JUPYTERHUB_API_TOKEN) {
    if (!e.JUPYTERHUB_API_URL) issues.push('JUPYTERHUB_API_URL: is required when JUPYTERHUB_API_TOKEN is set');
    if (!e.JUPYTERHUB_API_TOKEN) issues.push('JUPYTERHUB_API_TOKEN: is required when JUPYTERHUB_API_URL is set');
    if (e.JUPYTERHUB_API_URL && e.JUPYTERHUB_API_TOKEN) {
      hub = { apiUrl: e.JUPYTERHUB_API_URL, token: e.JUPYTERHUB_API_TOKEN, timeoutMs: (e.HUBSIDE_HUB_TIMEOUT ?? 10) * 1000 };
    }
  }

  let oauth: ServiceSettings['oauth'] = null;
  if (e.JUPYTERHUB_CLIENT_ID && hub) {
    const hubPrefix = `${baseUrl}hub/`;
    const authorizePath = `${hubPrefix}api/oauth2/authorize`;
    oauth = {
      clientId: e.JUPYTERHUB_CLIENT_ID,
      redirectUri: e.JUPYTERHUB_OAUTH_CALLBACK_URL ?? `${prefix}oauth_callback`,
      authorizeUrl: e.JUPYTERHUB_HOST ? `${e.JUPYTERHUB_HOST.replace(/\/+$/, '')}${authorizePath}` : authorizePath,
    };
  }

  if (issues.length > 0) throw new ConfigError('environment', issues);

  return {
    name,
    prefix,
    host,
    port,
    hub,
    baseUrl,
    oauth,
    accessScopes: e.JUPYTERHUB_OAUTH_ACCESS_SCOPES ? (JSON.parse(e.JUPYTERHUB_OAUTH_ACCESS_SCOPES) as string[]) : undefined,
    authCacheTtlMs: (e.HUBSIDE_AUTH_CACHE_TTL ?? 300) * 1000,
    cookieSecrets: e.HUBSIDE_COOKIE_SECRET?.split(',').map((s) => s.trim()).filter(Boolean),
    metricsPublic: e.HUBSIDE_METRICS_PUBLIC ?? false,
    trustProxy: e.HUBSIDE_TRUST_PROXY ?? 'loopback,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7',
    logLevel: e.HUBSIDE_LOG_LEVEL ?? 'info',
    databaseUrl: e.DATABASE_URL,
    dataDir: resolve(e.HUBSIDE_DATA_DIR ?? '.hubside/data'),
    configFile: e.HUBSIDE_CONFIG ?? defaults.configFile,
    protection: {
      userRequestsPerMinute: e.HUBSIDE_RATE_LIMIT_USER ?? DEFAULT_PROTECTION.userRequestsPerMinute,
      serviceRequestsPerMinute: e.HUBSIDE_RATE_LIMIT_SERVICE ?? DEFAULT_PROTECTION.serviceRequestsPerMinute,
      anonymousRequestsPerMinute: e.HUBSIDE_RATE_LIMIT_ANONYMOUS ?? DEFAULT_PROTECTION.anonymousRequestsPerMinute,
      maxEventLoopDelayMs: e.HUBSIDE_MAX_EVENT_LOOP_DELAY ?? DEFAULT_PROTECTION.maxEventLoopDelayMs,
      maxHeapFraction: e.HUBSIDE_MAX_HEAP_FRACTION ?? DEFAULT_PROTECTION.maxHeapFraction,
      requestTimeoutMs: e.HUBSIDE_REQUEST_TIMEOUT !== undefined ? e.HUBSIDE_REQUEST_TIMEOUT * 1000 : DEFAULT_PROTECTION.requestTimeoutMs,
    },
  };
}

/** Read a YAML file strictly: syntax errors name the line, duplicate keys are errors. */
export function readYamlFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [`(file): cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`]);
  }
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(file, doc.errors.map((err) => `(yaml): ${err.message.split('\n')[0]}`));
  }
  return doc.toJS({ maxAliasCount: 100 }) ?? {};
}

/** The community file's top level. Each service validates its own section with its own schema. */
export const communityFileSchema = z
  .object({
    community: communitySchema.optional(),
    'auth-bridge': z.unknown().optional(),
    'profile-api': z.unknown().optional(),
    'usage-collector': z.unknown().optional(),
    'data-gateway': z.unknown().optional(),
  })
  .strict();

/**
 * Copy a parsed config with every plain object made prototype-less. Config maps are looked up by
 * names users and groups choose (`budgets.groups[group]`), and JupyterHub allows a group called
 * `constructor` or `__proto__`: on a normal object that lookup finds Object.prototype's members.
 */
export function withoutPrototypes<T>(value: T): T {
  if (Array.isArray(value)) return value.map((v) => withoutPrototypes(v)) as T;
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const out = Object.create(null) as Record<string, unknown>;
    for (const [k, v] of Object.entries(value)) out[k] = withoutPrototypes(v);
    return out as T;
  }
  return value;
}

/**
 * Load and validate one service's section of the community file. Without a file the section
 * is `{}`, so each section schema must give every field a sensible default.
 */
export function loadSection<S extends z.ZodType>(file: string | undefined, service: ServiceName, schema: S): z.output<S> {
  if (!file) return withoutPrototypes(parseOrThrow(schema, {}, 'defaults', service));
  const doc = parseOrThrow(communityFileSchema, readYamlFile(file), file);
  return withoutPrototypes(parseOrThrow(schema, doc[service] ?? {}, file, service));
}

/** Load the shared `community:` section; a file without one (or no file) gets the defaults. */
export function loadCommunity(file: string | undefined): Community {
  if (!file) return withoutPrototypes(DEFAULT_COMMUNITY);
  const doc = parseOrThrow(communityFileSchema, readYamlFile(file), file);
  return withoutPrototypes(doc.community ?? DEFAULT_COMMUNITY);
}
