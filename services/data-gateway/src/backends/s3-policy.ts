import type { Grant } from '../grants.js';

/** AWS refuses inline session policies over 2,048 characters (before packing). */
export const SESSION_POLICY_LIMIT = 2048;

const READ = ['s3:GetObject', 's3:GetObjectVersion'];
const WRITE = ['s3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'];

/**
 * The inline session policy for one grant. Prefixes come from `escapeName` and the validated
 * template, so they hold no `*`, `?` or `$`; the only wildcard is the one appended here, after
 * the trailing `/`.
 */
export function sessionPolicy(bucket: string, grant: Grant): string {
  const whole = grant.prefixes.includes('');
  const objects = grant.prefixes.map((p) => `arn:aws:s3:::${bucket}/${p}*`);
  const list: Record<string, unknown> = { Effect: 'Allow', Action: ['s3:ListBucket'], Resource: [`arn:aws:s3:::${bucket}`] };
  if (!whole) list.Condition = { StringLike: { 's3:prefix': grant.prefixes.flatMap((p) => [p, `${p}*`]) } };
  const statements = [
    list,
    { Effect: 'Allow', Action: grant.access === 'read-write' ? [...READ, ...WRITE] : READ, Resource: objects },
  ];
  if (!whole) statements.push({ Effect: 'Allow', Action: ['s3:GetBucketLocation'], Resource: [`arn:aws:s3:::${bucket}`] });
  return JSON.stringify({ Version: '2012-10-17', Statement: statements });
}
