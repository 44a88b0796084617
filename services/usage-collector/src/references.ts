import { fieldKey } from '@hubside/service-kit';
import type { CommunityReference } from '@hubside/service-kit';
import type { UsageCollectorSection } from './config.js';

const SECTION = 'usage-collector';

/**
 * Every name the section refers to elsewhere, with where: groups (budgets, attribution, access),
 * profile slugs (rate cards' prices, the resource map) and the currency, for `hubside check-config`.
 */
export function references(config: UsageCollectorSection): CommunityReference[] {
  const out: CommunityReference[] = [];
  const group = (name: string, field: string) => out.push({ kind: 'group', name, field: `${SECTION}.${field}` });
  const profile = (name: string, field: string) => out.push({ kind: 'profile', name, field: `${SECTION}.${field}` });
  for (const g of Object.keys(config.budgets.groups)) group(g, `budgets.groups${fieldKey(g)}`);
  config.attribution.groupOrder.forEach((g, i) => group(g, `attribution.groupOrder[${i}]`));
  config.access.adminGroups.forEach((g, i) => group(g, `access.adminGroups[${i}]`));
  for (const [user, groups] of Object.entries(config.access.managers)) groups.forEach((g, i) => group(g, `access.managers${fieldKey(user)}[${i}]`));
  for (const [member, groups] of Object.entries(config.access.managerGroups)) {
    group(member, `access.managerGroups${fieldKey(member)}`);
    groups.forEach((g, i) => group(g, `access.managerGroups${fieldKey(member)}[${i}]`));
  }
  config.rateCards.forEach((card, i) => {
    for (const slug of Object.keys(card.profileHour)) profile(slug, `rateCards[${i}].profileHour${fieldKey(slug)}`);
  });
  for (const slug of Object.keys(config.profiles)) profile(slug, `profiles${fieldKey(slug)}`);
  if (config.currency !== undefined) out.push({ kind: 'currency', name: config.currency, field: `${SECTION}.currency` });
  return out;
}
