import { DEFAULT_COMMUNITY, SERVICE_NAMES, communityFileSchema, communitySchema, describeIssues, fieldKey, withoutPrototypes } from '@hubside/service-kit';
import type { Community, CommunityProvides, CommunityReference, ServiceName } from '@hubside/service-kit';
import { parseDocument } from 'yaml';
import type { z } from 'zod';

/**
 * `hubside check-config`: every problem of a community file in one pass. A pure function over
 * the parsed file and the services' definitions, so it is tested without processes or files.
 */

/** What check-config needs of a service definition (`ServiceDefinition` has all of it). */
export interface CheckedDefinition {
  name: ServiceName;
  configSchema: z.ZodType;
  references?(config: never): CommunityReference[];
  provides?(config: never): CommunityProvides;
}

/**
 * The CLI's own reading of a section, for a service whose definition does not (yet) say what
 * its section names and defines. It also gets the section as written, before defaults.
 */
export interface SectionFallback {
  references?(config: unknown, raw: unknown): CommunityReference[];
  provides?(config: unknown, raw: unknown): CommunityProvides;
}

export interface CheckResult {
  /** Each a `field.path: what is wrong` line; any problem makes check-config fail. */
  problems: string[];
  /** Worth knowing, not wrong (e.g. references that could not be checked). */
  notes: string[];
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** At most this many names follow "there are:", so one message stays one line. */
const MAX_LISTED = 20;

function listed(names: readonly string[]): string {
  if (names.length === 0) return 'there are none';
  const sorted = [...names].sort();
  const shown = sorted.slice(0, MAX_LISTED).join(', ');
  return `there are: ${shown}${sorted.length > MAX_LISTED ? `, and ${sorted.length - MAX_LISTED} more` : ''}`;
}

/** A name that differs only in case: JupyterHub's group names are case-sensitive, so it's a likely typo. */
function sameButCase(name: string, names: Iterable<string>): string | undefined {
  const lower = name.toLowerCase();
  for (const n of names) if (n !== name && n.toLowerCase() === lower) return n;
  return undefined;
}

/** A key as it appears in a field path: bare when plain, quoted when it holds dots, spaces, brackets. */
export const keyPath = fieldKey;

/** What the `community:` section itself names: admin groups and course groups, and each course's instructor groups. */
export function communityReferences(community: Community): CommunityReference[] {
  const refs: CommunityReference[] = [];
  community.admins.groups.forEach((g, i) => refs.push({ kind: 'group', name: g, field: `community.admins.groups[${i}]` }));
  for (const [course, def] of Object.entries(community.courses)) {
    const at = `community.courses${keyPath(course)}`;
    refs.push({ kind: 'group', name: course, field: at });
    def.instructors.groups.forEach((g, i) => refs.push({ kind: 'group', name: g, field: `${at}.instructors.groups[${i}]` }));
  }
  return refs;
}

type Kind = 'profile' | 'dataset';
/** Where a section's `provides` lists the names of each kind. */
const PROVIDED: Record<Kind, keyof CommunityProvides> = { profile: 'profiles', dataset: 'datasets' };

/**
 * Check a parsed community file: the top level, the `community:` section and each service's
 * section against its own schema (all of them, not stopping at the first), then every reference
 * between sections. A section that does not parse contributes no references, and names it would
 * define are not checked (its schema errors say what to fix first).
 */
export function checkCommunityFile(
  doc: unknown,
  definitions: readonly CheckedDefinition[],
  fallbacks: Partial<Record<ServiceName, SectionFallback>> = {},
): CheckResult {
  const problems: string[] = [];
  const notes: string[] = [];

  const top = communityFileSchema.safeParse(doc);
  if (!top.success) problems.push(...describeIssues(top.error));
  const file = isRecord(doc) ? doc : {};

  // The community section on its own, so a stray top-level key doesn't hide its references.
  let community: Community | undefined;
  if (file.community === undefined) community = DEFAULT_COMMUNITY;
  else {
    const parsed = communitySchema.safeParse(file.community);
    community = parsed.success ? withoutPrototypes(parsed.data) : undefined;
  }

  const references: CommunityReference[] = community ? communityReferences(community) : [];
  // Per kind, the names defined and the fields that define them; undefined: nobody says, so unchecked.
  const provided: Record<Kind, { names: Set<string>; from: Set<string> } | undefined> = { profile: undefined, dataset: undefined };

  for (const name of SERVICE_NAMES) {
    const def = definitions.find((d) => d.name === name);
    if (!def) continue;
    const raw = Object.hasOwn(file, name) ? file[name] : undefined;
    const result = def.configSchema.safeParse(raw ?? {});
    if (!result.success) {
      problems.push(...describeIssues(result.error, name));
      continue;
    }
    const config = withoutPrototypes(result.data) as never;
    const fallback = fallbacks[name];
    let provides: CommunityProvides | undefined;
    try {
      references.push(...(def.references ? def.references(config) : (fallback?.references?.(config, raw) ?? [])));
      provides = def.provides ? def.provides(config) : fallback?.provides?.(config, raw);
    } catch (err) {
      // A bug in a service's listing must not hide the rest of the report behind a stack trace.
      problems.push(`${name}: could not list the names this section uses and defines (${(err as Error).message}); please report this`);
      continue;
    }
    for (const kind of Object.keys(PROVIDED) as Kind[]) {
      const names = provides?.[PROVIDED[kind]];
      if (!names) continue;
      const p = (provided[kind] ??= { names: new Set(), from: new Set() });
      p.from.add(`${name}.${PROVIDED[kind]}`);
      for (const n of names) p.names.add(n);
    }
  }

  // The keys as written: zod's record drops a key named __proto__, a name JupyterHub allows.
  const declaredGroups = community?.groups && isRecord(file.community) && isRecord(file.community.groups) ? Object.keys(file.community.groups) : undefined;
  let uncheckedGroups = 0;
  for (const ref of references) {
    switch (ref.kind) {
      case 'group': {
        if (!declaredGroups) {
          uncheckedGroups += 1;
          break;
        }
        if (declaredGroups.includes(ref.name)) break;
        const hint = sameButCase(ref.name, declaredGroups);
        problems.push(
          `${ref.field}: no group ${JSON.stringify(ref.name)} in community.groups (${hint ? `did you mean ${JSON.stringify(hint)}? ` : ''}${listed(declaredGroups)})`,
        );
        break;
      }
      case 'profile':
      case 'dataset': {
        const p = provided[ref.kind];
        if (!p || p.names.has(ref.name)) break;
        problems.push(`${ref.field}: no ${ref.kind} ${JSON.stringify(ref.name)} in ${[...p.from].join(' or ')} (${listed([...p.names])})`);
        break;
      }
      case 'currency': {
        if (!community || ref.name === community.currency) break;
        const given = file.community !== undefined && isRecord(file.community) && Object.hasOwn(file.community, 'currency');
        problems.push(
          `${ref.field}: ${JSON.stringify(ref.name)} is not the community's currency (community.currency is ${JSON.stringify(community.currency)}${given ? '' : ', the default'}); every price and budget is in community.currency`,
        );
        break;
      }
    }
  }
  if (uncheckedGroups > 0) {
    notes.push(`${uncheckedGroups} group reference${uncheckedGroups > 1 ? 's were' : ' was'} not checked: declare the community's groups in community.groups to check them`);
  }
  return { problems: [...new Set(problems)], notes };
}

export type ParsedYaml = { ok: true; value: unknown } | { ok: false; problems: string[] };

/**
 * Parse the file's text strictly. A syntax error is reported once, where it is (the errors after
 * it are usually its echoes); duplicate keys, each a mistake of its own, are all reported.
 */
export function parseCommunityYaml(text: string): ParsedYaml {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length === 0) {
    try {
      return { ok: true, value: doc.toJS({ maxAliasCount: 100 }) ?? {} };
    } catch (err) {
      // e.g. too many aliases (a "billion laughs" file)
      return { ok: false, problems: [`(yaml): ${(err as Error).message}`] };
    }
  }
  const syntax = doc.errors.filter((e) => e.code !== 'DUPLICATE_KEY');
  const shown = syntax.length > 0 ? [syntax[0]!] : doc.errors;
  return {
    ok: false,
    problems: shown.map((e) => {
      const message = e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
      const at = e.linePos?.[0];
      return `(yaml) ${at ? `line ${at.line}, column ${at.col}` : 'somewhere'}: ${message}`;
    }),
  };
}
