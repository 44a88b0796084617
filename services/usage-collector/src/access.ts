import { scopeSatisfied } from '@hubside/hub-client';
import { coursesTaughtBy, isCommunityAdmin } from '@hubside/service-kit';
import type { HubIdentity } from '@hubside/hub-client';
import { entryOf } from './config.js';
import type { UsageCollectorConfig } from './config.js';

/** What a caller may see: everything, or themselves plus the groups they manage. */
export type Visibility = { all: true; self: string } | { all: false; self: string; groups: ReadonlySet<string> };

/**
 * The community model decides first (community admins see everything, instructors their courses);
 * the section's older `access.*` fields add to it.
 */
export function visibilityOf(identity: Pick<HubIdentity, 'kind' | 'name' | 'admin' | 'groups' | 'scopes'>, config: UsageCollectorConfig): Visibility {
  const admin =
    identity.admin ||
    (identity.kind === 'user' && isCommunityAdmin(config.community, identity)) ||
    identity.groups.some((g) => config.access.adminGroups.includes(g)) ||
    // A service (e.g. the hub's pre-spawn check or a dashboard) that may read every user.
    (identity.kind === 'service' && scopeSatisfied(identity.scopes, 'read:users'));
  if (admin) return { all: true, self: identity.name };
  const groups = new Set<string>();
  if (identity.kind === 'user') {
    for (const g of coursesTaughtBy(config.community, identity)) groups.add(g);
    for (const g of entryOf(config.access.managers, identity.name) ?? []) groups.add(g);
    for (const member of identity.groups) for (const g of entryOf(config.access.managerGroups, member) ?? []) groups.add(g);
  }
  return { all: false, self: identity.kind === 'user' ? identity.name : '', groups };
}

export function maySeeUser(v: Visibility, user: string, userGroups: readonly string[]): boolean {
  if (v.all || user === v.self) return true;
  return userGroups.some((g) => v.groups.has(g));
}

export function maySeeGroup(v: Visibility, group: string): boolean {
  return v.all || v.groups.has(group);
}
