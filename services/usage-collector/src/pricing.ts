/**
 * Pricing, statements and attribution: pure functions over sessions, all money in decimal.js.
 *
 * Rules (documented in hub/README-usage.md):
 * - A session is priced over its part inside the period; that part is split where a newer rate card
 *   takes effect, and each piece is rounded UP to its card's billing increment.
 * - The free allowance is per user per calendar month (UTC), spent in time order: the charge for a
 *   range inside a month is max(0, gross(monthStart, to) - A) - max(0, gross(monthStart, from) - A),
 *   so statements for adjacent ranges add up.
 * - A user's net for the period is rounded half-up to cents once; groups get shares of that rounded
 *   amount (split: whole cents, remainder cents to the first groups), so group lines add up exactly.
 */
import { Decimal } from 'decimal.js';
import type { RateCard, Resources } from './config.js';

export interface PricedSession {
  user: string;
  groups: readonly string[];
  profile: string | null;
  resources: Resources;
  start: Date;
  /** The stop (or `now` for open sessions). */
  end: Date;
}

export type AttributionRule = 'primary' | 'split' | 'full';

const HOUR = new Decimal(3600);
const CENTS = 2;

function cardStart(card: RateCard): number {
  return Date.parse(`${card.effectiveFrom}T00:00:00Z`);
}

/** Rate cards sorted by effective date, oldest first. */
export function sortCards(cards: readonly RateCard[]): RateCard[] {
  return [...cards].sort((a, b) => cardStart(a) - cardStart(b));
}

/** The card in force at `t`, or null when none has taken effect yet (such time is free). */
export function cardAt(sorted: readonly RateCard[], t: number): RateCard | null {
  let found: RateCard | null = null;
  for (const card of sorted) {
    if (cardStart(card) <= t) found = card;
    else break;
  }
  return found;
}

function hourlyPrice(card: RateCard, s: PricedSession): Decimal {
  if (card.mode === 'profile-hour') {
    const price = (s.profile !== null ? card.profileHour[s.profile] : undefined) ?? card.defaultProfileHour;
    return new Decimal(price);
  }
  // Without measured usage the request (guarantee) is the max(request, usage).
  const r = s.resources;
  return new Decimal(r.cpuGuarantee)
    .times(card.cpuHour)
    .plus(new Decimal(r.memGuaranteeGiB).times(card.gibHour))
    .plus(new Decimal(r.gpus).times(card.gpuHour));
}

export interface Priced {
  seconds: number;
  billedSeconds: number;
  cost: Decimal;
}

/** One session's cost inside [from, to). */
export function priceSession(s: PricedSession, from: number, to: number, sorted: readonly RateCard[]): Priced {
  const a = Math.max(s.start.getTime(), from);
  const b = Math.min(s.end.getTime(), to);
  if (b <= a) return { seconds: 0, billedSeconds: 0, cost: new Decimal(0) };
  // Piece boundaries: where a card takes effect inside (a, b).
  const cuts = [a, ...sorted.map(cardStart).filter((t) => t > a && t < b), b];
  let cost = new Decimal(0);
  let billed = 0;
  for (let i = 0; i + 1 < cuts.length; i += 1) {
    const p = cuts[i]!;
    const q = cuts[i + 1]!;
    const card = cardAt(sorted, p);
    const secs = (q - p) / 1000;
    if (!card) continue;
    const inc = card.incrementSeconds;
    const rounded = Math.ceil(secs / inc - 1e-9) * inc;
    billed += rounded;
    cost = cost.plus(hourlyPrice(card, s).times(rounded).div(HOUR));
  }
  return { seconds: (b - a) / 1000, billedSeconds: billed, cost };
}

export function monthStart(t: number): number {
  const d = new Date(t);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}
export function nextMonth(t: number): number {
  const d = new Date(t);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

function gross(sessions: readonly PricedSession[], from: number, to: number, sorted: readonly RateCard[]): Decimal {
  let sum = new Decimal(0);
  for (const s of sessions) sum = sum.plus(priceSession(s, from, to, sorted).cost);
  return sum;
}

function clampZero(d: Decimal): Decimal {
  return d.isNegative() ? new Decimal(0) : d;
}

export interface UserCharge {
  user: string;
  groups: string[];
  seconds: number;
  gross: Decimal;
  /** Allowance used up inside the period. */
  allowance: Decimal;
  /** Exact (unrounded) charge after the allowance. */
  netExact: Decimal;
}

/**
 * One user's charge for [from, to). `sessions` must include every session of the user that overlaps
 * [monthStart(from), to) so the allowance spent earlier in the month is known.
 */
export function chargeUser(user: string, sessions: readonly PricedSession[], from: number, to: number, sorted: readonly RateCard[]): UserCharge {
  let grossSum = new Decimal(0);
  let net = new Decimal(0);
  let seconds = 0;
  for (let m = monthStart(from); m < to; m = nextMonth(m)) {
    const a = Math.max(from, m);
    const b = Math.min(to, nextMonth(m));
    const card = cardAt(sorted, m) ?? cardAt(sorted, a);
    const allowance = new Decimal(card?.freeAllowancePerMonth ?? 0);
    const before = gross(sessions, m, a, sorted);
    const upto = before.plus(gross(sessions, a, b, sorted));
    grossSum = grossSum.plus(upto.minus(before));
    net = net.plus(clampZero(upto.minus(allowance)).minus(clampZero(before.minus(allowance))));
  }
  for (const s of sessions) seconds += Math.max(0, (Math.min(s.end.getTime(), to) - Math.max(s.start.getTime(), from)) / 1000);
  const latest = [...sessions].sort((x, y) => y.start.getTime() - x.start.getTime())[0];
  return { user, groups: [...(latest?.groups ?? [])], seconds, gross: grossSum, allowance: grossSum.minus(net), netExact: net };
}

export function roundMoney(d: Decimal): Decimal {
  return d.toDecimalPlaces(CENTS, Decimal.ROUND_HALF_UP);
}

export function primaryGroup(groups: readonly string[], order: readonly string[]): string | null {
  for (const g of order) if (groups.includes(g)) return g;
  return [...groups].sort()[0] ?? null;
}

/** Shares of a rounded amount for each group; the shares always add up to the amount except for `full`. */
export function attribute(amount: Decimal, groups: readonly string[], rule: AttributionRule, order: readonly string[]): Map<string, Decimal> {
  const out = new Map<string, Decimal>();
  if (groups.length === 0) return out;
  if (rule === 'full') {
    for (const g of groups) out.set(g, amount);
    return out;
  }
  if (rule === 'primary') {
    out.set(primaryGroup(groups, order)!, amount);
    return out;
  }
  // Even split in whole cents; leftover cents go one each to the groups first in order.
  const ordered = [...groups].sort((a, b) => {
    const ia = order.indexOf(a);
    const ib = order.indexOf(b);
    if (ia !== ib) return (ia < 0 ? Infinity : ia) - (ib < 0 ? Infinity : ib);
    return a < b ? -1 : a > b ? 1 : 0;
  });
  const cents = amount.times(100);
  const each = cents.divToInt(ordered.length);
  let rest = cents.minus(each.times(ordered.length)).toNumber();
  for (const g of ordered) {
    const share = rest > 0 ? each.plus(1) : each;
    if (rest > 0) rest -= 1;
    out.set(g, share.div(100));
  }
  return out;
}

export interface StatementLine {
  user: string;
  groups: string[];
  hours: string;
  gross: string;
  allowance: string;
  net: string;
}
export interface GroupLine {
  group: string;
  users: number;
  net: string;
  /** True under the `full` rule: the same money also appears in other groups' lines. */
  overlapping: boolean;
}
export interface Statement {
  from: string;
  to: string;
  currency: string;
  attribution: AttributionRule;
  users: StatementLine[];
  groups: GroupLine[];
  /** Money of users in no group (primary and split rules). */
  unattributed: string;
  /** Always the sum of the user lines, whatever the rule: group lines never feed it. */
  total: { hours: string; gross: string; net: string };
}

export function hoursOf(seconds: number): string {
  return new Decimal(seconds).div(HOUR).toDecimalPlaces(4, Decimal.ROUND_HALF_UP).toFixed(4);
}

export function buildStatement(opts: {
  sessionsByUser: Map<string, PricedSession[]>;
  from: number;
  to: number;
  cards: readonly RateCard[];
  currency: string;
  rule: AttributionRule;
  order: readonly string[];
  /** Only these groups get lines (an instructor's view); all when undefined. */
  onlyGroups?: ReadonlySet<string>;
}): Statement {
  const sorted = sortCards(opts.cards);
  const users: StatementLine[] = [];
  const groupTotals = new Map<string, { net: Decimal; users: number }>();
  let total = { seconds: 0, gross: new Decimal(0), net: new Decimal(0) };
  let unattributed = new Decimal(0);
  const names = [...opts.sessionsByUser.keys()].sort();
  for (const name of names) {
    const charge = chargeUser(name, opts.sessionsByUser.get(name)!, opts.from, opts.to, sorted);
    if (charge.seconds === 0) continue;
    const net = roundMoney(charge.netExact);
    users.push({
      user: name,
      groups: charge.groups,
      hours: hoursOf(charge.seconds),
      gross: roundMoney(charge.gross).toFixed(CENTS),
      allowance: roundMoney(charge.gross).minus(net).toFixed(CENTS),
      net: net.toFixed(CENTS),
    });
    total = { seconds: total.seconds + charge.seconds, gross: total.gross.plus(roundMoney(charge.gross)), net: total.net.plus(net) };
    const shares = attribute(net, charge.groups, opts.rule, opts.order);
    if (shares.size === 0) unattributed = unattributed.plus(net);
    for (const [g, share] of shares) {
      const t = groupTotals.get(g) ?? { net: new Decimal(0), users: 0 };
      groupTotals.set(g, { net: t.net.plus(share), users: t.users + 1 });
    }
  }
  const groups = [...groupTotals.entries()]
    .filter(([g]) => !opts.onlyGroups || opts.onlyGroups.has(g))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([group, t]) => ({ group, users: t.users, net: t.net.toFixed(CENTS), overlapping: opts.rule === 'full' }));
  return {
    from: new Date(opts.from).toISOString(),
    to: new Date(opts.to).toISOString(),
    currency: opts.currency,
    attribution: opts.rule,
    users,
    groups,
    unattributed: unattributed.toFixed(CENTS),
    total: { hours: hoursOf(total.seconds), gross: total.gross.toFixed(CENTS), net: total.net.toFixed(CENTS) },
  };
}
