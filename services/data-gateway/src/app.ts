import { DEFAULT_COMMUNITY, createError, createServiceApp, fieldKey, isCommunityAdmin, schemaFor } from '@hubside/service-kit';
import type { BuildOptions, Community, CommunityProvides, CommunityReference, ServiceDefinition } from '@hubside/service-kit';
import { IdentityCache, InvalidTokenError, tokenFromHeader } from '@hubside/hub-client';
import type { HubIdentity } from '@hubside/hub-client';
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Kysely } from 'kysely';
import { Counter, Histogram } from 'prom-client';
import { z } from 'zod';
import { createAzureBackend } from './backends/azure.js';
import { createGcsBackend } from './backends/gcs.js';
import { PolicyTooLargeError } from './backends/errors.js';
import { createS3Backend } from './backends/s3.js';
import type { Backend, Issued } from './backends/types.js';
import { cleanText, configSchema } from './config.js';
import type { DataGatewayConfig, DatasetConfig } from './config.js';
import { resolveGrant } from './grants.js';
import type { Access, Grant } from './grants.js';
import { createAuditLog } from './audit-log.js';
import type { AuditLog } from './audit-log.js';
import { issuancesRepository } from './issuances.repository.js';
import type { GatewayDB } from './issuances.table.js';
import { BackendError, createIssuer } from './issuer.js';
import { migrations } from './migrations/index.js';

export { configSchema };
export type { DataGatewayConfig };

const UnknownDatasetError = createError('HUBSIDE_GATEWAY_ERR_UNKNOWN_DATASET', 'dataset: no dataset named %s', 404);
const DatasetForbiddenError = createError('HUBSIDE_GATEWAY_ERR_FORBIDDEN', '%s', 403);
const BackendFailedError = createError('HUBSIDE_GATEWAY_ERR_BACKEND', '%s', 502);
const PolicyError = createError('HUBSIDE_GATEWAY_ERR_POLICY_TOO_LARGE', '%s', 422);
const UnsupportedError = createError('HUBSIDE_GATEWAY_ERR_UNSUPPORTED', '%s', 400);
const AdminOnlyError = createError('HUBSIDE_GATEWAY_ERR_ADMIN_ONLY', 'the issuance log is for hub admins and community admins', 403);

export interface DataGatewayOptions {
  prefix: string;
  config: DataGatewayConfig;
  /** Where backends read secrets named in the config (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Replace a provider's backend (benchmarks count calls this way). */
  backends?: Partial<Record<DatasetConfig['provider'], Backend>>;
  /** The community: its admins see the issuance audit besides the hub's admins. */
  community?: Community;
}

const accessSchema = z.enum(['read', 'read-write']);
const datasetParam = z.string().min(1).max(63);

const credentialsResponse = z.object({
  dataset: z.string(),
  provider: z.string(),
  access: accessSchema,
  expiration: z.string(),
  region: z.string(),
  endpoint: z.string().nullable(),
  bucket: z.string(),
  prefix: z.string(),
  prefixes: z.array(z.string()),
  credentials: z.record(z.string(), z.string()),
});

const S3_PROVIDERS = new Set(['s3', 's3-compatible']);

function defaultEndpoint(d: DatasetConfig): string | null {
  if (d.endpoint) return d.endpoint;
  if (d.provider === 's3') return `https://s3.${d.region}.amazonaws.com`;
  if (d.provider === 'gcs') return 'https://storage.googleapis.com';
  return d.azure?.accountUrl ?? null;
}

const gatewayPlugin: FastifyPluginAsync<DataGatewayOptions> = async (fastify, opts) => {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { config } = opts;
  const community = opts.community ?? DEFAULT_COMMUNITY;
  const p = opts.prefix;
  const env = opts.env ?? process.env;
  const s3 = opts.backends?.s3 ?? createS3Backend(env);
  const backends: Partial<Record<DatasetConfig['provider'], Backend>> = {
    s3,
    's3-compatible': opts.backends?.['s3-compatible'] ?? s3,
    gcs: opts.backends?.gcs ?? createGcsBackend(env),
    azure: opts.backends?.azure ?? createAzureBackend(env),
  };
  const registry = fastify.kit.metrics.registry;
  // Labels are backend and dataset only: usernames never become label values.
  const issuances = new Counter({
    name: 'hubside_data_gateway_issuances_total',
    help: 'Credentials and presigned URLs handed out, by backend, dataset and whether the cache answered',
    labelNames: ['backend', 'dataset', 'kind', 'source'] as const,
    registers: [registry],
  });
  const backendCalls = new Counter({
    name: 'hubside_data_gateway_backend_calls_total',
    help: 'Calls to storage backends (STS, GCS STS, Azure), by outcome',
    labelNames: ['backend', 'dataset', 'outcome'] as const,
    registers: [registry],
  });
  const backendSeconds = new Histogram({
    name: 'hubside_data_gateway_backend_seconds',
    help: 'Time a storage backend took to issue credentials',
    labelNames: ['backend'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const refusals = new Counter({
    name: 'hubside_data_gateway_refusals_total',
    help: 'Requests refused by policy before any backend call',
    labelNames: ['dataset'] as const,
    registers: [registry],
  });
  const issuer = createIssuer({
    timeoutMs: config.backendTimeoutSeconds * 1000,
    refreshFraction: config.cacheRefreshFraction,
    onBackendCall: (backend, dataset, ok, seconds) => {
      backendCalls.inc({ backend, dataset, outcome: ok ? 'ok' : 'error' });
      backendSeconds.observe({ backend }, seconds);
    },
  });
  const audit = issuancesRepository(fastify.db as Kysely<GatewayDB>);
  const auditLog = createAuditLog(audit, {
    flushIntervalMs: config.audit.flushSeconds * 1000,
    maxPending: config.audit.maxPendingBatches,
    onFlushError: (err, rows) => fastify.log.error({ err, rows }, 'audit: could not write repeat deliveries; they stay pending'),
  });
  // onClose runs after the server stopped taking requests and before the database closes.
  fastify.addHook('onClose', async () => auditLog.close());
  fastify.decorate('gateway', { issuer, auditLog });

  // Group datasets check membership against a cache of its own, much shorter than the
  // service's token cache: someone taken out of a group stops getting that group's data within
  // groupCheckSeconds, not the 300 s a token is otherwise trusted.
  const hubClient = fastify.kit.hub;
  const groupCheck = hubClient
    ? new IdentityCache({ resolve: (token) => hubClient.identify(token), ttlMs: config.groupCheckSeconds * 1000, failureTtlMs: 0 })
    : null;
  const anyGroupDataset = Object.values(config.datasets).some((d) => d.groups.length > 0);

  /** The caller, with groups no older than groupCheckSeconds when `fresh` (group datasets). */
  async function caller(request: FastifyRequest, fresh: boolean): Promise<HubIdentity> {
    const user = request.hubUser!;
    if (!fresh || !groupCheck) return user;
    const token = tokenFromHeader(request.headers.authorization);
    if (token === undefined) return user;
    const current = await groupCheck.get(token);
    // The token died since the service's cache last saw it.
    if (!current) throw new InvalidTokenError();
    return current;
  }

  const lifetimeOf = (d: DatasetConfig) => (d.groups.length > 0 ? Math.min(d.maxLifetimeSeconds, config.groupLifetimeSeconds) : d.maxLifetimeSeconds);

  function dataset(name: string): DatasetConfig {
    const d = Object.hasOwn(config.datasets, name) ? config.datasets[name] : undefined;
    if (!d) throw new UnknownDatasetError(JSON.stringify(name.slice(0, 63)));
    return d;
  }

  async function grantFor(request: FastifyRequest, name: string, access: Access): Promise<{ d: DatasetConfig; grant: Grant; user: HubIdentity }> {
    const d = dataset(name);
    const user = await caller(request, d.groups.length > 0);
    const grant = resolveGrant(name, d, user, access);
    if ('refused' in grant) {
      refusals.inc({ dataset: name });
      // What was cached under a grant that no longer holds is never handed out again.
      issuer.drop(user.name, name);
      throw new DatasetForbiddenError(grant.refused);
    }
    return { d, grant, user };
  }

  async function obtain(request: FastifyRequest, name: string, access: Access, kind: 'credentials' | 'presign') {
    const { d, grant, user } = await grantFor(request, name, access);
    const backend = backends[d.provider];
    if (!backend) throw new UnsupportedError(`dataset ${name}: provider ${d.provider} is not available in this build`);
    const entryFor = (issued: Issued, credentialId: string) => ({
      username: user.name,
      dataset: name,
      access,
      kind,
      provider: d.provider,
      expiresAt: issued.expiration,
      clientIp: request.ip ?? null,
      credentialId,
    });
    let result: { issued: Issued; cached: boolean; credentialId: string };
    try {
      // A new issuance is durable before anyone gets it, including requests that joined it.
      result = await issuer.get(backend, { datasetName: name, dataset: d, grant, username: user.name, durationSeconds: lifetimeOf(d) }, (issued, id) =>
        auditLog.issued(entryFor(issued, id)),
      );
    } catch (err) {
      if (err instanceof PolicyTooLargeError) throw new PolicyError(err.message);
      if (err instanceof BackendError) {
        request.log.warn({ backend: err.backend, dataset: name, reason: err.message }, 'storage backend failed');
        throw new BackendFailedError(`storage backend ${err.backend} failed for dataset ${name}: ${err.message}`);
      }
      throw err;
    }
    issuances.inc({ backend: backend.name, dataset: name, kind, source: result.cached ? 'cache' : 'backend' });
    // New credentials (recorded above) and presigned URLs are durable before they are answered;
    // handing out cached credentials again is counted and written in batches.
    if (result.cached) {
      const entry = entryFor(result.issued, result.credentialId);
      if (kind === 'presign') await auditLog.issued(entry, true);
      else await auditLog.delivered(entry);
    }
    return { d, grant, backend, ...result };
  }

  app.post(
    `${p}api/credentials`,
    {
      schema: {
        body: z.object({ dataset: datasetParam, access: accessSchema.default('read') }).strict(),
        response: { 200: credentialsResponse },
      },
    },
    async (request) => {
      const { dataset: name, access } = request.body;
      const { d, grant, issued } = await obtain(request, name, access, 'credentials');
      return {
        dataset: name,
        provider: d.provider,
        access,
        expiration: issued.expiration.toISOString(),
        region: d.region,
        endpoint: defaultEndpoint(d),
        bucket: d.bucket,
        prefix: grant.prefixes[0] ?? '',
        prefixes: grant.prefixes,
        credentials: issued.credentials,
      };
    },
  );

  // The container-credentials provider format (AWS_CONTAINER_CREDENTIALS_FULL_URI), which
  // botocore and the AWS SDKs refresh by themselves before `Expiration`.
  app.get(
    `${p}api/credentials/:dataset/aws`,
    {
      schema: {
        params: z.object({ dataset: datasetParam }),
        querystring: z.object({ access: accessSchema.optional() }).strict(),
        response: { 200: z.object({ AccessKeyId: z.string(), SecretAccessKey: z.string(), Token: z.string(), Expiration: z.string() }) },
      },
    },
    async (request, reply) => {
      const name = request.params.dataset;
      const d = dataset(name);
      if (!S3_PROVIDERS.has(d.provider)) throw new UnsupportedError(`dataset ${name} is ${d.provider}, not S3: AWS credentials do not apply`);
      const access = request.query.access ?? d.access;
      const { issued } = await obtain(request, name, access, 'credentials');
      reply.header('cache-control', 'no-store');
      return {
        AccessKeyId: issued.credentials.accessKeyId!,
        SecretAccessKey: issued.credentials.secretAccessKey!,
        Token: issued.credentials.sessionToken!,
        Expiration: issued.expiration.toISOString(),
      };
    },
  );

  app.post(
    `${p}api/presign`,
    {
      schema: {
        body: z
          .object({
            dataset: datasetParam,
            key: z.string().min(1).max(1024).refine((k) => !/[\u0000-\u001f\u007f]/.test(k), 'must not contain control characters'),
            method: z.enum(['GET', 'PUT']).default('GET'),
            expiresIn: z.number().int().min(1).max(43_200).optional(),
          })
          .strict(),
        response: { 200: z.object({ url: z.string(), method: z.string(), expiration: z.string() }) },
      },
    },
    async (request) => {
      const { dataset: name, key, method } = request.body;
      const d = dataset(name);
      if (!S3_PROVIDERS.has(d.provider)) throw new UnsupportedError(`presigned URLs are for S3 datasets; ${name} is ${d.provider}`);
      const access: Access = method === 'PUT' ? 'read-write' : d.access === 'read-write' ? 'read-write' : 'read';
      const { grant } = await grantFor(request, name, access);
      // Inside the policy: the key must sit under a granted prefix, and the URL can't outlive the session.
      if (!grant.prefixes.some((p) => key.startsWith(p))) {
        refusals.inc({ dataset: name });
        throw new DatasetForbiddenError(`key: must start with ${grant.prefixes.join(' or ')}`);
      }
      const { backend, issued } = await obtain(request, name, access, 'presign');
      const remaining = Math.floor((issued.expiration.getTime() - Date.now()) / 1000);
      const expiresIn = Math.max(1, Math.min(request.body.expiresIn ?? remaining, remaining));
      const url = await backend.presign!({ dataset: d, issued, key, method, expiresIn });
      return { url, method, expiration: new Date(Date.now() + expiresIn * 1000).toISOString() };
    },
  );

  app.get(`${p}api/datasets`, async (request) => {
    const user = await caller(request, anyGroupDataset);
    const hubRegion = config.hubRegion ?? null;
    const datasets = Object.entries(config.datasets).flatMap(([name, d]) => {
      const grant = resolveGrant(name, d, user, 'read');
      if ('refused' in grant) return [];
      const sameRegion = hubRegion === null ? null : d.region === hubRegion;
      return [
        {
          name,
          description: d.description ?? null,
          provider: d.provider,
          bucket: d.bucket,
          prefixes: grant.prefixes,
          access: d.access,
          region: d.region,
          sameRegion,
          maxLifetimeSeconds: lifetimeOf(d),
          ...(sameRegion === false
            ? { warning: `${name} is in ${d.region} and this hub runs in ${hubRegion}: reading it transfers data across regions, which is slower and may cost egress.` }
            : {}),
        },
      ];
    });
    return { hubRegion, datasets };
  });

  app.get(`${p}api/env`, async (request) => {
    const user = await caller(request, anyGroupDataset);
    const base = config.publicUrl ?? `${request.protocol}://${request.host}${opts.prefix}`;
    const vars: Record<string, string> = {};
    let firstS3: string | undefined;
    for (const [name, d] of Object.entries(config.datasets)) {
      const grant = resolveGrant(name, d, user, 'read');
      if ('refused' in grant) continue;
      const scheme = S3_PROVIDERS.has(d.provider) ? 's3' : d.provider === 'gcs' ? 'gs' : 'az';
      const varName = d.envVar ?? `HUBSIDE_DATASET_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
      vars[varName] = `${scheme}://${d.bucket}/${grant.prefixes[0] ?? ''}`;
      if (S3_PROVIDERS.has(d.provider) && firstS3 === undefined) {
        firstS3 = name;
        if (d.endpoint) vars.AWS_ENDPOINT_URL_S3 = d.endpoint;
        vars.AWS_DEFAULT_REGION = d.region;
      }
    }
    if (firstS3) {
      vars.HUBSIDE_GATEWAY_URL = base;
      // credential_process refreshes through the CLI; the profile names the default dataset.
      vars.HUBSIDE_CREDS_DATASET = firstS3;
      // A start-up hook writes this to ~/.aws/config (see hub/data_gateway_env.py).
      vars.HUBSIDE_AWS_CONFIG = `[default]\ncredential_process = hubside-creds --dataset ${firstS3}\n`;
    }
    return { env: vars };
  });

  app.get(
    `${p}api/admin/issuances`,
    {
      schema: {
        querystring: z
          .object({
            user: cleanText(255).optional(),
            dataset: cleanText(63).optional(),
            kind: z.enum(['credentials', 'presign']).optional(),
            credential: z.uuid().optional(),
            since: z.iso.datetime({ offset: true }).optional(),
            until: z.iso.datetime({ offset: true }).optional(),
            before: z.string().regex(/^\d{1,18}$/).optional(),
            limit: z.coerce.number().int().min(1).max(1000).default(100),
          })
          .strict(),
      },
    },
    async (request) => {
      const user = request.hubUser!;
      if (!(user.admin || (user.kind === 'user' && isCommunityAdmin(community, user)))) throw new AdminOnlyError();
      const q = request.query;
      // Read what was answered, including repeat deliveries still counted in memory.
      await auditLog.flush();
      const rows = await audit.list({
        limit: q.limit,
        ...(q.user !== undefined ? { user: q.user } : {}),
        ...(q.dataset !== undefined ? { dataset: q.dataset } : {}),
        ...(q.kind !== undefined ? { kind: q.kind } : {}),
        ...(q.credential !== undefined ? { credentialId: q.credential } : {}),
        ...(q.since ? { since: new Date(q.since) } : {}),
        ...(q.until ? { until: new Date(q.until) } : {}),
        ...(q.before ? { before: q.before } : {}),
      });
      const items = rows.map((r) => ({
        id: String(r.id),
        issuedAt: new Date(r.issued_at).toISOString(),
        user: r.username,
        dataset: r.dataset,
        access: r.access,
        kind: r.kind,
        provider: r.provider,
        cached: r.cached,
        deliveries: r.deliveries,
        lastAt: r.last_at === null ? null : new Date(r.last_at).toISOString(),
        expiresAt: new Date(r.expires_at).toISOString(),
        clientIp: r.client_ip,
        credentialId: r.credential_id,
      }));
      return { items, next: items.length === q.limit ? items.at(-1)!.id : null };
    },
  );
};

declare module 'fastify' {
  interface FastifyInstance {
    gateway: { issuer: ReturnType<typeof createIssuer>; auditLog: AuditLog };
  }
}

/** The data-gateway routes, as a Fastify plugin without side effects. */
const dataGateway = fp(gatewayPlugin, { name: 'data-gateway' });
export default dataGateway;

export async function buildApp(
  opts: BuildOptions<DataGatewayConfig>,
  extra: Pick<DataGatewayOptions, 'env' | 'backends'> = {},
): Promise<FastifyInstance> {
  const app = await createServiceApp({ ...opts, database: { schema: schemaFor('data-gateway'), migrations } });
  await app.register(dataGateway, { prefix: opts.settings.prefix, config: opts.config, ...(opts.community ? { community: opts.community } : {}), ...extra });
  return app;
}

/** Every group the section names, with where (`data-gateway.datasets.<name>.groups[i]`), for check-config. */
export function references(config: DataGatewayConfig): CommunityReference[] {
  return Object.entries(config.datasets).flatMap(([name, d]) =>
    d.groups.map((group, i) => ({ kind: 'group' as const, name: group, field: `data-gateway.datasets${fieldKey(name)}.groups[${i}]` })),
  );
}

/** What other sections may name: the datasets. */
export function provides(config: DataGatewayConfig): CommunityProvides {
  return { datasets: Object.keys(config.datasets) };
}

export const service: ServiceDefinition<typeof configSchema> = {
  name: 'data-gateway',
  configSchema,
  migrations,
  build: (opts) => buildApp(opts),
  references,
  provides,
};
