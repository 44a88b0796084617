import { createHash } from 'node:crypto';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { AssumeRoleCommand, STSClient } from '@aws-sdk/client-sts';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { DatasetConfig } from '../config.js';
import { escapeName } from '../escape.js';
import { PolicyTooLargeError } from './errors.js';
import { SESSION_POLICY_LIMIT, sessionPolicy } from './s3-policy.js';
import type { Backend, IssueRequest, Issued } from './types.js';

export { PolicyTooLargeError };

/** RoleSessionName allows [\w+=,.@-]{2,64}: a readable, escaped head plus a hash keeps it unique. */
export function roleSessionName(username: string): string {
  const hash = createHash('sha256').update(username).digest('hex').slice(0, 12);
  const head = escapeName(username).replace(/[^\w-]/g, '').slice(0, 40);
  return `hubside-${head}-${hash}`;
}

/** AWS STS AssumeRole, and the same code for S3-compatible STS (Ceph RGW, MinIO). */
export function createS3Backend(env: NodeJS.ProcessEnv): Backend {
  const clients = new Map<string, STSClient>();
  const stsFor = (dataset: DatasetConfig): STSClient => {
    const s3 = dataset.s3!;
    const endpoint = s3.stsEndpoint ?? (dataset.provider === 's3-compatible' ? dataset.endpoint : undefined);
    const key = `${endpoint ?? ''}|${dataset.region}|${s3.accessKeyIdEnv ?? ''}`;
    let client = clients.get(key);
    if (!client) {
      const credentials =
        s3.accessKeyIdEnv && s3.secretAccessKeyEnv
          ? { accessKeyId: env[s3.accessKeyIdEnv] ?? '', secretAccessKey: env[s3.secretAccessKeyEnv] ?? '' }
          : undefined;
      client = new STSClient({ region: dataset.region, maxAttempts: 2, ...(endpoint ? { endpoint } : {}), ...(credentials ? { credentials } : {}) });
      clients.set(key, client);
    }
    return client;
  };

  return {
    name: 's3-sts',
    async issue(req: IssueRequest): Promise<Issued> {
      const policy = sessionPolicy(req.dataset.bucket, req.grant);
      if (policy.length > SESSION_POLICY_LIMIT) {
        throw new PolicyTooLargeError(`the session policy for ${req.datasetName} would be ${policy.length} characters (limit ${SESSION_POLICY_LIMIT}); too many groups match`);
      }
      const out = await stsFor(req.dataset).send(
        new AssumeRoleCommand({
          RoleArn: req.dataset.s3!.roleArn,
          RoleSessionName: roleSessionName(req.username),
          DurationSeconds: req.durationSeconds,
          Policy: policy,
          ...(req.dataset.s3!.sessionTags
            ? {
                Tags: [
                  { Key: 'hubside-user', Value: escapeName(req.username).slice(0, 256) },
                  { Key: 'hubside-dataset', Value: req.datasetName },
                  { Key: 'hubside-access', Value: req.grant.access },
                ],
              }
            : {}),
        }),
        { abortSignal: req.signal },
      );
      const c = out.Credentials;
      if (!c?.AccessKeyId || !c.SecretAccessKey || !c.SessionToken || !c.Expiration) throw new Error('STS answered without credentials');
      return {
        provider: req.dataset.provider,
        credentials: { accessKeyId: c.AccessKeyId, secretAccessKey: c.SecretAccessKey, sessionToken: c.SessionToken },
        expiration: c.Expiration,
      };
    },
    async presign({ dataset, issued, key, method, expiresIn }) {
      const client = new S3Client({
        region: dataset.region,
        forcePathStyle: dataset.s3?.forcePathStyle ?? dataset.provider === 's3-compatible',
        ...(dataset.endpoint ? { endpoint: dataset.endpoint } : {}),
        credentials: {
          accessKeyId: issued.credentials.accessKeyId!,
          secretAccessKey: issued.credentials.secretAccessKey!,
          sessionToken: issued.credentials.sessionToken!,
        },
      });
      const command = method === 'GET' ? new GetObjectCommand({ Bucket: dataset.bucket, Key: key }) : new PutObjectCommand({ Bucket: dataset.bucket, Key: key });
      try {
        return await getSignedUrl(client, command, { expiresIn });
      } finally {
        client.destroy();
      }
    },
  };
}
