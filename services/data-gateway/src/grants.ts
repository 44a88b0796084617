import type { HubIdentity } from '@hubside/hub-client';
import type { DatasetConfig } from './config.js';
import { expandTemplate, templateUses } from './escape.js';

export type Access = 'read' | 'read-write';

/** What one user may do in one dataset: always whole prefixes that end in `/` (or the bucket). */
export interface Grant {
  dataset: string;
  access: Access;
  prefixes: string[];
}

/** Groups of the user that the dataset admits; an empty `groups` list admits everyone. */
export function admittedGroups(dataset: DatasetConfig, user: HubIdentity): string[] | undefined {
  if (dataset.groups.length === 0) return user.groups;
  const allowed = user.groups.filter((g) => dataset.groups.includes(g));
  return allowed.length > 0 ? allowed : undefined;
}

/** The grant, or a reason it is refused (403). */
export function resolveGrant(name: string, dataset: DatasetConfig, user: HubIdentity, access: Access): Grant | { refused: string } {
  if (user.kind !== 'user') return { refused: 'credentials are issued to users, not services' };
  const groups = admittedGroups(dataset, user);
  if (!groups) return { refused: `dataset ${name} is limited to the groups ${dataset.groups.join(', ')}` };
  if (access === 'read-write' && dataset.access === 'read') return { refused: `dataset ${name} is read-only` };
  const uses = templateUses(dataset.prefix);
  let prefixes: string[];
  if (uses === 'username') prefixes = [expandTemplate(dataset.prefix, { username: user.name })];
  else if (uses === 'group') prefixes = [...new Set(groups)].sort().map((group) => expandTemplate(dataset.prefix, { group }));
  else prefixes = [dataset.prefix];
  return { dataset: name, access, prefixes };
}
