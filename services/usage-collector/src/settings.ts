/**
 * Rate cards and budgets, editable by an admin on the dashboard without an engineer, versioned.
 *
 * Each version is a row of `usage_settings`; the newest is in force for pricing, budgets, the quota
 * API and the dashboards, on every replica within `ttlMs`. Two sources write versions:
 * - the community file: at start, when its rate cards and budgets differ from those it gave last
 *   time (a redeploy with a new file wins, and is recorded as such);
 * - an admin on the dashboard, with the version they edited (`If-Match`): a save on top of
 *   someone else's newer save is refused, never merged silently.
 * Everything else (currency, attribution, access, the budget webhook URL) stays in the file.
 */
import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import { sql } from 'kysely';
import { z } from 'zod';
import { budgetsSchema, rateCardsSchema, safeText, uniqueCardDates } from './config.js';
import type { UsageCollectorConfig } from './config.js';

export const editableSettingsSchema = z
  .object({
    rateCards: rateCardsSchema,
    budgets: budgetsSchema,
  })
  .strict()
  .superRefine((s, ctx) => uniqueCardDates(s.rateCards, ctx));
export type EditableSettings = z.output<typeof editableSettingsSchema>;

/** A version note (free text, stored as text: no NUL, no lone surrogate). */
export const noteSchema = safeText(500);

export const FILE_SOURCE = 'community file';
export const DASHBOARD_SOURCE = 'dashboard';

interface SettingsTable {
  id: number;
  settings: unknown;
  source: string;
  author: string;
  note: string;
  file_hash: string | null;
  created_at: Date | string;
}
export interface SettingsDB {
  usage_settings: SettingsTable;
}

export interface SettingsVersion {
  /** 0: nothing recorded yet (the community file's settings, before the first start wrote them). */
  id: number;
  source: string;
  author: string;
  note: string;
  created_at: string;
  settings: EditableSettings;
}

/** A stored version that no longer passes the schema (stored by an older release, or by hand). */
export interface SkippedVersion {
  id: number;
  reason: string;
}

/** The settings in force: a version, and the whole configuration it makes with the community file. */
export interface LiveSettings {
  version: SettingsVersion;
  config: UsageCollectorConfig;
  /** The newest stored version (what a save must name in If-Match); `version.id` unless it was skipped. */
  newest: number;
  /** Newer versions passed over because they are not valid: the one in force is the newest valid one, else the file's. */
  skipped: SkippedVersion[];
}

export function editableOf(config: UsageCollectorConfig): EditableSettings {
  const { webhook: _webhook, ...budgets } = config.budgets;
  return { rateCards: config.rateCards, budgets };
}

function hashOf(s: EditableSettings): string {
  return createHash('sha256').update(JSON.stringify(s)).digest('hex');
}

export type SaveResult = { saved: true; version: SettingsVersion } | { saved: false; current: number };

export function createSettingsStore(
  db: Kysely<SettingsDB>,
  file: UsageCollectorConfig,
  opts: { ttlMs?: number; onInvalid?: (skipped: SkippedVersion[], inForce: number) => void } = {},
) {
  const ttlMs = opts.ttlMs ?? 1_000;
  const fromFile = editableOf(file);
  const fileHash = hashOf(fromFile);
  // One configuration object per version, so what is cached per card or budget object stays cached.
  const built = new Map<number, LiveSettings>();
  let cached: { at: number; value: Promise<LiveSettings> } | undefined;

  /** A stored version's settings, or why they can't be used. */
  function parseRow(row: SettingsTable): { ok: true; settings: EditableSettings } | { ok: false; reason: string } {
    let raw: unknown;
    try {
      raw = typeof row.settings === 'string' ? JSON.parse(row.settings) : row.settings;
    } catch {
      return { ok: false, reason: 'not JSON' };
    }
    const parsed = editableSettingsSchema.safeParse(raw);
    if (parsed.success) return { ok: true, settings: parsed.data };
    return { ok: false, reason: parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ') };
  }

  /**
   * The newest version that is valid, so a version stored before a limit existed (or written by
   * hand) never makes reads fail: the ones passed over are named, and the newest id stays what a
   * save must name, so an admin can save a valid version on top.
   */
  async function resolve(top: SettingsTable | undefined): Promise<LiveSettings> {
    const newestId = top ? Number(top.id) : 0;
    const hit = built.get(newestId);
    if (hit) return hit;
    const skipped: SkippedVersion[] = [];
    let row = top;
    let parsed = row ? parseRow(row) : undefined;
    // Walk back a bounded number of versions; past that, the community file is in force.
    for (let steps = 0; row && parsed && !parsed.ok && steps < 50; steps += 1) {
      skipped.push({ id: Number(row.id), reason: parsed.reason });
      row = await db.selectFrom('usage_settings').selectAll().where('id', '<', Number(row.id)).orderBy('id', 'desc').limit(1).executeTakeFirst();
      parsed = row ? parseRow(row) : undefined;
    }
    if (parsed && !parsed.ok) row = undefined;
    const value = live(row, row && parsed?.ok ? parsed.settings : fromFile, newestId, skipped);
    if (skipped.length) opts.onInvalid?.(skipped, value.version.id);
    built.set(newestId, value);
    // Versions change rarely; keep the last few.
    while (built.size > 8) built.delete(built.keys().next().value!);
    return value;
  }

  function live(row: SettingsTable | undefined, settings: EditableSettings, newestId: number, skipped: SkippedVersion[]): LiveSettings {
    const id = row ? Number(row.id) : 0;
    const version: SettingsVersion = {
      id,
      source: row?.source ?? FILE_SOURCE,
      author: row?.author ?? FILE_SOURCE,
      note: row?.note ?? '',
      created_at: row ? new Date(row.created_at).toISOString() : new Date(0).toISOString(),
      settings,
    };
    const config: UsageCollectorConfig = {
      ...file,
      rateCards: settings.rateCards,
      budgets: { ...settings.budgets, ...(file.budgets.webhook ? { webhook: file.budgets.webhook } : {}) },
    };
    return { version, config, newest: newestId, skipped };
  }

  async function newest(): Promise<SettingsTable | undefined> {
    return db.selectFrom('usage_settings').selectAll().orderBy('id', 'desc').limit(1).executeTakeFirst();
  }

  /**
   * Adds version `expected + 1`, only if `expected` is still the newest (and, for the file, only if
   * the newest version from the file is not this file already); false when that no longer holds.
   * Both checks are in the insert itself, so two replicas cannot both pass them.
   */
  async function append(expected: number, settings: EditableSettings, source: string, author: string, note: string, hash: string | null): Promise<boolean> {
    try {
      const r = await sql<{ id: number }>`
        insert into usage_settings (id, settings, source, author, note, file_hash, created_at)
        select ${expected + 1}, ${JSON.stringify(settings)}::jsonb, ${source}, ${author}, ${note}, ${hash}, now()
        where (select coalesce(max(id), 0) from usage_settings) = ${expected}
          ${hash === null ? sql`` : sql`and (select file_hash from usage_settings where source = ${FILE_SOURCE} order by id desc limit 1) is distinct from ${hash}`}
        returning id`.execute(db);
      return r.rows.length === 1;
    } catch (err) {
      // Another writer took that id at the same moment (a primary-key conflict): not ours.
      if ((err as { code?: string }).code === '23505') return false;
      throw err;
    }
  }

  return {
    /**
     * At start: records the community file's rate cards and budgets as a new version when they
     * differ from those it gave last time (or nothing is recorded yet). Replicas starting together
     * record it once.
     */
    async init(): Promise<void> {
      for (let attempt = 0; attempt < 5; attempt += 1) {
        const last = await db.selectFrom('usage_settings').select('file_hash').where('source', '=', FILE_SOURCE).orderBy('id', 'desc').limit(1).executeTakeFirst();
        if (last?.file_hash === fileHash) return;
        const top = await newest();
        const note = last ? 'the community file changed' : 'initial version from the community file';
        if (await append(top ? Number(top.id) : 0, fromFile, FILE_SOURCE, FILE_SOURCE, note, fileHash)) break;
      }
      cached = undefined;
    },

    /** The settings in force, read at most every `ttlMs` (a save here is seen at once). */
    current(): Promise<LiveSettings> {
      if (cached && Date.now() - cached.at < ttlMs) return cached.value;
      const value = newest().then(resolve);
      cached = { at: Date.now(), value };
      value.catch(() => {
        if (cached?.value === value) cached = undefined;
      });
      return value;
    },

    /** Saves `settings` on top of version `expected`, or says which version is newest now. */
    async save(expected: number, settings: EditableSettings, author: string, note: string): Promise<SaveResult> {
      const ok = await append(expected, settings, DASHBOARD_SOURCE, author, note, null);
      cached = undefined;
      if (!ok) {
        const top = await newest();
        return { saved: false, current: top ? Number(top.id) : 0 };
      }
      return { saved: true, version: (await this.current()).version };
    },

    /** The newest versions first, without their settings. */
    async history(limit = 20): Promise<Omit<SettingsVersion, 'settings'>[]> {
      const rows = await db.selectFrom('usage_settings').select(['id', 'source', 'author', 'note', 'created_at']).orderBy('id', 'desc').limit(limit).execute();
      return rows.map((r) => ({ id: Number(r.id), source: r.source, author: r.author, note: r.note, created_at: new Date(r.created_at).toISOString() }));
    },
  };
}
export type SettingsStore = ReturnType<typeof createSettingsStore>;
