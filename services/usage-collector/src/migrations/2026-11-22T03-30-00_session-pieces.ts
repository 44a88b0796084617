import { sql } from 'kysely';
import type { Kysely } from 'kysely';

// Closed sessions cut into day pieces ahead of time, kept exact by triggers (read by pieces.ts).

/**
 * SQL (text) that adds the shapes of the sessions in relation `source` (a trigger's transition
 * table, the row a trigger fired for, or `sessions` for the backfill), and the pieces of the closed ones. Open
 * sessions need their shape too: readers cut them on the fly and name them by shape. The pieces are those of `piecesCte`
 * without clipping: times cut to milliseconds, seconds as a double, empty pieces left out. `idle`
 * is the part of the piece after the session's last activity.
 */
function insertPiecesSql(source: string): string {
  return `
    insert into usage_shapes (profile, resources, groups)
      select distinct coalesce(n.profile, ''), n.resources, n.groups from ${source} n
      where not exists (select 1 from usage_shapes h where h.profile = coalesce(n.profile, '') and h.resources = n.resources and h.groups = n.groups)
      on conflict do nothing;
    insert into session_pieces (session_id, user_name, shape, started, day, secs, idle)
      select n.id, n.user_name, h.id, n.started, d.day,
             date_part('epoch', least(t.b, d.day + interval '1 day') - greatest(t.a, d.day)),
             greatest(0, date_part('epoch', least(n.stopped, d.day + interval '1 day') - greatest(t.i, d.day)))
      from ${source} n
      join usage_shapes h on h.profile = coalesce(n.profile, '') and h.resources = n.resources and h.groups = n.groups
      cross join lateral (select date_trunc('milliseconds', n.started) as a, date_trunc('milliseconds', n.stopped) as b,
                                 greatest(coalesce(n.last_activity, n.started), n.started) as i) t
      cross join lateral generate_series(date_trunc('day', t.a, 'UTC'), t.b, interval '1 day') as d(day)
      where n.stopped is not null and t.b > t.a
        and least(t.b, d.day + interval '1 day') > greatest(t.a, d.day);`;
}

/** Creates the tables and triggers, and cuts the closed sessions already recorded. */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create table usage_shapes (
      id serial primary key,
      profile text not null,
      resources jsonb not null,
      groups jsonb not null,
      constraint usage_shapes_key unique (profile, resources, groups))`.execute(db);
  await sql`create index usage_shapes_groups on usage_shapes using gin (groups)`.execute(db);
  await sql`create table session_pieces (
      session_id bigint not null,
      user_name text not null,
      shape integer not null,
      started timestamptz not null,
      day timestamptz not null,
      secs double precision not null,
      idle double precision not null,
      constraint session_pieces_pk primary key (session_id, day))`.execute(db);
  await sql`create index session_pieces_day on session_pieces (day)`.execute(db);
  await sql`create index session_pieces_user_day on session_pieces (user_name, day)`.execute(db);
  await sql
    .raw(
      `create function session_pieces_added() returns trigger language plpgsql set search_path from current as $$
      begin
        ${insertPiecesSql('new_rows')}
        return null;
      end $$`,
    )
    .execute(db);
  await sql
    .raw(
      `create function session_pieces_changed() returns trigger language plpgsql set search_path from current as $$
      begin
        delete from session_pieces where session_id = old.id;
        ${insertPiecesSql('(select new.*)')}
        return null;
      end $$`,
    )
    .execute(db);
  await sql
    .raw(
      `create function session_pieces_removed() returns trigger language plpgsql set search_path from current as $$
      begin
        delete from session_pieces p using old_rows o where p.session_id = o.id;
        return null;
      end $$`,
    )
    .execute(db);
  await sql.raw(`create function session_pieces_truncated() returns trigger language plpgsql set search_path from current as $$ begin truncate session_pieces; return null; end $$`).execute(db);
  await sql`create trigger session_pieces_insert after insert on sessions referencing new table as new_rows for each statement execute function session_pieces_added()`.execute(db);
  // Row by row, behind a condition checked without calling the function: every poll updates its open
  // sessions (last seen, last activity), which changes no piece and no shape. Only a session that
  // is or was closed, or whose profile, resources or groups changed, is cut again.
  await sql`create trigger session_pieces_update after update on sessions for each row
    when (old.stopped is not null or new.stopped is not null or old.profile is distinct from new.profile
          or old.resources is distinct from new.resources or old.groups is distinct from new.groups)
    execute function session_pieces_changed()`.execute(db);
  await sql`create trigger session_pieces_delete after delete on sessions referencing old table as old_rows for each statement execute function session_pieces_removed()`.execute(db);
  await sql`create trigger session_pieces_truncate after truncate on sessions for each statement execute function session_pieces_truncated()`.execute(db);
  await sql.raw(insertPiecesSql('sessions')).execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['insert', 'update', 'delete', 'truncate']) await sql.raw(`drop trigger if exists session_pieces_${t} on sessions`).execute(db);
  for (const f of ['added', 'changed', 'removed', 'truncated']) await sql.raw(`drop function if exists session_pieces_${f}()`).execute(db);
  await sql`drop table if exists session_pieces`.execute(db);
  await sql`drop table if exists usage_shapes`.execute(db);
}

