import { LONE_SURROGATE, hubName } from '@hubside/service-kit';
import { z } from 'zod';
import { templateProblem, templateUses } from './escape.js';

/** Free text that ends up in the database or in answers: no NUL, no lone surrogate. */
export const cleanText = (max: number) =>
  z
    .string()
    .max(max)
    .refine((v) => !v.includes('\0'), 'must not contain NUL characters')
    .refine((v) => !LONE_SURROGATE.test(v), 'must be valid Unicode (no lone surrogates)');

/** The same bounds everywhere a name or a list of them is saved. */
export const LIMITS = { datasets: 1000, groupsPerDataset: 1000 } as const;

const httpUrl = z.string().refine((v) => {
  try {
    const u = new URL(v);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}, 'must be an http(s) URL');

/** Names of environment variables that hold secrets, so no secret lives in the community file. */
const envName = z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'must be an environment variable name');

const s3Settings = z
  .object({
    /** The role the gateway assumes for every user; its own policy is the ceiling. */
    roleArn: cleanText(2048).pipe(z.string().min(1)),
    /** STS endpoint; defaults to the dataset's endpoint for s3-compatible, AWS's regional STS for s3. */
    stsEndpoint: httpUrl.optional(),
    /** Send session tags (AWS supports them; RGW accepts them). */
    sessionTags: z.boolean().default(true),
    /** Path-style addressing (RGW, MinIO). Default: true for s3-compatible. */
    forcePathStyle: z.boolean().optional(),
    /** Env variables with the gateway's own keys; without them the AWS default chain is used. */
    accessKeyIdEnv: envName.optional(),
    secretAccessKeyEnv: envName.optional(),
  })
  .strict();

const gcsSettings = z
  .object({
    /** Env variable with a path to a service-account key file; default: Application Default Credentials. */
    keyFileEnv: envName.optional(),
  })
  .strict();

const azureSettings = z
  .object({
    /** https://<account>.blob.core.windows.net (or Azurite's https URL). */
    accountUrl: httpUrl,
    /** Env variable naming a file with the gateway's Entra ID access token for storage. */
    tokenFileEnv: envName,
    /** Pin the SAS service version (Azurite 3.35 verifies up to 2021-10-04-style SAS). */
    sasVersion: z.string().regex(/^\d{4}-\d{2}-\d{2}$/).optional(),
  })
  .strict();

const datasetName = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'dataset names are lower-case letters, digits, _ and -');

export const datasetSchema = z
  .object({
    provider: z.enum(['s3', 's3-compatible', 'gcs', 'azure']),
    /** Bucket (S3, GCS) or container (Azure). */
    bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be a valid bucket or container name'),
    endpoint: httpUrl.optional(),
    region: cleanText(64).pipe(z.string().min(1)).default('us-east-1'),
    /** e.g. `home/{username}/`, `groups/{group}/`, `public/`, or '' for the whole bucket. */
    prefix: z.string().superRefine((v, ctx) => {
      const problem = templateProblem(v);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
    access: z.enum(['read', 'read-write']).default('read'),
    /** Groups whose members may use the dataset; empty means every user. */
    groups: z.array(hubName).max(LIMITS.groupsPerDataset).default([]),
    maxLifetimeSeconds: z.number().int().min(1).max(43_200).default(3600),
    description: cleanText(2000).optional(),
    /** Variable name in `api/env`, e.g. SCRATCH_BUCKET. */
    envVar: envName.optional(),
    s3: s3Settings.optional(),
    gcs: gcsSettings.optional(),
    azure: azureSettings.optional(),
  })
  .strict()
  .superRefine((d, ctx) => {
    if ((d.provider === 's3' || d.provider === 's3-compatible') && !d.s3) {
      ctx.addIssue({ code: 'custom', path: ['s3'], message: `is required for provider ${d.provider} (at least roleArn)` });
    }
    if (d.provider === 's3-compatible' && !d.endpoint) ctx.addIssue({ code: 'custom', path: ['endpoint'], message: 'is required for s3-compatible' });
    if (d.provider === 'azure' && !d.azure) ctx.addIssue({ code: 'custom', path: ['azure'], message: 'is required for provider azure' });
    if (d.provider === 'azure' && d.prefix !== '') {
      // A container SAS would cover the whole container: refusing is the only way not to widen the grant.
      ctx.addIssue({ code: 'custom', path: ['prefix'], message: 'must be "" for azure: a SAS on a flat-namespace container cannot be limited to a prefix' });
    }
    if (templateUses(d.prefix) === 'group' && d.groups.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['groups'], message: 'must list the groups when the prefix uses {group}' });
    }
    if (d.s3 && (d.s3.accessKeyIdEnv === undefined) !== (d.s3.secretAccessKeyEnv === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['s3'], message: 'accessKeyIdEnv and secretAccessKeyEnv go together' });
    }
  });
export type DatasetConfig = z.output<typeof datasetSchema>;

export const configSchema = z
  .object({
    /** The region the hub runs in; datasets elsewhere carry an egress warning. */
    hubRegion: cleanText(64).pipe(z.string().min(1)).optional(),
    /** Seconds to wait for a storage backend before answering 502. */
    backendTimeoutSeconds: z.number().positive().max(120).default(10),
    /** Cached credentials are reused until this fraction of their lifetime has passed. */
    cacheRefreshFraction: z.number().gt(0).lt(1).default(0.8),
    /**
     * Seconds a user's group membership is trusted for group datasets (those with `groups`)
     * before the gateway asks the hub again; 0 asks at every request. The service's own token
     * cache (HUBSIDE_AUTH_CACHE_TTL, 300 s) still applies to everything else.
     */
    groupCheckSeconds: z.number().int().min(0).max(300).default(30),
    /**
     * The longest credentials for a group dataset live (each dataset's `maxLifetimeSeconds` is
     * capped by it): what was handed out cannot be taken back, so this bounds how long someone
     * who left the group keeps access. AWS STS needs at least 900.
     */
    groupLifetimeSeconds: z.number().int().min(1).max(43_200).default(900),
    /** The URL users' servers reach the gateway at, for `api/env` (default: derived from the request). */
    publicUrl: httpUrl.optional(),
    datasets: z
      .record(datasetName, datasetSchema)
      .refine((d) => Object.keys(d).length <= LIMITS.datasets, `must define at most ${LIMITS.datasets} datasets`)
      .default({}),
    /** Repeat deliveries of cached credentials are counted and written in batches (see audit-log.ts). */
    audit: z
      .object({
        /** Seconds between batch writes; 0 writes every delivery before answering it. */
        flushSeconds: z
          .number()
          .min(0)
          .max(60)
          .refine((v) => v === 0 || v >= 0.05, 'must be 0 (write every delivery) or at least 0.05')
          .default(1),
        /** Pending (credential, client) batches that force a write before a new one is started. */
        maxPendingBatches: z.number().int().min(1).max(100_000).default(1000),
      })
      .strict()
      .prefault({}),
  })
  .strict();
export type DataGatewayConfig = z.output<typeof configSchema>;
