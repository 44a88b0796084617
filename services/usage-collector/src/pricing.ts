/**
 * Pricing, statements and attribution: pure functions over sessions, all money in decimal.js.
 *
 * Rules (documented in hub/README-usage.md):
 * - A session is priced over its part inside the period; that part is split at UTC midnights (cards
 *   take effect at midnight, so each piece has one card) and each piece is rounded UP to its card's
 *   billing increment. Rollups store exactly these pieces, so raw and rolled-up days price the same.
 * - Resource-hour cards price max(request, measured use) per sample interval: the request for the
 *   rounded time, plus the measured use above the request for its exact time.
 * - The free allowance is per user per calendar month (UTC), spent in time order: the charge for a
 *   range inside a month is max(0, gross(monthStart, to) - A) - max(0, gross(monthStart, from) - A),
 *   so statements for adjacent ranges add up.
 * - A user's net for the period is rounded half-up to cents once; groups get shares of that rounded
 *   amount (split: whole cents, remainder cents to the first groups), so group lines add up exactly.
 */
import { Decimal } from 'decimal.js';
import { entryOf } from './config.js';
import type { RateCard, Resources } from './config.js';

export interface PricedSession {
  user: string;
  groups: readonly string[];
  profile: string | null;
  resources: Resources;
  start: Date;
  /** The stop (or `now` for open sessions). */
  end: Date;
  /** Measured use above this session's request, per sample interval (see measured-shares.ts). */
  extras?: readonly MeasuredExtra[];
  /** The server's last reported activity, when known: it ran idle from then on. */
  lastActivity?: Date | null;
}

/** Over [from, to) the session used `cpu` cores and `gib` GiB more than it requested. */
export interface MeasuredExtra {
  from: number;
  to: number;
  cpu: Decimal;
  gib: Decimal;
}

/**
 * Usage that was rolled up (daily_usage): time already split into UTC-day pieces, each piece
 * rounded up to the increment of the card of its day, and summed. A line may cover several days
 * of one segment (see usage-source.ts) as long as they share a card, a month and a range.
 */
export interface RolledUsage {
  /** Start (ms) of the first UTC day covered: it decides the card, the month and the range it counts in. */
  day: number;
  profile: string | null;
  resources: Resources;
  seconds: number;
  billedSeconds: number;
  /** Core-seconds and GiB-seconds of measured use above the request. */
  cpuExtra: Decimal;
  gibExtra: Decimal;
  /** Sessions (or, in a segment, session-days) folded into the line. */
  sessions: number;
  groups: readonly string[];
}

export type AttributionRule = 'primary' | 'split' | 'full';

const HOUR = new Decimal(3600);
const CENTS = 2;
export const DAY_MS = 86_400_000;

// Pricing a whole hub asks for each card's start and prices hundreds of thousands of times.
const starts = new WeakMap<RateCard, number>();
const prices = new WeakMap<RateCard, Map<string, Decimal>>();

function cardStart(card: RateCard): number {
  let t = starts.get(card);
  if (t === undefined) starts.set(card, (t = Date.parse(`${card.effectiveFrom}T00:00:00Z`)));
  return t;
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

/** Start of the UTC day of `t`. Cards take effect at midnight, so one card prices a whole day. */
export function dayStart(t: number): number {
  return Math.floor(t / DAY_MS) * DAY_MS;
}

/** A card's hourly price of a request, remembered per card (cards are not changed once parsed). */
function requestPrice(card: RateCard, profile: string | null, r: Resources): Decimal {
  let byKey = prices.get(card);
  if (!byKey) prices.set(card, (byKey = new Map()));
  const key =
    card.mode === 'profile-hour'
      ? r.pricePerHour !== undefined
        ? `h\u0000${r.pricePerHour}`
        : `p\u0000${profile ?? ''}`
      : `r\u0000${r.cpuGuarantee}\u0000${r.memGuaranteeGiB}\u0000${r.gpus}`;
  let price = byKey.get(key);
  if (!price) byKey.set(key, (price = computePrice(card, profile, r)));
  return price;
}

function computePrice(card: RateCard, profile: string | null, r: Resources): Decimal {
  if (card.mode === 'profile-hour') {
    // The price the spawn page showed, recorded by the hub's pre-spawn hook, is the price billed.
    if (r.pricePerHour !== undefined && /^\d{1,12}(\.\d{1,10})?$/.test(r.pricePerHour)) return new Decimal(r.pricePerHour);
    const price = (profile !== null ? entryOf(card.profileHour, profile) : undefined) ?? card.defaultProfileHour;
    return new Decimal(price);
  }
  return new Decimal(r.cpuGuarantee)
    .times(card.cpuHour)
    .plus(new Decimal(r.memGuaranteeGiB).times(card.gibHour))
    .plus(new Decimal(r.gpus).times(card.gpuHour));
}

/** Rounds a piece up to the card's billing increment. */
export function billedSecondsOf(seconds: number, card: RateCard): number {
  const inc = card.incrementSeconds;
  return Math.ceil(seconds / inc - 1e-9) * inc;
}

export interface DayPiece {
  /** Start (ms) of the UTC day. */
  day: number;
  card: RateCard | null;
  seconds: number;
  billedSeconds: number;
  /** Core-seconds and GiB-seconds of measured use above the request (resource-hour cards only). */
  cpuExtra: Decimal;
  gibExtra: Decimal;
}

const ZERO = new Decimal(0);

/**
 * A session's time inside [from, to), cut at UTC midnights. Both statements from raw sessions and
 * the daily rollups are made of these pieces, which is why both give the same money.
 */
export function dayPieces(s: PricedSession, from: number, to: number, sorted: readonly RateCard[]): DayPiece[] {
  const a = Math.max(s.start.getTime(), from);
  const b = Math.min(s.end.getTime(), to);
  const out: DayPiece[] = [];
  for (let day = dayStart(a); day < b; day += DAY_MS) {
    const p = Math.max(a, day);
    const q = Math.min(b, day + DAY_MS);
    if (q <= p) continue;
    const card = cardAt(sorted, day);
    const seconds = (q - p) / 1000;
    let cpuExtra = ZERO;
    let gibExtra = ZERO;
    if (s.extras && card?.mode === 'resource-hour') {
      for (const e of s.extras) {
        const overlap = Math.min(q, e.to) - Math.max(p, e.from);
        if (overlap <= 0) continue;
        const secs = new Decimal(overlap).div(1000);
        cpuExtra = cpuExtra.plus(e.cpu.times(secs));
        gibExtra = gibExtra.plus(e.gib.times(secs));
      }
    }
    out.push({ day, card, seconds, billedSeconds: card ? billedSecondsOf(seconds, card) : 0, cpuExtra, gibExtra });
  }
  return out;
}

/**
 * Sums usage by (card, profile, priced resources) in whole billed seconds, and measured extras per
 * card, so that money is multiplied out once per bucket: exact, and cheap for many sessions.
 */
export class Tally {
  seconds = 0;
  billedSeconds = 0;
  private readonly buckets = new Map<string, { card: RateCard; profile: string | null; resources: Resources; billed: number }>();
  private readonly extras = new Map<RateCard, { cpu: Decimal; gib: Decimal }>();

  add(card: RateCard | null, profile: string | null, resources: Resources, seconds: number, billed: number): void {
    this.seconds += seconds;
    if (!card || billed === 0) return;
    this.billedSeconds += billed;
    // A recorded spawn price is its own bucket: two sessions of one profile may have been sold at two prices.
    const key =
      card.mode === 'profile-hour'
        ? `${card.id}\u0000${profile ?? ''}\u0000${resources.pricePerHour ?? ''}`
        : `${card.id}\u0000${resources.cpuGuarantee}\u0000${resources.memGuaranteeGiB}\u0000${resources.gpus}`;
    const b = this.buckets.get(key);
    if (b) b.billed += billed;
    else this.buckets.set(key, { card, profile, resources, billed });
  }

  /** Core-seconds and GiB-seconds above the request; only resource-hour cards price them. */
  addExtra(card: RateCard | null, cpu: Decimal, gib: Decimal): void {
    if (!card || card.mode !== 'resource-hour' || (cpu.isZero() && gib.isZero())) return;
    const e = this.extras.get(card);
    if (e) this.extras.set(card, { cpu: e.cpu.plus(cpu), gib: e.gib.plus(gib) });
    else this.extras.set(card, { cpu, gib });
  }

  /** Every UTC-day piece of a session inside [from, to), each rounded up to its card's increment. */
  addSession(s: PricedSession, from: number, to: number, sorted: readonly RateCard[]): void {
    for (const piece of dayPieces(s, from, to, sorted)) {
      this.add(piece.card, s.profile, s.resources, piece.seconds, piece.billedSeconds);
      this.addExtra(piece.card, piece.cpuExtra, piece.gibExtra);
    }
  }

  addRolled(r: RolledUsage, sorted: readonly RateCard[]): void {
    const card = cardAt(sorted, r.day);
    this.add(card, r.profile, r.resources, r.seconds, r.billedSeconds);
    this.addExtra(card, r.cpuExtra, r.gibExtra);
  }

  cost(): Decimal {
    // Starting from the first term, not from zero: the same sum with one Decimal fewer (x + 0 is x).
    let sum: Decimal | undefined;
    for (const b of this.buckets.values()) {
      const term = requestPrice(b.card, b.profile, b.resources).times(b.billed).div(HOUR);
      sum = sum ? sum.plus(term) : term;
    }
    for (const [card, e] of this.extras) {
      const term = e.cpu.times(card.cpuHour).plus(e.gib.times(card.gibHour)).div(HOUR);
      sum = sum ? sum.plus(term) : term;
    }
    return sum ?? ZERO;
  }
}

export interface Priced {
  seconds: number;
  billedSeconds: number;
  cost: Decimal;
}

/**
 * One session's cost inside [from, to). Resource-hour cards price max(request, measured use) per
 * sample interval: the request for the (rounded) time, plus measured use above it for its exact time.
 */
export function priceSession(s: PricedSession, from: number, to: number, sorted: readonly RateCard[]): Priced {
  const t = new Tally();
  t.addSession(s, from, to, sorted);
  return { seconds: t.seconds, billedSeconds: t.billedSeconds, cost: t.cost() };
}

export function monthStart(t: number): number {
  const d = new Date(t);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}
export function nextMonth(t: number): number {
  const d = new Date(t);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

/** A rolled-up line counts in the range that holds the start of its day. */
function rolledIn(r: RolledUsage, from: number, to: number): boolean {
  return r.day >= from && r.day < to;
}

function tallyOf(sessions: readonly PricedSession[], rolled: readonly RolledUsage[], from: number, to: number, sorted: readonly RateCard[]): Tally {
  const t = new Tally();
  if (to <= from) return t;
  for (const s of sessions) t.addSession(s, from, to, sorted);
  for (const r of rolled) if (rolledIn(r, from, to)) t.addRolled(r, sorted);
  return t;
}

function clampZero(d: Decimal): Decimal {
  return d.isNegative() ? ZERO : d;
}

const allowances = new WeakMap<RateCard, Decimal>();
function allowanceOf(card: RateCard | null): Decimal {
  if (!card) return ZERO;
  let a = allowances.get(card);
  if (!a) allowances.set(card, (a = new Decimal(card.freeAllowancePerMonth ?? 0)));
  return a;
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
 * One user's charge for [from, to). `sessions` (raw) and `rolled` (daily rollups) must include all
 * of the user's usage in [monthStart(from), to) so the allowance spent earlier in the month is known.
 */
export function chargeUser(
  user: string,
  sessions: readonly PricedSession[],
  from: number,
  to: number,
  sorted: readonly RateCard[],
  rolled: readonly RolledUsage[] = [],
): UserCharge {
  let grossSum = ZERO;
  let net = ZERO;
  let seconds = 0;
  for (let m = monthStart(from), next = nextMonth(m); m < to; m = next, next = nextMonth(m)) {
    const a = Math.max(from, m);
    const b = Math.min(to, next);
    const allowance = allowanceOf(cardAt(sorted, m) ?? cardAt(sorted, a));
    const inside = tallyOf(sessions, rolled, a, b, sorted);
    seconds += inside.seconds;
    const insideCost = inside.cost();
    const before = a === m ? ZERO : tallyOf(sessions, rolled, m, a, sorted).cost();
    if (before.isZero()) {
      // Nothing charged before the period in this month: the general case below with before = 0,
      // whose terms are exactly these (x + 0 and x - 0 are x; 0 - allowance clamps to 0). Decimals
      // are most of a hub statement's time, so the common case skips the ones that add nothing.
      grossSum = grossSum.plus(insideCost);
      net = net.plus(clampZero(insideCost.minus(allowance)));
      continue;
    }
    const upto = before.plus(insideCost);
    grossSum = grossSum.plus(upto.minus(before));
    net = net.plus(clampZero(upto.minus(allowance)).minus(clampZero(before.minus(allowance))));
  }
  let groups: readonly string[] = [];
  let latest = -Infinity;
  for (const s of sessions) if (s.start.getTime() > latest) [latest, groups] = [s.start.getTime(), s.groups];
  if (sessions.length === 0) for (const r of rolled) if (r.day > latest) [latest, groups] = [r.day, r.groups];
  return { user, groups: [...groups], seconds, gross: grossSum, allowance: grossSum.minus(net), netExact: net };
}

export function roundMoney(d: Decimal): Decimal {
  return d.toDecimalPlaces(CENTS, Decimal.ROUND_HALF_UP);
}

export function primaryGroup(groups: readonly string[], order: readonly string[]): string | null {
  for (const g of order) if (groups.includes(g)) return g;
  return [...groups].sort()[0] ?? null;
}

/**
 * Money rounded to cents as a whole number of cents, and back. A statement adds up its users'
 * rounded amounts in whole cents: exact (up to 2^53 cents, about 90 trillion), and much cheaper
 * than decimals for a hub of thousands of users.
 */
export function centsOf(rounded: Decimal): number {
  // The digits without the point: no binary fraction on the way.
  return Number(rounded.toFixed(CENTS).replace('.', ''));
}
export function formatCents(cents: number): string {
  const abs = Math.abs(cents);
  return `${cents < 0 ? '-' : ''}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, '0')}`;
}

/** Shares, in whole cents, of an amount in whole cents for each group; they always add up to the amount except for `full`. */
export function attributeCents(cents: number, groups: readonly string[], rule: AttributionRule, order: readonly string[]): Map<string, number> {
  const out = new Map<string, number>();
  if (groups.length === 0) return out;
  if (rule === 'full') {
    for (const g of groups) out.set(g, cents);
    return out;
  }
  if (rule === 'primary') {
    out.set(primaryGroup(groups, order)!, cents);
    return out;
  }
  // Even split in whole cents; leftover cents go one each to the groups first in order.
  const ordered = [...groups].sort((a, b) => {
    const ia = order.indexOf(a);
    const ib = order.indexOf(b);
    if (ia !== ib) return (ia < 0 ? Infinity : ia) - (ib < 0 ? Infinity : ib);
    return a < b ? -1 : a > b ? 1 : 0;
  });
  const each = Math.floor(cents / ordered.length);
  let rest = cents - each * ordered.length;
  for (const g of ordered) {
    out.set(g, rest > 0 ? each + 1 : each);
    if (rest > 0) rest -= 1;
  }
  return out;
}

/** Shares of a rounded amount for each group; the shares always add up to the amount except for `full`. */
export function attribute(amount: Decimal, groups: readonly string[], rule: AttributionRule, order: readonly string[]): Map<string, Decimal> {
  const out = new Map<string, Decimal>();
  for (const [g, c] of attributeCents(centsOf(amount), groups, rule, order)) out.set(g, new Decimal(formatCents(c)));
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

/** Hours to four decimals, rounded half up. */
export function hoursOf(seconds: number): string {
  // Times are measured to the microsecond at most, so seconds are whole microseconds (a sum of
  // doubles may be off by far less): then integers give the exact answer, much faster than decimals.
  const us = Math.round(seconds * 1e6);
  if (us >= 0 && Number.isSafeInteger(us) && Math.abs(seconds * 1e6 - us) < 1e-3) {
    const q = Math.floor(us / 360_000);
    const t = (us - q * 360_000) * 2 >= 360_000 ? q + 1 : q;
    return `${Math.floor(t / 10_000)}.${String(t % 10_000).padStart(4, '0')}`;
  }
  return new Decimal(seconds).div(HOUR).toDecimalPlaces(4, Decimal.ROUND_HALF_UP).toFixed(4);
}

export function buildStatement(opts: {
  sessionsByUser: Map<string, PricedSession[]>;
  /** Rolled-up usage per user, for days whose raw sessions are gone. */
  rolledByUser?: Map<string, RolledUsage[]>;
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
  // Money below is in whole cents (see centsOf).
  const groupTotals = new Map<string, { net: number; users: number }>();
  const total = { seconds: 0, gross: 0, net: 0 };
  let unattributed = 0;
  const names = [...new Set([...opts.sessionsByUser.keys(), ...(opts.rolledByUser?.keys() ?? [])])].sort();
  for (const name of names) {
    const charge = chargeUser(name, opts.sessionsByUser.get(name) ?? [], opts.from, opts.to, sorted, opts.rolledByUser?.get(name) ?? []);
    if (charge.seconds === 0) continue;
    const net = centsOf(roundMoney(charge.netExact));
    const gross = centsOf(roundMoney(charge.gross));
    users.push({
      user: name,
      groups: charge.groups,
      hours: hoursOf(charge.seconds),
      gross: formatCents(gross),
      allowance: formatCents(gross - net),
      net: formatCents(net),
    });
    total.seconds += charge.seconds;
    total.gross += gross;
    total.net += net;
    const shares = attributeCents(net, charge.groups, opts.rule, opts.order);
    if (shares.size === 0) unattributed += net;
    for (const [g, share] of shares) {
      const t = groupTotals.get(g);
      if (t) {
        t.net += share;
        t.users += 1;
      } else groupTotals.set(g, { net: share, users: 1 });
    }
  }
  const groups = [...groupTotals.entries()]
    .filter(([g]) => !opts.onlyGroups || opts.onlyGroups.has(g))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([group, t]) => ({ group, users: t.users, net: formatCents(t.net), overlapping: opts.rule === 'full' }));
  return {
    from: new Date(opts.from).toISOString(),
    to: new Date(opts.to).toISOString(),
    currency: opts.currency,
    attribution: opts.rule,
    users,
    groups,
    unattributed: formatCents(unattributed),
    total: { hours: hoursOf(total.seconds), gross: formatCents(total.gross), net: formatCents(total.net) },
  };
}
