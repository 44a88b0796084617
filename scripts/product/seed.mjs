// Sample usage for the demo people, written into usage-collector's own database before it starts:
// its exported migrations make the schema, and closed sessions go in as a poll would record them
// (the table's triggers cut them into day pieces), so every dashboard has something to show.
import { createDatabase, migrate, schemaFor } from '@hubside/service-kit';
import { migrations } from '@hubside/usage-collector';

const HOUR = 3_600_000;

/** Resources of a profile, as usage-collector records them, from its kubespawner_override. */
export function profileResources(profile, usageProfiles = {}) {
  const known = usageProfiles?.[profile?.slug];
  if (known) return { cpuGuarantee: 0, cpuLimit: 0, memGuaranteeGiB: 0, memLimitGiB: 0, gpus: 0, ...known };
  const o = profile?.kubespawner_override ?? {};
  const gib = (v) => {
    const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?$/i.exec(String(v ?? ''));
    if (!m) return 0;
    const scale = { '': 1 / 1024 ** 3, K: 1 / 1024 ** 2, M: 1 / 1024, G: 1, T: 1024 }[m[2].toUpperCase()];
    return Number(m[1]) * scale;
  };
  const memLimit = gib(o.mem_limit) || 2;
  return {
    cpuGuarantee: Number(o.cpu_guarantee ?? 0.5),
    cpuLimit: Number(o.cpu_limit ?? 2),
    memGuaranteeGiB: gib(o.mem_guarantee) || memLimit,
    memLimitGiB: memLimit,
    gpus: Number(o.extra_resource_limits?.['nvidia.com/gpu'] ?? 0),
  };
}

function hubsideOptions(profile, currency, resources) {
  // What hub/profile_list.py records under user_options.hubside (docs/community-model.md).
  return {
    profile: profile.slug,
    hubside: {
      profile: profile.slug,
      options: {},
      price_per_hour: String(profile.price_per_hour ?? '0'),
      currency,
      resources,
      profile_version: 1,
    },
  };
}

/**
 * The sessions to seed: `plan` is [{ user, groups, profile, sessions: [{ startMs, hours }] }].
 * Pure, so the launcher's test can check what "enough sample usage" means.
 */
export function seedSessions(plan, { currency, usageProfiles }) {
  const rows = [];
  for (const entry of plan) {
    const resources = profileResources(entry.profile, usageProfiles);
    for (const s of entry.sessions) {
      const started = new Date(s.startMs);
      const stopped = new Date(s.startMs + s.hours * HOUR);
      rows.push({
        user_name: entry.user,
        server_name: s.server ?? '',
        started,
        profile: entry.profile.slug,
        user_options: JSON.stringify(hubsideOptions(entry.profile, currency, resources)),
        resources: JSON.stringify(resources),
        groups: JSON.stringify([...entry.groups].sort()),
        last_activity: stopped,
        first_seen: started,
        last_seen: stopped,
        stopped,
        stop_observed: stopped,
        stop_source: 'poll',
      });
    }
  }
  return rows;
}

/** Opens usage-collector's database, migrates it, and inserts `rows` unless it holds sessions already. */
export async function seedUsage({ dataDir, databaseUrl, rows }) {
  const database = await createDatabase({ dataDir, databaseUrl, schema: schemaFor('usage-collector') });
  try {
    await migrate(database, migrations);
    const { n } = await database.db.selectFrom('sessions').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
    if (Number(n) > 0) return { inserted: 0 };
    if (rows.length > 0) await database.db.insertInto('sessions').values(rows).execute();
    return { inserted: rows.length };
  } finally {
    await database.destroy();
  }
}
