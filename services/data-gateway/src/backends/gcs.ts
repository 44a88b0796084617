import { DownscopedClient, GoogleAuth } from 'google-auth-library';
import type { AuthClient } from 'google-auth-library';
import type { Grant } from '../grants.js';
import { PolicyTooLargeError } from './errors.js';
import type { Backend, IssueRequest, Issued } from './types.js';

/** The Credential Access Boundary shape google-auth-library's DownscopedClient takes. */
export interface CredentialAccessBoundary {
  accessBoundary: {
    accessBoundaryRules: {
      availableResource: string;
      availablePermissions: string[];
      availabilityCondition?: { title?: string; expression: string };
    }[];
  };
}

/** DownscopedClient refuses a boundary with more rules (one rule per granted prefix). */
export const MAX_BOUNDARY_RULES = 10;

/** Without an expiry from STS or the source token, assume little is left, so the cache refreshes soon. */
const UNKNOWN_EXPIRY_MS = 300_000;

/** CEL string literal: the prefixes are escaped names over [A-Za-z0-9_~/.-], but quote anyway. */
const celString = (s: string) => `'${s.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;

/**
 * One rule per prefix: objects under `projects/_/buckets/B/objects/<prefix>` plus listing
 * restricted to that prefix. Read is objectViewer; read-write adds objectCreator and
 * objectAdmin's delete through `inRole:roles/storage.objectUser`.
 */
export function accessBoundary(bucket: string, grant: Grant): CredentialAccessBoundary {
  const role = grant.access === 'read-write' ? 'inRole:roles/storage.objectUser' : 'inRole:roles/storage.objectViewer';
  return {
    accessBoundary: {
      accessBoundaryRules: grant.prefixes.map((prefix) => ({
        availableResource: `//storage.googleapis.com/projects/_/buckets/${bucket}`,
        availablePermissions: [role],
        ...(prefix === ''
          ? {}
          : {
              availabilityCondition: {
                title: `hubside ${grant.dataset}`,
                expression:
                  `resource.name.startsWith(${celString(`projects/_/buckets/${bucket}/objects/${prefix}`)}) || ` +
                  `api.getAttribute('storage.googleapis.com/objectListPrefix', '').startsWith(${celString(prefix)})`,
              },
            }),
      })),
    },
  };
}

/**
 * GCS downscoped tokens; not exercised against real GCS here (no GCS on this machine).
 * A downscoped token lives as long as the gateway's own (source) token, at most an hour; GCS
 * cannot make it shorter, so `maxLifetimeSeconds` does not shorten it either. The source client
 * is kept per key file, so google-auth-library reuses its token and an issuance costs one STS
 * exchange.
 */
export function createGcsBackend(env: NodeJS.ProcessEnv): Backend {
  const sources = new Map<string, Promise<AuthClient>>();
  const sourceFor = (keyFile: string | undefined): Promise<AuthClient> => {
    let source = sources.get(keyFile ?? '');
    if (!source) {
      source = new GoogleAuth({ scopes: ['https://www.googleapis.com/auth/cloud-platform'], ...(keyFile ? { keyFile } : {}) }).getClient();
      // A failure (no credentials yet) is not kept: the next issuance tries again.
      source.catch(() => sources.delete(keyFile ?? ''));
      sources.set(keyFile ?? '', source);
    }
    return source;
  };
  return {
    name: 'gcs-downscoped',
    async issue(req: IssueRequest): Promise<Issued> {
      if (req.grant.prefixes.length > MAX_BOUNDARY_RULES) {
        throw new PolicyTooLargeError(
          `the access boundary for ${req.datasetName} would need ${req.grant.prefixes.length} rules (limit ${MAX_BOUNDARY_RULES}); too many groups match`,
        );
      }
      const keyFile = req.dataset.gcs?.keyFileEnv ? env[req.dataset.gcs.keyFileEnv] : undefined;
      const client = new DownscopedClient({ authClient: await sourceFor(keyFile), credentialAccessBoundary: accessBoundary(req.dataset.bucket, req.grant) });
      const token = await client.getAccessToken();
      if (!token.token) throw new Error('no downscoped token');
      // expirationTime is STS's expires_in, else the source token's expiry (the library's rule).
      const expiry = token.expirationTime ?? Date.now() + UNKNOWN_EXPIRY_MS;
      return { provider: 'gcs', credentials: { accessToken: token.token }, expiration: new Date(expiry) };
    },
  };
}
