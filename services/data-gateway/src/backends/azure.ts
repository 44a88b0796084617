import { readFile } from 'node:fs/promises';
import type { TokenCredential } from '@azure/core-auth';
import { BlobServiceClient, ContainerSASPermissions, generateBlobSASQueryParameters } from '@azure/storage-blob';
import type { Backend, IssueRequest, Issued } from './types.js';

// SAS start a little in the past: the storage service and our clock may disagree.
const CLOCK_SKEW_MS = 5 * 60_000;

/**
 * Azure user-delegation SAS for a whole container. A flat-namespace container SAS cannot be
 * limited to a prefix, so the config only admits Azure datasets without one (see config.ts).
 * The gateway's own Entra ID access token is read from the file named by `tokenFileEnv` on
 * every call (workload identity and sidecars rotate that file).
 */
export function createAzureBackend(env: NodeJS.ProcessEnv): Backend {
  return {
    name: 'azure-sas',
    async issue(req: IssueRequest): Promise<Issued> {
      const az = req.dataset.azure!;
      const tokenFile = env[az.tokenFileEnv];
      if (!tokenFile) throw new Error(`${az.tokenFileEnv} is not set`);
      const credential: TokenCredential = {
        getToken: async () => ({ token: (await readFile(tokenFile, 'utf8')).trim(), expiresOnTimestamp: Date.now() + 60_000 }),
      };
      const service = new BlobServiceClient(az.accountUrl, credential, { retryOptions: { maxTries: 1 } });
      const startsOn = new Date(Date.now() - CLOCK_SKEW_MS);
      const expiresOn = new Date(Date.now() + req.durationSeconds * 1000);
      const key = await service.getUserDelegationKey(startsOn, expiresOn, { abortSignal: req.signal });
      const sas = generateBlobSASQueryParameters(
        {
          containerName: req.dataset.bucket,
          permissions: ContainerSASPermissions.parse(req.grant.access === 'read-write' ? 'racwdl' : 'rl'),
          startsOn,
          expiresOn,
          protocol: undefined,
          ...(az.sasVersion ? { version: az.sasVersion } : {}),
        },
        key,
        service.accountName,
      ).toString();
      const containerUrl = `${az.accountUrl.replace(/\/+$/, '')}/${req.dataset.bucket}`;
      return { provider: 'azure', credentials: { sasToken: sas, containerUrl, containerSasUrl: `${containerUrl}?${sas}` }, expiration: expiresOn };
    },
  };
}
