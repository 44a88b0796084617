import type { CommunityReference, ServiceName } from '@hubside/service-kit';
import type { configSchema as authBridgeSchema } from '@hubside/auth-bridge';
import type { configSchema as dataGatewaySchema } from '@hubside/data-gateway';
import type { configSchema as profileApiSchema } from '@hubside/profile-api';
import type { configSchema as usageCollectorSchema } from '@hubside/usage-collector';
import type { z } from 'zod';
import { keyPath } from './check-config.js';
import type { SectionFallback } from './check-config.js';

/**
 * What each section names and defines, read by the CLI for a service whose definition does not
 * export `references`/`provides` yet. The services' own exports win (check-config calls these
 * only when a definition lacks them); delete an entry once its service exports both.
 */

type AuthBridge = z.output<typeof authBridgeSchema>;
type DataGateway = z.output<typeof dataGatewaySchema>;
type ProfileApi = z.output<typeof profileApiSchema>;
type UsageCollector = z.output<typeof usageCollectorSchema>;

const groupRefs = (names: readonly string[], field: string): CommunityReference[] =>
  names.map((name, i) => ({ kind: 'group', name, field: `${field}[${i}]` }));

/** KubeSpawner's slug for a profile without one (python-slugify's ASCII core), as profile-api derives it. */
function slugOf(profile: { slug?: string | undefined; display_name: string }): string {
  if (profile.slug !== undefined) return profile.slug;
  return profile.display_name
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export const SECTION_FALLBACKS: Partial<Record<ServiceName, SectionFallback>> = {
  'auth-bridge': {
    references(config) {
      const c = config as AuthBridge;
      const refs: CommunityReference[] = [];
      for (const [hub, def] of Object.entries(c.hubs)) {
        const at = `auth-bridge.hubs${keyPath(hub)}`;
        refs.push(...groupRefs(def.allowedGroups, `${at}.allowedGroups`), ...groupRefs(def.adminGroups, `${at}.adminGroups`));
        for (const [upstream, group] of Object.entries(def.groupMap)) refs.push({ kind: 'group', name: group, field: `${at}.groupMap${keyPath(upstream)}` });
      }
      return refs;
    },
  },
  'profile-api': {
    references(config) {
      const c = config as ProfileApi;
      const refs = groupRefs(c.adminGroups, 'profile-api.adminGroups');
      c.profiles.forEach((p, i) => {
        const at = `profile-api.profiles[${i}]`;
        refs.push(...groupRefs(p.allowed_groups ?? [], `${at}.allowed_groups`));
        for (const [name, option] of Object.entries(p.profile_options ?? {})) {
          const o = `${at}.profile_options${keyPath(name)}`;
          for (const [choice, def] of Object.entries(option.choices)) refs.push(...groupRefs(def.allowed_groups ?? [], `${o}.choices${keyPath(choice)}.allowed_groups`));
          refs.push(...groupRefs(option.unlisted_choice?.allowed_groups ?? [], `${o}.unlisted_choice.allowed_groups`));
        }
      });
      return refs;
    },
    provides: (config) => ({ profiles: (config as ProfileApi).profiles.map(slugOf) }),
  },
  'usage-collector': {
    references(config, raw) {
      const c = config as UsageCollector;
      const refs: CommunityReference[] = [];
      // Only a currency the file gives: today's schema fills in USD when none is given.
      if (isRecord(raw) && Object.hasOwn(raw, 'currency')) refs.push({ kind: 'currency', name: c.currency, field: 'usage-collector.currency' });
      for (const slug of Object.keys(c.profiles)) refs.push({ kind: 'profile', name: slug, field: `usage-collector.profiles${keyPath(slug)}` });
      c.rateCards.forEach((card, i) => {
        for (const slug of Object.keys(card.profileHour)) refs.push({ kind: 'profile', name: slug, field: `usage-collector.rateCards[${i}].profileHour${keyPath(slug)}` });
      });
      for (const group of Object.keys(c.budgets.groups)) refs.push({ kind: 'group', name: group, field: `usage-collector.budgets.groups${keyPath(group)}` });
      refs.push(...groupRefs(c.attribution.groupOrder, 'usage-collector.attribution.groupOrder'));
      refs.push(...groupRefs(c.access.adminGroups, 'usage-collector.access.adminGroups'));
      for (const [user, groups] of Object.entries(c.access.managers)) refs.push(...groupRefs(groups, `usage-collector.access.managers${keyPath(user)}`));
      for (const [group, groups] of Object.entries(c.access.managerGroups)) {
        const at = `usage-collector.access.managerGroups${keyPath(group)}`;
        refs.push({ kind: 'group', name: group, field: at }, ...groupRefs(groups, at));
      }
      return refs;
    },
  },
  'data-gateway': {
    references(config) {
      const refs: CommunityReference[] = [];
      for (const [name, d] of Object.entries((config as DataGateway).datasets)) refs.push(...groupRefs(d.groups, `data-gateway.datasets${keyPath(name)}.groups`));
      return refs;
    },
    provides: (config) => ({ datasets: Object.keys((config as DataGateway).datasets) }),
  },
};
