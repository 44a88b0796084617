import { DownscopedClient, GoogleAuth } from 'google-auth-library';
import type { Grant } from '../grants.js';
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

/** GCS downscoped tokens; not exercised against real GCS here (no GCS on this machine). */
export function createGcsBackend(env: NodeJS.ProcessEnv): Backend {
  return {
    name: 'gcs-downscoped',
    async issue(req: IssueRequest): Promise<Issued> {
      const keyFile = req.dataset.gcs?.keyFileEnv ? env[req.dataset.gcs.keyFileEnv] : undefined;
      const auth = new GoogleAuth({ scopes: ['https://www.googleapis.com/auth/cloud-platform'], ...(keyFile ? { keyFile } : {}) });
      const source = await auth.getClient();
      const client = new DownscopedClient({ authClient: source, credentialAccessBoundary: accessBoundary(req.dataset.bucket, req.grant) });
      const token = await client.getAccessToken();
      if (!token.token) throw new Error('no downscoped token');
      const expiry = token.res?.data?.expires_in ? Date.now() + Number(token.res.data.expires_in) * 1000 : Date.now() + 3600_000;
      return { provider: 'gcs', credentials: { accessToken: token.token }, expiration: new Date(expiry) };
    },
  };
}
