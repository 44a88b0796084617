// A small community for the spike: a default profile with two images, and a GPU profile for one group.
export const communityProfiles = [
  {
    display_name: 'Data science',
    slug: 'datascience',
    default: true,
    price_per_hour: 0.05,
    kubespawner_override: { cpu_limit: 2, mem_limit: '4G' },
    profile_options: {
      image: {
        display_name: 'Image',
        choices: {
          scipy: { display_name: 'SciPy', default: true, kubespawner_override: { image: 'quay.io/jupyter/scipy-notebook:2024-10-07' } },
          r: { display_name: 'R', kubespawner_override: { image: 'quay.io/jupyter/r-notebook:2024-10-07' } },
        },
      },
    },
  },
  { display_name: 'GPU', slug: 'gpu', allowed_groups: ['class-a'], price_per_hour: 0.9, kubespawner_override: { mem_limit: '16G' } },
];
