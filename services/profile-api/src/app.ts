import { DEFAULT_COMMUNITY, createServiceApp, fieldKey, schemaFor } from '@hubside/service-kit';
import type { BuildOptions, Community, CommunityProvides, CommunityReference, ServiceDefinition } from '@hubside/service-kit';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { migrations } from './migrations/index.js';
import { documentSchema, semanticProblems, slugify } from './profiles/schema.js';
import { profilesPlugin } from './routes/profiles.js';
import { spawnPagePlugin } from './routes/spawn-page.js';

/** This service's section of the community file. Every field has a default. */
export const configSchema = z
  .object({
    /** The first version of the profiles document (KubeSpawner `profile_list` plus our additions). Later versions live in the database. */
    profiles: documentSchema.default([]).superRefine((doc, ctx) => {
      for (const p of semanticProblems(doc)) ctx.addIssue({ code: 'custom', message: `${p.path}: ${p.message}` });
    }),
    /** Members of these hub groups may edit profiles, besides hub admins and `community.admins` (kept for older files; matched case-insensitively). */
    adminGroups: z.array(z.string().min(1)).default([]),
    /** Longest unlisted-choice value accepted; a bound on regex work. */
    unlistedMaxLength: z.number().int().min(1).max(4096).default(512),
    /** How long one validation_regex match may run before it is refused. */
    regexTimeoutMs: z.number().int().min(1).max(1000).default(50),
    /** How long a user's hub groups are reused for a service asking on their behalf. */
    groupsCacheSeconds: z.number().min(0).max(300).default(5),
  })
  .strict();
export type ProfileApiConfig = z.output<typeof configSchema>;

export interface ProfileApiOptions {
  /** The service prefix; not Fastify's `prefix` option, which would apply it a second time. */
  routePrefix: string;
  config: ProfileApiConfig;
  /** The shared `community:` section: its currency prices the spawn page and resolve; its admins edit profiles. */
  community?: Community;
}

/** The profile-api routes, as a Fastify plugin without side effects. */
const profileApi: FastifyPluginAsync<ProfileApiOptions> = async (app, opts) => {
  await app.register(profilesPlugin, {
    prefix: opts.routePrefix,
    initialProfiles: opts.config.profiles,
    adminGroups: opts.config.adminGroups,
    unlistedMaxLength: opts.config.unlistedMaxLength,
    regexTimeoutMs: opts.config.regexTimeoutMs,
    groupsCacheMs: opts.config.groupsCacheSeconds * 1000,
    community: opts.community ?? DEFAULT_COMMUNITY,
  });
  await app.register(spawnPagePlugin, { prefix: opts.routePrefix, currency: (opts.community ?? DEFAULT_COMMUNITY).currency });
};
export default profileApi;

export async function buildApp(opts: BuildOptions<ProfileApiConfig>): Promise<FastifyInstance> {
  const app = await createServiceApp({ ...opts, landingPage: false, database: { schema: schemaFor('profile-api'), migrations } });
  // Routes carry their full paths, so the plugin is registered without a Fastify prefix.
  await app.register(profileApi, { routePrefix: opts.settings.prefix, config: opts.config, community: opts.community ?? DEFAULT_COMMUNITY });
  return app;
}

/** Every group this section names, with where (for `hubside check-config`). */
export function references(config: ProfileApiConfig): CommunityReference[] {
  const out: CommunityReference[] = [];
  const groups = (list: readonly string[] | undefined, field: string) => list?.forEach((name, i) => out.push({ kind: 'group', name, field: `${field}[${i}]` }));
  config.profiles.forEach((p, i) => {
    const at = `profile-api.profiles[${i}]`;
    groups(p.allowed_groups, `${at}.allowed_groups`);
    for (const [name, option] of Object.entries(p.profile_options ?? {})) {
      for (const [key, choice] of Object.entries(option.choices)) groups(choice.allowed_groups, `${at}.profile_options${fieldKey(name)}.choices${fieldKey(key)}.allowed_groups`);
      groups(option.unlisted_choice?.allowed_groups, `${at}.profile_options${fieldKey(name)}.unlisted_choice.allowed_groups`);
    }
  });
  groups(config.adminGroups, 'profile-api.adminGroups');
  return out;
}

/** The profile slugs this section defines (rate cards and resource maps name them). */
export function provides(config: ProfileApiConfig): CommunityProvides {
  return { profiles: config.profiles.map((p) => p.slug ?? slugify(p.display_name)) };
}

export const service: ServiceDefinition<typeof configSchema> = {
  name: 'profile-api',
  configSchema,
  migrations,
  build: buildApp,
  references,
  provides,
};
