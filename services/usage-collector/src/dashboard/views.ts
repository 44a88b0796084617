/**
 * The three dashboards' data: one student, one course (group), the whole hub. Each loads its usage
 * with a bounded number of queries whatever the number of students, through the same `loadUsage`
 * and pricing as the statement and usage APIs, so the figures agree with them.
 */
import { Decimal } from 'decimal.js';
import type { Kysely } from 'kysely';
import { evaluateBudgets, quotaFrom } from '../budgets.js';
import { entryOf } from '../config.js';
import type { Budget, UsageCollectorConfig } from '../config.js';
import { DAY_MS, buildStatement, chargeUser, dayStart, hoursOf, monthStart, nextMonth, primaryGroup, priceSession, roundMoney, sortCards, Tally } from '../pricing.js';
import type { SessionsRepository } from '../sessions-repository.js';
import { loadUsage } from '../usage-source.js';
import type { LoadedUsage, UsageFilter } from '../usage-source.js';
import type { UsageDB } from '../usage.table.js';
import { budgetUsed, budgetWindowStart, byProfile, dailyBreakdown, daysOf, percent, ratio, runsOut, userBudget } from './aggregate.js';
import type { Usage } from './aggregate.js';
import { createViewCache } from './cache.js';
import type { ViewCache } from './cache.js';
import { loadActiveUsers, loadDaily } from './daily-source.js';
import type { DailyUsage } from './daily-source.js';
import { reportQuery } from './report-query.js';

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

const ZERO = new Decimal(0);

/** A budget's limit as shown and as a decimal, read once per budget (budgets are not changed once parsed). */
const limits = new WeakMap<Budget, { text: string; value: Decimal }>();
function limitOf(b: Budget): { text: string; value: Decimal } {
  let l = limits.get(b);
  if (!l) {
    const value = new Decimal(b.limit);
    limits.set(b, (l = { text: value.toFixed(2), value }));
  }
  return l;
}

/**
 * The course's lines sorted by each key and direction, each order computed once (on first use) and
 * kept with the lines: figures are parsed once per sort, not once per comparison. Ties go by user.
 */
function sortedOrders(lines: readonly StudentLine[]) {
  const memo = new Map<string, StudentLine[]>();
  return (key: SortKey, order: 'asc' | 'desc'): StudentLine[] => {
    const id = `${key}:${order}`;
    let out = memo.get(id);
    if (out) return out;
    const byUser = (a: StudentLine, b: StudentLine) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0);
    const dir = order === 'asc' ? 1 : -1;
    if (key === 'user') out = [...lines].sort((a, b) => dir * byUser(a, b));
    else {
      // A line without a budget sorts below every figure.
      const keyed = lines.map((l) => ({ l, v: l[key] === null ? -1 : Number(l[key]) }));
      keyed.sort((a, b) => dir * (a.v - b.v || byUser(a.l, b.l)));
      out = keyed.map((x) => x.l);
    }
    memo.set(id, out);
    return out;
  };
}

export function createViews(db: Kysely<UsageDB>, repo: SessionsRepository, config: UsageCollectorConfig, cache: ViewCache = createViewCache(db, { ttlMs: 0 })) {
  const cards = sortCards(config.rateCards);

  /**
   * Usage for a range plus the same month before it (the allowance is spent in time order). Cut at
   * every day for a per-user chart (`byDay`); many users' charts read `daily` instead, so the
   * statement's load stays a few rows per user.
   */
  function load(q: Kysely<UsageDB>, filter: UsageFilter, range: Range, now: number, byDay: boolean, idle = false): Promise<LoadedUsage> {
    const cuts = byDay ? [range.from, ...daysOf(range.from, range.to)] : [range.from];
    return loadUsage(q, filter, { from: monthStart(range.from), to: range.to, now: new Date(now), cards, cuts, ...(idle ? { idleFrom: range.from } : {}) });
  }

  /** Many users' per-day figures, summed across users in SQL (see daily-source.ts). */
  function daily(q: Kysely<UsageDB>, filter: UsageFilter, range: Range, now: number): Promise<DailyUsage> {
    return loadDaily(q, filter, { from: range.from, to: range.to, now: new Date(now), cards });
  }

  /** A chart of many users: `dailyBreakdown` over day lines, with the active users (when known) counted in SQL. */
  function breakdownOf(d: DailyUsage, range: Range, weights?: Parameters<typeof dailyBreakdown>[4], active?: Map<number, number>) {
    const out = dailyBreakdown(d.usage, range.from, range.to, cards, weights);
    out.active = daysOf(range.from, range.to).map((day) => active?.get(day) ?? 0);
    return out;
  }

  /**
   * Usage in a budget window [start, now), summed in SQL (loadUsage cuts the window's first day at
   * `start`). Nothing before the window is read: a month window starts at its month's start, and a
   * rolling one counts the gross and hours inside it, which the month's earlier usage does not change.
   */
  /** The part of `usage` recorded under each of `groups` (what a `{ groups: [g] }` load gives, for many g at once). */
  function splitByGroup(usage: Usage, groups: ReadonlySet<string>): Map<string, Usage> {
    const out = new Map<string, Usage>();
    const of = (g: string) => {
      let u = out.get(g);
      if (!u) out.set(g, (u = { sessionsByUser: new Map(), rolledByUser: new Map() }));
      return u;
    };
    for (const [user, list] of usage.sessionsByUser) {
      for (const s of list) {
        for (const g of s.groups) {
          if (!groups.has(g)) continue;
          const m = of(g).sessionsByUser;
          const l = m.get(user);
          if (l) l.push(s);
          else m.set(user, [s]);
        }
      }
    }
    for (const [user, list] of usage.rolledByUser) {
      for (const r of list) {
        for (const g of r.groups) {
          if (!groups.has(g)) continue;
          const m = of(g).rolledByUser;
          const l = m.get(user);
          if (l) l.push(r);
          else m.set(user, [r]);
        }
      }
    }
    return out;
  }

  function windowUsage(q: Kysely<UsageDB>, filter: UsageFilter, start: number, now: number): Promise<Usage> {
    return loadUsage(q, filter, { from: start, to: dayStart(now) + DAY_MS, now: new Date(now), cards, cuts: [monthStart(now), dayStart(now)] });
  }

  /**
   * Everyone's budget use: each user with usage in their budget's window, in that window, with one
   * load per distinct window (users without usage there used nothing). A student's budget counts
   * their usage in every course, so one computation serves every course's page and the hub's, and
   * is kept like the views (see cache.ts): the figures are as of the last poll.
   */
  function budgets(now: number): Promise<Map<string, { b: Budget; used: Decimal }>> {
    return cache.get('["budgets"]', () =>
      reportQuery(db, async (q) => {
        const windows = new Set<number>();
        for (const b of [config.budgets.default, ...Object.values(config.budgets.users)]) if (b) windows.add(budgetWindowStart(b, now));
        const out = new Map<string, { b: Budget; used: Decimal }>();
        for (const start of windows) {
          const usage = await windowUsage(q, {}, start, now);
          for (const u of new Set([...usage.sessionsByUser.keys(), ...usage.rolledByUser.keys()])) {
            const b = userBudget(config, u);
            if (!b || budgetWindowStart(b, now) !== start) continue;
            out.set(u, { b, used: budgetUsed(b, u, usage, now, cards) });
          }
        }
        return out;
      }),
    );
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
    const usage = await reportQuery(db, (q) => load(q, { users: [user] }, range, now, true));
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
      // Independent loads, each on its own connection.
      const filter = { groups: [group] };
      // The statement's load also sums each student's idle time (seconds after their last activity).
      const [[statement, idle], used, days] = await Promise.all([
        reportQuery(db, (q) => load(q, filter, range, now, false, true)).then((usage) => [statementOf(usage, range, new Set([group])), usage.idleByUser ?? new Map<string, number>()] as const),
        budgets(now),
        reportQuery(db, (q) => daily(q, filter, range, now)),
      ]);
      const lines: StudentLine[] = statement.users.map((l) => {
        const b = userBudget(config, l.user);
        // Nothing in the budget's window: nothing used.
        const bu = used.get(l.user) ?? (b ? { b, used: ZERO } : undefined);
        return {
          user: l.user,
          hours: l.hours,
          gross: l.gross,
          net: l.net,
          idle_hours: hoursOf(idle.get(l.user) ?? 0),
          budget_used: bu ? bu.used.toFixed(2) : null,
          budget_limit: bu ? limitOf(bu.b).text : null,
          budget_unit: bu ? bu.b.unit : null,
          budget_percent: bu ? percent(ratio(bu.used, limitOf(bu.b).value)) : null,
        };
      });
      // The total of the rounded figures shown, in whole ten-thousandths of an hour (exact).
      let idleTotal = 0;
      for (const l of lines) idleTotal += Number(l.idle_hours.replace('.', ''));
      const groupBudget = entryOf(config.budgets.groups, group);
      const orders = sortedOrders(lines);
      return {
        lines,
        orders,
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
            idle_hours: `${Math.floor(idleTotal / 10_000)}.${String(idleTotal % 10_000).padStart(4, '0')}`,
          },
          group_budget: groupBudget ? { limit: new Decimal(groupBudget.limit).toFixed(2), unit: groupBudget.unit, window: groupBudget.window === 'month' ? 'month' : `rolling-${groupBudget.days}d` } : null,
          by_day: breakdownOf(days, range).byDay,
          top: orders('net', 'desc').slice(0, TOP).map((l) => ({ user: l.user, hours: l.hours, net: l.net })),
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

  async function course(group: string, range: Range, now: number, page: { page: number; perPage: number; sort: SortKey; order: 'asc' | 'desc' }) {
    const { lines, orders, summary } = await courseData(group, range, now);
    const sorted = orders(page.sort, page.order);
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
    // month's forecast; the charts and active users are summed per day across users; users'
    // budgets are shared with the course pages (see `budgets`). Independent loads, each on its own
    // connection.
    const spanFrom = Math.min(monthStart(range.from), mStart);
    const spanTo = Math.max(range.to, dayStart(now) + DAY_MS);
    const cuts = [...new Set([range.from, range.to, mStart])];
    const [usage, userBudgets, days, active, groupUsage, running] = await Promise.all([
      reportQuery(db, (q) => loadUsage(q, {}, { from: spanFrom, to: spanTo, now: new Date(now), cards, cuts })),
      budgets(now),
      reportQuery(db, (q) => daily(q, {}, range, now)),
      reportQuery(db, (q) => loadActiveUsers(q, {}, { from: range.from, to: range.to, now: new Date(now), cards })),
      // Like the quota API: usage recorded under that group, in the group budget's window.
      // One whole-hub load per distinct window, split by group here: one query per group budget
      // made this view take 37 s with 5,000 of them.
      reportQuery(db, async (q) => {
        const byStart = new Map<number, [string, Budget][]>();
        for (const [g, b] of Object.entries(config.budgets.groups)) {
          const start = budgetWindowStart(b, now);
          const list = byStart.get(start) ?? [];
          list.push([g, b]);
          byStart.set(start, list);
        }
        const out: { g: string; b: Budget; only: Usage }[] = [];
        for (const [start, list] of byStart) {
          const all = await windowUsage(q, {}, start, now);
          const per = splitByGroup(all, new Set(list.map(([g]) => g)));
          for (const [g, b] of list) out.push({ g, b, only: per.get(g) ?? { sessionsByUser: new Map(), rolledByUser: new Map() } });
        }
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
    }, active);

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
