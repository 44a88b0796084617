import { communitySchema, resolveSettings } from '@hubside/service-kit';
import type { FastifyInstance } from 'fastify';
import { buildApp, configSchema } from '../src/app.js';

/** The "Done when" community: images with an unlisted image, memory 2–16 GB, and a GPU profile for gpu-users. */
export const communityProfiles = [
  {
    display_name: 'Data science',
    slug: 'datascience',
    description: 'Python, R and Julia',
    default: true,
    price_per_hour: 0.05,
    kubespawner_override: { cpu_guarantee: 0.5, cpu_limit: 2, environment: { HUBSIDE_PROFILE: 'datascience' } },
    profile_options: {
      image: {
        display_name: 'Image',
        choices: {
          scipy: { display_name: 'SciPy', description: 'jupyter/scipy-notebook', default: true, kubespawner_override: { image: 'quay.io/jupyter/scipy-notebook:2024-10-07' } },
          r: { display_name: 'R', kubespawner_override: { image: 'quay.io/jupyter/r-notebook:2024-10-07' } },
        },
        unlisted_choice: {
          enabled: true,
          display_name: 'Your own image',
          validation_regex: '^.+:.+$',
          validation_message: 'an image name with a tag, like repo/image:tag',
          kubespawner_override: { image: '{value}' },
        },
      },
      memory: {
        display_name: 'Memory',
        choices: {
          '2G': { display_name: '2 GB', default: true, kubespawner_override: { mem_guarantee: '2G', mem_limit: '2G', node_selector: { 'node.kubernetes.io/instance-type': 'n2-standard-2' } } },
          '4G': { display_name: '4 GB', kubespawner_override: { mem_guarantee: '4G', mem_limit: '4G', node_selector: { 'node.kubernetes.io/instance-type': 'n2-standard-4' } } },
          '8G': { display_name: '8 GB', price_per_hour: 0.1, kubespawner_override: { mem_guarantee: '8G', mem_limit: '8G', node_selector: { 'node.kubernetes.io/instance-type': 'n2-standard-8' } } },
          '16G': { display_name: '16 GB', price_per_hour: 0.3, allowed_groups: ['Instructors'], kubespawner_override: { mem_guarantee: '16G', mem_limit: '16G', node_selector: { 'node.kubernetes.io/instance-type': 'n2-highmem-4' } } },
        },
      },
    },
  },
  {
    display_name: 'GPU',
    slug: 'gpu',
    description: 'One NVIDIA T4',
    allowed_groups: ['gpu-users'],
    price_per_hour: 0.9,
    kubespawner_override: {
      image: 'quay.io/jupyter/pytorch-notebook:cuda12-2024-10-07',
      mem_limit: '16G',
      extra_resource_limits: { 'nvidia.com/gpu': '1' },
      extra_resource_guarantees: { 'nvidia.com/gpu': '1' },
      node_selector: { 'cloud.google.com/gke-accelerator': 'nvidia-tesla-t4' },
    },
  },
];

export async function buildTestApp(opts: {
  dataDir: string;
  databaseUrl?: string | undefined;
  hub?: { apiUrl: string; token: string };
  config?: Record<string, unknown>;
  env?: Record<string, string>;
  /** The community file's `community:` section (raw; parsed here). */
  community?: Record<string, unknown>;
}): Promise<FastifyInstance> {
  const settings = resolveSettings('profile-api', {
    HUBSIDE_DATA_DIR: opts.dataDir,
    ...(opts.databaseUrl ? { DATABASE_URL: opts.databaseUrl } : {}),
    ...(opts.hub ? { JUPYTERHUB_API_URL: opts.hub.apiUrl, JUPYTERHUB_API_TOKEN: opts.hub.token } : {}),
    ...opts.env,
  });
  const config = configSchema.parse(opts.config ?? { profiles: communityProfiles, adminGroups: ['profile-editors'] });
  const community = opts.community ? communitySchema.parse(opts.community) : undefined;
  return buildApp({ settings, config, logger: false, defaultMetrics: false, ...(community ? { community } : {}) });
}
