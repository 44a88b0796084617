import type { Kysely } from 'kysely';
import type { ProfilesDB } from './profiles.table.js';
import type { ProfilesDocument } from './schema.js';

export interface ProfileVersion {
  id: number;
  document: ProfilesDocument;
  author: string;
  message: string;
  parentId: number | null;
  createdAt: Date;
}

export type InsertResult = { ok: true; version: ProfileVersion } | { ok: false; current: ProfileVersion | null };

function toVersion(row: { id: number; document: string; author: string; message: string; parent_id: number | null; created_at: Date }): ProfileVersion {
  return {
    id: row.id,
    document: JSON.parse(row.document) as ProfilesDocument,
    author: row.author,
    message: row.message,
    parentId: row.parent_id,
    createdAt: row.created_at instanceof Date ? row.created_at : new Date(row.created_at),
  };
}

/** Versions of the profiles document. Ids are dense and chosen by the writer, so two writers racing on one parent collide on the primary key and exactly one wins. */
export function createProfileRepository(db: Kysely<ProfilesDB>) {
  async function current(): Promise<ProfileVersion | null> {
    const row = await db.selectFrom('profile_versions').selectAll().orderBy('id', 'desc').limit(1).executeTakeFirst();
    return row ? toVersion(row) : null;
  }

  async function get(id: number): Promise<ProfileVersion | null> {
    const row = await db.selectFrom('profile_versions').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? toVersion(row) : null;
  }

  async function list(opts: { limit: number; before?: number }): Promise<ProfileVersion[]> {
    let q = db.selectFrom('profile_versions').selectAll().orderBy('id', 'desc').limit(opts.limit);
    if (opts.before !== undefined) q = q.where('id', '<', opts.before);
    return (await q.execute()).map(toVersion);
  }

  /** Append a version on top of `parentId` (null: the first). Fails, without writing, if someone else got there first. */
  async function append(parentId: number | null, doc: ProfilesDocument, author: string, message: string): Promise<InsertResult> {
    const id = (parentId ?? 0) + 1;
    const row = await db
      .insertInto('profile_versions')
      .values({ id, document: JSON.stringify(doc), author, message, parent_id: parentId })
      .onConflict((oc) => oc.column('id').doNothing())
      .returningAll()
      .executeTakeFirst();
    if (row) return { ok: true, version: toVersion(row) };
    return { ok: false, current: await current() };
  }

  return { current, get, list, append };
}
export type ProfileRepository = ReturnType<typeof createProfileRepository>;
