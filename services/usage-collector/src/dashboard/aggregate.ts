/**
 * The numbers behind the dashboards, as pure functions over what `loadUsage` returns (raw sessions
 * and daily rollups). Money goes through pricing.ts's Tally, so a dashboard figure is priced
 * exactly as the statement and usage APIs price it, never summed as floats.
 */
import { Decimal } from 'decimal.js';
import { entryOf } from '../config.js';
import type { Budget, RateCard, UsageCollectorConfig } from '../config.js';

/** Days ahead a budget's run-out date is projected; further out it is shown as not running out. */
export const RUN_OUT_HORIZON_DAYS = 366;
import { DAY_MS, Tally, chargeUser, dayPieces, dayStart, hoursOf, monthStart, nextMonth, roundMoney } from '../pricing.js';
import type { PricedSession, RolledUsage } from '../pricing.js';

export interface Usage {
  sessionsByUser: Map<string, PricedSession[]>;
  rolledByUser: Map<string, RolledUsage[]>;
}

export interface DayPoint {
  day: string;
  hours: string;
  cost: string;
}

/** Every UTC day start in [from, to). */
export function daysOf(from: number, to: number): number[] {
  const out: number[] = [];
  for (let d = dayStart(from); d < to; d += DAY_MS) out.push(d);
  return out;
}

export interface DailyBreakdown {
  /** One point per UTC day of the range. */
  byDay: DayPoint[];
  /** Per day, distinct users with any usage. */
  active: number[];
  /** Per day, cost by profile. */
  byProfile: { days: string[]; series: { name: string; costs: string[] }[] };
  /** Per day, cost by group under the attribution `weights`. */
  byGroup: { days: string[]; series: { name: string; costs: string[] }[] };
}

/**
 * Every per-day figure of the dashboards in one pass over the usage: pieces are summed into
 * Tallies (billed seconds per card and profile) keyed by day, day+profile and day+group set, and
 * money is multiplied out once per Tally at the end, so the cost grows with the number of
 * sessions only through cheap additions. Rollups must be loaded with a cut at every day.
 */
export function dailyBreakdown(
  usage: Usage,
  from: number,
  to: number,
  cards: readonly RateCard[],
  weights: (groups: readonly string[]) => readonly { name: string; weight: Decimal }[] = () => [],
): DailyBreakdown {
  const days = daysOf(from, to);
  const first = days[0] ?? dayStart(from);
  const n = days.length;
  const total = days.map(() => new Tally());
  const active = days.map(() => new Set<string>());
  const byProfile = new Map<string, Tally[]>();
  const byGroups = new Map<string, { groups: readonly string[]; tallies: Tally[] }>();
  const slot = <K>(map: Map<K, Tally[]>, key: K) => {
    let t = map.get(key);
    if (!t) map.set(key, (t = days.map(() => new Tally())));
    return t;
  };
  const groupSlot = (groups: readonly string[]) => {
    const key = groups.join('\u0000');
    let e = byGroups.get(key);
    if (!e) byGroups.set(key, (e = { groups, tallies: days.map(() => new Tally()) }));
    return e.tallies;
  };
  for (const [user, sessions] of usage.sessionsByUser) {
    for (const s of sessions) {
      const a = Math.max(from, s.start.getTime());
      const b = Math.min(to, s.end.getTime());
      if (b <= a) continue;
      const prof = slot(byProfile, s.profile ?? '(none)');
      const grp = groupSlot(s.groups);
      for (const piece of dayPieces(s, a, b, cards)) {
        const i = (piece.day - first) / DAY_MS;
        if (i < 0 || i >= n) continue;
        for (const t of [total[i]!, prof[i]!, grp[i]!]) {
          t.add(piece.card, s.profile, s.resources, piece.seconds, piece.billedSeconds);
          t.addExtra(piece.card, piece.cpuExtra, piece.gibExtra);
        }
        active[i]!.add(user);
      }
    }
  }
  for (const [user, lines] of usage.rolledByUser) {
    for (const r of lines) {
      if (r.day < from || r.day >= to) continue;
      const i = (dayStart(r.day) - first) / DAY_MS;
      if (i < 0 || i >= n) continue;
      for (const t of [total[i]!, slot(byProfile, r.profile ?? '(none)')[i]!, groupSlot(r.groups)[i]!]) t.addRolled(r, cards);
      active[i]!.add(user);
    }
  }
  const labels = days.map((d) => new Date(d).toISOString().slice(0, 10));
  const money = (xs: readonly Decimal[]) => xs.map((x) => roundMoney(x).toFixed(2));
  const groupCosts = new Map<string, Decimal[]>();
  for (const { groups, tallies } of byGroups.values()) {
    const costs = tallies.map((t) => t.cost());
    for (const w of weights(groups)) {
      let line = groupCosts.get(w.name);
      if (!line) groupCosts.set(w.name, (line = days.map(() => new Decimal(0))));
      costs.forEach((c, i) => (line![i] = line![i]!.plus(c.times(w.weight))));
    }
  }
  return {
    byDay: days.map((_, i) => ({ day: labels[i]!, hours: hoursOf(total[i]!.seconds), cost: roundMoney(total[i]!.cost()).toFixed(2) })),
    active: active.map((x) => x.size),
    byProfile: { days: labels, series: [...byProfile].map(([name, ts]) => ({ name, costs: money(ts.map((t) => t.cost())) })) },
    byGroup: { days: labels, series: [...groupCosts].map(([name, xs]) => ({ name, costs: money(xs) })) },
  };
}

export interface ProfileLine {
  profile: string;
  hours: string;
  cost: string;
}

export function byProfile(usage: Usage, from: number, to: number, cards: readonly RateCard[]): ProfileLine[] {
  const acc = new Map<string, Tally>();
  const tallyFor = (p: string | null) => {
    const k = p ?? '(none)';
    let t = acc.get(k);
    if (!t) acc.set(k, (t = new Tally()));
    return t;
  };
  for (const sessions of usage.sessionsByUser.values()) for (const s of sessions) tallyFor(s.profile).addSession(s, from, to, cards);
  for (const lines of usage.rolledByUser.values()) for (const r of lines) if (r.day >= from && r.day < to) tallyFor(r.profile).addRolled(r, cards);
  return [...acc.entries()]
    .filter(([, t]) => t.seconds > 0)
    .map(([profile, t]) => ({ profile, seconds: t.seconds, cost: t.cost() }))
    .sort((x, y) => y.cost.comparedTo(x.cost) || y.seconds - x.seconds)
    .map((l) => ({ profile: l.profile, hours: hoursOf(l.seconds), cost: roundMoney(l.cost).toFixed(2) }));
}

/** The start of a budget's window at `now`, as budgets.ts counts it. */
export function budgetWindowStart(b: Budget, now: number): number {
  return b.window === 'month' ? monthStart(now) : now - b.days * DAY_MS;
}

/** What a budget counts for one user in its window: the quota API's rule (budgets.ts). */
export function budgetUsed(b: Budget, user: string, usage: Usage, now: number, cards: readonly RateCard[]): Decimal {
  const start = budgetWindowStart(b, now);
  const c = chargeUser(user, usage.sessionsByUser.get(user) ?? [], start, now, cards, usage.rolledByUser.get(user) ?? []);
  if (b.unit === 'hours') return new Decimal(hoursOf(c.seconds));
  return roundMoney(b.window === 'month' ? c.netExact : c.gross);
}

export function ratio(used: Decimal, limit: string | Decimal): number {
  const l = typeof limit === 'string' ? new Decimal(limit) : limit;
  if (l.isZero()) return used.isZero() ? 1 : Number.POSITIVE_INFINITY;
  return used.div(l).toNumber();
}

export function percent(r: number): number {
  return Number.isFinite(r) ? Math.round(r * 1000) / 10 : 9999;
}

export function userBudget(config: UsageCollectorConfig, user: string): Budget | undefined {
  return entryOf(config.budgets.users, user) ?? config.budgets.default;
}

/**
 * When a budget runs out at its pace so far, or null when it won't inside the window (a month
 * budget resets at the month's end).
 */
export function runsOut(b: Budget, used: Decimal, now: number): string | null {
  const start = budgetWindowStart(b, now);
  const limit = new Decimal(b.limit);
  if (used.gte(limit)) return new Date(now).toISOString();
  const elapsed = now - start;
  if (used.isZero() || elapsed <= 0) return null;
  const at = now + limit.minus(used).div(used.div(elapsed)).toNumber();
  if (b.window === 'month' && at >= nextMonth(now)) return null;
  // A projection beyond a year says nothing (and far enough out is no date at all: +050342-11-06, then a RangeError).
  if (!Number.isFinite(at) || at - now > RUN_OUT_HORIZON_DAYS * DAY_MS) return null;
  return new Date(Math.round(at)).toISOString();
}
