/**
 * The three dashboards' data: one student, one course (group), the whole hub. Each loads its usage
 * with a bounded number of queries whatever the number of students, through the same `loadUsage`
 * and pricing as the statement and usage APIs, so the figures agree with them.
 */
import { Decimal } from 'decimal.js';
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import { evaluateBudgets, quotaFrom } from '../budgets.js';
import type { Budget, UsageCollectorConfig } from '../config.js';
import { DAY_MS, buildStatement, chargeUser, dayStart, hoursOf, monthStart, nextMonth, primaryGroup, priceSession, roundMoney, sortCards, Tally } from '../pricing.js';
import type { SessionsRepository } from '../sessions-repository.js';
import { loadSessions, loadUsage } from '../usage-source.js';
import type { UsageFilter } from '../usage-source.js';
import type { UsageDB } from '../usage.table.js';
import { budgetUsed, budgetWindowStart, byProfile, dailyBreakdown, daysOf, percent, ratio, runsOut, userBudget } from './aggregate.js';
import type { Usage } from './aggregate.js';
import { createViewCache } from './cache.js';
import type { ViewCache } from './cache.js';
import { loadDaily } from './daily-source.js';
import type { DailyUsage } from './daily-source.js';
import { withoutJit } from './no-jit.js';

export interface Range {
  from: number;
  to: number;
}

const iso = (t: number) => new Date(t).toISOString();
const TOP = 5;
const AT_RISK = 0.75;
const AT_RISK_MAX = 50;
const SESSIONS_MAX = 500;
const GROUP_SERIES = 8;

export const SORT_KEYS = ['user', 'hours', 'net', 'gross', 'idle_hours', 'budget_percent'] as const;
export type SortKey = (typeof SORT_KEYS)[number];

export interface StudentLine {
  user: string;
  hours: string;
  gross: string;
  net: string;
  idle_hours: string;
  budget_used: string | null;
  budget_limit: string | null;
  budget_unit: string | null;
  budget_percent: number | null;
}

export function createViews(db: Kysely<UsageDB>, repo: SessionsRepository, config: UsageCollectorConfig, cache: ViewCache = createViewCache(db, { ttlMs: 0 })) {
  const cards = sortCards(config.rateCards);

  /**
   * Usage for a range plus the same month before it (the allowance is spent in time order). Cut at
   * every day for a per-user chart (`byDay`); many users' charts read `daily` instead, so the
   * statement's load stays a few rows per user.
   */
  function load(q: Kysely<UsageDB>, filter: UsageFilter, range: Range, now: number, byDay: boolean): Promise<Usage> {
    const cuts = byDay ? [range.from, ...daysOf(range.from, range.to)] : [range.from];
    return loadUsage(q, filter, { from: monthStart(range.from), to: range.to, now: new Date(now), cards, cuts });
  }

  /** Many users' per-day figures, summed across users in SQL (see daily-source.ts). */
  function daily(q: Kysely<UsageDB>, filter: UsageFilter, range: Range, now: number, activeUsers = false): Promise<DailyUsage> {
    return loadDaily(q, filter, { from: range.from, to: range.to, now: new Date(now), cards, activeUsers });
  }

  /** A chart of many users: `dailyBreakdown` over day lines, with the active users counted in SQL. */
  function breakdownOf(d: DailyUsage, range: Range, weights?: Parameters<typeof dailyBreakdown>[4]) {
    const out = dailyBreakdown(d.usage, range.from, range.to, cards, weights);
    out.active = daysOf(range.from, range.to).map((day) => d.active.get(day) ?? 0);
    return out;
  }

  /**
   * Every user with usage of a course in the range, with the seconds their servers ran after their
   * last activity (from raw sessions: a rollup keeps no activity times, so users with only rolled-up
   * days count 0). Computed in SQL, one row per user however many sessions; it finishes before the
   * statement, so the students' budgets can load beside it.
   */
  async function courseUsers(q: Kysely<UsageDB>, group: string, range: Range, now: number): Promise<Map<string, number>> {
    const from = new Date(range.from);
    const to = new Date(Math.min(range.to, now));
    const g = JSON.stringify([group]);
    const r = await sql<{ user_name: string; idle: string }>`
      select user_name, sum(greatest(0, extract(epoch from
               least(coalesce(stopped, least(last_seen, ${to})), ${to}) - greatest(coalesce(last_activity, started), started, ${from}))))::text as idle
      from sessions
      where started < ${to} and (stopped is null or stopped > ${from}) and groups @> ${g}::jsonb
      group by user_name
      union all
      select distinct user_name, '0' from daily_usage
      where day >= ${iso(dayStart(range.from)).slice(0, 10)} and day < ${iso(range.to + DAY_MS - 1).slice(0, 10)} and groups @> ${g}::jsonb`.execute(q);
    const out = new Map<string, number>();
    for (const x of r.rows) out.set(x.user_name, (out.get(x.user_name) ?? 0) + Number(x.idle));
    return out;
  }

  /**
   * Usage in a budget window [start, now), loaded so that loadUsage can sum it in SQL: the load is
   * day-aligned (whole days from the day after `start` to the end of today), and only the sessions
   * of `start`'s own day are read one by one and clipped to [start, end of that day). Pieces are
   * per UTC day, so this prices exactly what the quota API prices, without reading every session.
   * Nothing before the window is read: a month window starts at its month's start, and a rolling
   * one counts the gross and hours inside it, which the month's earlier usage does not change.
   */
  async function windowUsage(q: Kysely<UsageDB>, filter: UsageFilter, start: number, now: number): Promise<Usage> {
    const today = dayStart(now);
    const usage = await loadUsage(q, filter, { from: dayStart(start), to: today + DAY_MS, now: new Date(now), cards, cuts: [...new Set([...windowCuts(start, now), monthStart(now)])] });
    return withFirstDay(q, usage, filter, start, now);
  }

  /** The day-aligned cuts a budget window starting at `start` needs in a load (see windowUsage). */
  function windowCuts(start: number, now: number): number[] {
    const first = dayStart(start);
    return [first, first === start ? start : first + DAY_MS, dayStart(now)];
  }

  /**
   * A day-aligned load cut at `windowCuts(start)` (and reaching the end of today), with the
   * window's first day replaced by its sessions clipped to [start, end of that day). The load's
   * maps are copied, not changed, so the same load can serve a statement too.
   */
  async function withFirstDay(q: Kysely<UsageDB>, usage: Usage, filter: UsageFilter, start: number, now: number): Promise<Usage> {
    const first = dayStart(start);
    if (first === start) return usage;
    const next = first + DAY_MS;
    const sessionsByUser = new Map(usage.sessionsByUser);
    const partial = await loadSessions(q, filter, start, Math.min(next, now), new Date(now));
    for (const [user, list] of partial) {
      // Users priced session by session already have their whole sessions in the load.
      if (usage.sessionsByUser.has(user)) continue;
      const clipped = list.map((x) => ({ ...x, start: new Date(Math.max(x.start.getTime(), start)), end: new Date(Math.min(x.end.getTime(), next)) })).filter((x) => x.end > x.start);
      if (clipped.length) sessionsByUser.set(user, clipped);
    }
    return { sessionsByUser, rolledByUser: usage.rolledByUser };
  }

  /**
   * Budget use of some users, or (undefined) of everyone with usage in a budget window, each in
   * their own budget's window, with one load per distinct window.
   */
  async function budgetsOf(q: Kysely<UsageDB>, users: readonly string[] | undefined, now: number, shared?: Usage): Promise<Map<string, { b: Budget; used: Decimal }>> {
    const windows = new Map<number, string[] | undefined>();
    if (users) {
      for (const u of users) {
        const b = userBudget(config, u);
        if (!b) continue;
        const start = budgetWindowStart(b, now);
        const list = windows.get(start);
        if (list) list.push(u);
        else windows.set(start, [u]);
      }
    } else {
      for (const b of [config.budgets.default, ...Object.values(config.budgets.users)]) if (b) windows.set(budgetWindowStart(b, now), undefined);
    }
    const out = new Map<string, { b: Budget; used: Decimal }>();
    for (const [start, list] of windows) {
      // A student's budget counts their usage in every course, so this load is by user, not by group.
      const filter = list ? { users: list } : {};
      // `shared`: a load of everyone, already cut for every window (the hub's).
      const usage = shared ? await withFirstDay(q, shared, filter, start, now) : await windowUsage(q, filter, start, now);
      for (const u of list ?? new Set([...usage.sessionsByUser.keys(), ...usage.rolledByUser.keys()])) {
        const b = userBudget(config, u);
        if (!b || budgetWindowStart(b, now) !== start) continue;
        out.set(u, { b, used: budgetUsed(b, u, usage, now, cards) });
      }
    }
    return out;
  }

  function statementOf(usage: Usage, range: Range, onlyGroups?: ReadonlySet<string>) {
    return buildStatement({
      sessionsByUser: usage.sessionsByUser,
      rolledByUser: usage.rolledByUser,
      from: range.from,
      to: range.to,
      cards,
      currency: config.currency,
      rule: config.attribution.rule,
      order: config.attribution.groupOrder,
      ...(onlyGroups ? { onlyGroups } : {}),
    });
  }

  async function student(user: string, groups: readonly string[], range: Range, now: number) {
    const usage = await withoutJit(db, (q) => load(q, { users: [user] }, range, now, true));
    const charge = chargeUser(user, usage.sessionsByUser.get(user) ?? [], range.from, range.to, cards, usage.rolledByUser.get(user) ?? []);
    const rows = await repo.overlapping({ from: new Date(range.from), to: new Date(range.to), users: [user] });
    const nowDate = new Date(now);
    const sessions = [];
    let idle = 0;
    for (let i = rows.length - 1; i >= 0 && sessions.length < SESSIONS_MAX; i -= 1) {
      const r = rows[i]!;
      const end = Math.min(r.stopped?.getTime() ?? Math.min(r.last_seen.getTime(), now), range.to);
      const start = Math.max(r.started.getTime(), range.from);
      if (end <= start) continue;
      const idleS = Math.max(0, (end - Math.max(r.last_activity?.getTime() ?? r.started.getTime(), start)) / 1000);
      idle += idleS;
      const priced = priceSession({ user, groups: r.groups, profile: r.profile, resources: r.resources, start: r.started, end: new Date(end) }, range.from, range.to, cards);
      sessions.push({
        server: r.server_name,
        profile: r.profile,
        started: r.started.toISOString(),
        stopped: r.stopped?.toISOString() ?? null,
        running: r.stopped === null,
        hours: hoursOf(priced.seconds),
        idle_hours: hoursOf(idleS),
        cost: roundMoney(priced.cost).toFixed(2),
      });
    }
    const evaluated = await evaluateBudgets(db, config, user, groups, nowDate);
    const own = evaluated.find((e) => e.subjectKind === 'user');
    const quota = quotaFrom(evaluated, config.currency);
    return {
      user,
      from: iso(range.from),
      to: iso(range.to),
      currency: config.currency,
      totals: {
        hours: hoursOf(charge.seconds),
        gross: roundMoney(charge.gross).toFixed(2),
        net: roundMoney(charge.netExact).toFixed(2),
        idle_hours: hoursOf(idle),
      },
      by_day: dailyBreakdown(usage, range.from, range.to, cards).byDay,
      by_profile: byProfile(usage, range.from, range.to, cards),
      budget: own
        ? {
            limit: new Decimal(own.budget.limit).toFixed(2),
            used: own.used.toFixed(2),
            remaining: Decimal.max(0, new Decimal(own.budget.limit).minus(own.used)).toFixed(2),
            unit: own.budget.unit,
            window: own.budget.window === 'month' ? 'month' : `rolling-${own.budget.days}d`,
            percent: percent(own.ratio),
            runs_out: runsOut(own.budget, own.used, now),
          }
        : null,
      allow_server_launch: quota.allow_server_launch,
      quota_message: quota.message,
      sessions,
    };
  }

  /** A course's figures that don't depend on the page or sort: computed once per poll (see cache.ts). */
  function courseData(group: string, range: Range, now: number) {
    return cache.get(JSON.stringify(['course', group, range.from, range.to]), async () => {
      // Independent loads, each on its own connection; budgets need the statement's students.
      const filter = { groups: [group] };
      // The course's users are a superset of the statement's students (a few may have nothing billed).
      const usersP = withoutJit(db, (q) => courseUsers(q, group, range, now));
      const [statement, idle, budgets, days] = await Promise.all([
        withoutJit(db, (q) => load(q, filter, range, now, false)).then((usage) => statementOf(usage, range, new Set([group]))),
        usersP,
        usersP.then((users) => withoutJit(db, (q) => budgetsOf(q, [...users.keys()], now))),
        withoutJit(db, (q) => daily(q, filter, range, now)),
      ]);
      const lines: StudentLine[] = statement.users.map((l) => {
        const bu = budgets.get(l.user);
        return {
          user: l.user,
          hours: l.hours,
          gross: l.gross,
          net: l.net,
          idle_hours: hoursOf(idle.get(l.user) ?? 0),
          budget_used: bu ? bu.used.toFixed(2) : null,
          budget_limit: bu ? new Decimal(bu.b.limit).toFixed(2) : null,
          budget_unit: bu ? bu.b.unit : null,
          budget_percent: bu ? percent(ratio(bu.used, bu.b.limit)) : null,
        };
      });
      let idleTotal = new Decimal(0);
      for (const l of lines) idleTotal = idleTotal.plus(l.idle_hours);
      const groupBudget = config.budgets.groups[group];
      const byNet = compare('net');
      return {
        lines,
        summary: {
          group,
          from: iso(range.from),
          to: iso(range.to),
          currency: config.currency,
          attribution: statement.attribution,
          totals: {
            students: lines.length,
            hours: statement.total.hours,
            gross: statement.total.gross,
            net: statement.total.net,
            /** The group's share under the attribution rule; less than `net` when students are in several groups. */
            attributed: statement.groups.find((g) => g.group === group)?.net ?? '0.00',
            idle_hours: idleTotal.toFixed(4),
          },
          group_budget: groupBudget ? { limit: new Decimal(groupBudget.limit).toFixed(2), unit: groupBudget.unit, window: groupBudget.window === 'month' ? 'month' : `rolling-${groupBudget.days}d` } : null,
          by_day: breakdownOf(days, range).byDay,
          top: [...lines].sort((x, y) => byNet(y, x)).slice(0, TOP).map((l) => ({ user: l.user, hours: l.hours, net: l.net })),
          at_risk: lines
            .filter((l) => l.budget_percent !== null && l.budget_percent >= AT_RISK * 100)
            .sort((x, y) => y.budget_percent! - x.budget_percent! || (x.user < y.user ? -1 : 1))
            .slice(0, AT_RISK_MAX)
            .map((l) => ({ user: l.user, used: l.budget_used!, limit: l.budget_limit!, unit: l.budget_unit!, percent: l.budget_percent! })),
        },
      };
    });
  }

  /** Every student's line in a course, unpaginated (the CSV export). */
  async function courseLines(group: string, range: Range, now: number): Promise<StudentLine[]> {
    return (await courseData(group, range, now)).lines;
  }

  function compare(key: SortKey) {
    if (key === 'user') return (a: StudentLine, b: StudentLine) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0);
    return (a: StudentLine, b: StudentLine) => {
      const x = a[key] === null ? -1 : Number(a[key]);
      const y = b[key] === null ? -1 : Number(b[key]);
      return x - y || (a.user < b.user ? -1 : a.user > b.user ? 1 : 0);
    };
  }

  async function course(group: string, range: Range, now: number, page: { page: number; perPage: number; sort: SortKey; order: 'asc' | 'desc' }) {
    const { lines, summary } = await courseData(group, range, now);
    const cmp = compare(page.sort);
    const sorted = [...lines].sort(page.order === 'asc' ? cmp : (a, b) => cmp(b, a));
    const start = (page.page - 1) * page.perPage;
    return {
      ...summary,
      students: { total: lines.length, page: page.page, per_page: page.perPage, pages: Math.max(1, Math.ceil(lines.length / page.perPage)), sort: page.sort, order: page.order, rows: sorted.slice(start, start + page.perPage) },
    };
  }

  function hub(range: Range, now: number) {
    return cache.get(JSON.stringify(['hub', range.from, range.to]), () => hubData(range, now));
  }

  async function hubData(range: Range, now: number) {
    const mStart = monthStart(now);
    const mEnd = nextMonth(now);
    // One day-aligned load (so loadUsage can sum whole days in SQL) serves the statement and this
    // month's forecast; the charts are summed per day across users, and budgets read their own
    // windows. Independent loads, each on its own connection.
    // Users' budgets read the same load: it reaches back to the earliest window and is cut for each.
    const starts = [...new Set([config.budgets.default, ...Object.values(config.budgets.users)].flatMap((b) => (b ? [budgetWindowStart(b, now)] : [])))];
    const spanFrom = Math.min(monthStart(range.from), mStart, ...starts.map(dayStart));
    const spanTo = Math.max(range.to, dayStart(now) + DAY_MS);
    const cuts = [...new Set([range.from, range.to, mStart, ...starts.flatMap((s) => windowCuts(s, now))])];
    const [[usage, userBudgets], days, groupUsage, running] = await Promise.all([
      withoutJit(db, async (q) => {
        const all = await loadUsage(q, {}, { from: spanFrom, to: spanTo, now: new Date(now), cards, cuts });
        return [all, await budgetsOf(q, undefined, now, all)] as const;
      }),
      withoutJit(db, (q) => daily(q, {}, range, now, true)),
      // Like the quota API: usage recorded under that group, in the group budget's window.
      withoutJit(db, async (q) => {
        const out: { g: string; b: Budget; only: Usage }[] = [];
        for (const [g, b] of Object.entries(config.budgets.groups)) out.push({ g, b, only: await windowUsage(q, { groups: [g] }, budgetWindowStart(b, now), now) });
        return out;
      }),
      db.selectFrom('sessions').select((eb) => eb.fn.count<string>('user_name').distinct().as('n')).where('stopped', 'is', null).executeTakeFirst(),
    ]);
    const inRange: Usage = { sessionsByUser: usage.sessionsByUser, rolledByUser: usage.rolledByUser };
    const statement = statementOf(inRange, range);
    const rule = config.attribution.rule;
    const topGroups = new Set([...statement.groups].sort((a, b) => Number(b.net) - Number(a.net)).slice(0, GROUP_SERIES).map((g) => g.group));
    const one = new Decimal(1);
    // A day's cost goes to groups with the attribution rule's weights; small groups fold into "(other)".
    const chart = breakdownOf(days, range, (groups) => {
      if (groups.length === 0) return [{ name: '(no group)', weight: one }];
      const targets = rule === 'primary' ? [primaryGroup(groups, config.attribution.groupOrder)!] : groups;
      const w = rule === 'split' ? one.div(targets.length) : one;
      return targets.map((g) => ({ name: topGroups.has(g) ? g : '(other)', weight: w }));
    });

    // Forecast: this month's gross so far, at the same daily pace to the month's end.
    const t = new Tally();
    for (const list of usage.sessionsByUser.values()) for (const s of list) t.addSession(s, mStart, now, cards);
    for (const list of usage.rolledByUser.values()) for (const r of list) if (r.day >= mStart && r.day < now) t.addRolled(r, cards);
    const soFar = t.cost();
    const elapsed = now - mStart;
    const projected = elapsed > 0 ? soFar.times(mEnd - mStart).div(elapsed) : soFar;

    // Budgets at risk: each user's budget in its own window, and each group budget.
    const atRisk: { kind: 'user' | 'group'; subject: string; used: string; limit: string; unit: string; percent: number }[] = [];
    for (const [u, { b, used }] of userBudgets) {
      const r = ratio(used, b.limit);
      if (r >= AT_RISK) atRisk.push({ kind: 'user', subject: u, used: used.toFixed(2), limit: new Decimal(b.limit).toFixed(2), unit: b.unit, percent: percent(r) });
    }
    for (const { g, b, only } of groupUsage) {
      let used = new Decimal(0);
      for (const u of new Set([...only.sessionsByUser.keys(), ...only.rolledByUser.keys()])) used = used.plus(budgetUsed(b, u, only, now, cards));
      const r = ratio(used, b.limit);
      if (r >= AT_RISK) atRisk.push({ kind: 'group', subject: g, used: used.toFixed(2), limit: new Decimal(b.limit).toFixed(2), unit: b.unit, percent: percent(r) });
    }
    atRisk.sort((a, b) => b.percent - a.percent || (a.subject < b.subject ? -1 : 1));

    return {
      from: iso(range.from),
      to: iso(range.to),
      currency: config.currency,
      attribution: statement.attribution,
      totals: { users: statement.users.length, hours: statement.total.hours, gross: statement.total.gross, net: statement.total.net },
      active_users: { running_now: Number(running?.n ?? 0), by_day: chart.byDay.map((d, i) => ({ day: d.day, users: chart.active[i] ?? 0 })) },
      by_day: chart.byDay,
      cost_by_group: chart.byGroup,
      cost_by_profile: { ...chart.byProfile, totals: byProfile(inRange, range.from, range.to, cards) },
      groups: statement.groups,
      forecast: {
        month: iso(mStart).slice(0, 7),
        so_far: roundMoney(soFar).toFixed(2),
        projected: roundMoney(projected).toFixed(2),
        days_elapsed: Math.round((elapsed / DAY_MS) * 10) / 10,
        days_in_month: Math.round((mEnd - mStart) / DAY_MS),
      },
      budgets_at_risk: { total: atRisk.length, rows: atRisk.slice(0, AT_RISK_MAX) },
    };
  }

  return { student, course, courseLines, hub };
}
export type Views = ReturnType<typeof createViews>;
