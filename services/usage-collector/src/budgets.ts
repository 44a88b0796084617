import { Decimal } from 'decimal.js';
import type { Kysely } from 'kysely';
import type { FastifyBaseLogger } from 'fastify';
import { entryOf } from './config.js';
import type { Budget, UsageCollectorConfig } from './config.js';
import { chargeUser, hoursOf, monthStart, nextMonth, roundMoney, sortCards } from './pricing.js';
import { loadUsage } from './usage-source.js';
import type { UsageDB } from './usage.table.js';

export interface Quota {
  allow_server_launch: boolean;
  used: string;
  limit: string | null;
  unit: 'currency' | 'hours' | null;
  window: string | null;
  message: string;
}

interface Evaluated {
  subjectKind: 'user' | 'group';
  subject: string;
  budget: Budget;
  used: Decimal;
  windowStart: Date;
  ratio: number;
}

function windowOf(b: Budget, now: Date): { start: Date; label: string } {
  if (b.window === 'month') {
    const start = new Date(monthStart(now.getTime()));
    return { start, label: `month:${start.toISOString().slice(0, 7)}` };
  }
  const start = new Date(now.getTime() - b.days * 86_400_000);
  return { start, label: `rolling:${b.days}d` };
}

async function usedFor(db: Kysely<UsageDB>, config: UsageCollectorConfig, b: Budget, sel: { users?: string[]; groups?: string[] }, now: Date): Promise<{ used: Decimal; start: Date }> {
  const { start } = windowOf(b, now);
  const cards = sortCards(config.rateCards);
  // A month budget needs the month's earlier usage anyway (the allowance is spent from its start).
  const { sessionsByUser, rolledByUser } = await loadUsage(db, sel, { from: monthStart(start.getTime()), to: now.getTime(), now, cards, cuts: [start.getTime()] });
  let used = new Decimal(0);
  for (const user of new Set([...sessionsByUser.keys(), ...rolledByUser.keys()])) {
    const c = chargeUser(user, sessionsByUser.get(user) ?? [], start.getTime(), now.getTime(), cards, rolledByUser.get(user) ?? []);
    // A month budget counts what the user is charged (after the free allowance); a rolling one the gross.
    used = used.plus(b.unit === 'hours' ? new Decimal(hoursOf(c.seconds)) : b.window === 'month' ? c.netExact : c.gross);
  }
  return { used: b.unit === 'hours' ? used : roundMoney(used), start };
}

/** Every budget that applies to a user: their own (or the default) and each of their groups'. */
export async function evaluateBudgets(
  source: Kysely<UsageDB> | { db: Kysely<UsageDB> },
  config: UsageCollectorConfig,
  user: string,
  groups: readonly string[],
  now: Date,
): Promise<Evaluated[]> {
  // A sessions repository is accepted too (its callers predate the rollups).
  const db = 'db' in source && !('selectFrom' in source) ? source.db : (source as Kysely<UsageDB>);
  const out: Evaluated[] = [];
  const own = entryOf(config.budgets.users, user) ?? config.budgets.default;
  if (own) {
    const { used, start } = await usedFor(db, config, own, { users: [user] }, now);
    out.push({ subjectKind: 'user', subject: user, budget: own, used, windowStart: start, ratio: ratioOf(used, own) });
  }
  for (const g of groups) {
    const b = entryOf(config.budgets.groups, g);
    if (!b) continue;
    const { used, start } = await usedFor(db, config, b, { groups: [g] }, now);
    out.push({ subjectKind: 'group', subject: g, budget: b, used, windowStart: start, ratio: ratioOf(used, b) });
  }
  return out;
}

function ratioOf(used: Decimal, b: Budget): number {
  const limit = new Decimal(b.limit);
  if (limit.isZero()) return used.isZero() ? 1 : Infinity;
  return used.div(limit).toNumber();
}

function fmt(e: Evaluated, currency: string): string {
  const unit = e.budget.unit === 'hours' ? 'hours' : currency;
  const win = e.budget.window === 'month' ? 'this month' : `in the last ${e.budget.days} days`;
  return `${e.subjectKind === 'user' ? 'Your' : `Group ${JSON.stringify(e.subject)}'s`} usage ${win} is ${e.used.toFixed(2)} of ${new Decimal(e.budget.limit).toFixed(2)} ${unit}`;
}

export function quotaFrom(evaluated: readonly Evaluated[], currency: string): Quota {
  if (evaluated.length === 0) {
    return { allow_server_launch: true, used: '0.00', limit: null, unit: null, window: null, message: 'No budget applies.' };
  }
  // The budget closest to (or furthest past) its limit decides.
  const worst = [...evaluated].sort((a, b) => b.ratio - a.ratio)[0]!;
  const over = worst.ratio >= 1;
  return {
    allow_server_launch: !over,
    used: worst.used.toFixed(2),
    limit: new Decimal(worst.budget.limit).toFixed(2),
    unit: worst.budget.unit,
    window: worst.budget.window === 'month' ? 'month' : `rolling-${worst.budget.days}d`,
    message: over ? refusal(worst, currency) : `${fmt(worst, currency)}.`,
  };
}

/**
 * What a student reads on the spawn page when the hub refuses a server (the hook passes it on
 * verbatim): whose budget, how much of it, when it frees up, and whom to ask.
 */
function refusal(e: Evaluated, currency: string): string {
  const unit = e.budget.unit === 'hours' ? 'hours' : currency;
  const amount = `${e.used.toFixed(2)} of ${new Decimal(e.budget.limit).toFixed(2)} ${unit}`;
  const whose = e.subjectKind === 'user' ? 'You have used' : `Your group ${JSON.stringify(e.subject)} has used`;
  const when =
    e.budget.window === 'month'
      ? `this month, so no new server can be started until the budget renews on ${new Date(nextMonth(e.windowStart.getTime())).toISOString().slice(0, 10)} (UTC)`
      : `in the last ${e.budget.days} days, so no new server can be started until older usage leaves that ${e.budget.days}-day window`;
  return `${whose} ${amount} ${when}: the budget is used up. If you need more, ask your instructor or a hub admin.`;
}

/** Record 75/90/100 % warnings once per subject, threshold and window; POST new ones to the webhook. */
export async function recordWarnings(
  db: Kysely<UsageDB>,
  config: UsageCollectorConfig,
  evaluated: readonly Evaluated[],
  now: Date,
  log: FastifyBaseLogger,
): Promise<number> {
  let fresh = 0;
  for (const e of evaluated) {
    const label = e.budget.window === 'month' ? windowOf(e.budget, now).label : `rolling:${e.budget.days}d:${now.toISOString().slice(0, 10)}`;
    for (const t of config.budgets.warnAt) {
      if (e.ratio * 100 < t) continue;
      const inserted = await db
        .insertInto('budget_events')
        .values({
          subject_kind: e.subjectKind,
          subject: e.subject,
          threshold: t,
          window_start: label,
          used: e.used.toFixed(2),
          limit_value: new Decimal(e.budget.limit).toFixed(2),
          unit: e.budget.unit,
          at: now,
        })
        .onConflict((oc) => oc.constraint('budget_events_once').doNothing())
        .returning('id')
        .executeTakeFirst();
      if (!inserted) continue;
      fresh += 1;
      if (config.budgets.webhook) {
        const body = { event: 'budget.threshold', subject_kind: e.subjectKind, subject: e.subject, threshold: t, used: e.used.toFixed(2), limit: e.budget.limit, unit: e.budget.unit, window: label, at: now.toISOString() };
        // Best effort: the event row is the record, the webhook only a notification.
        await fetch(config.budgets.webhook, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(5000) }).catch((err: unknown) =>
          log.warn({ err: String(err) }, 'budget webhook failed'),
        );
      }
    }
  }
  return fresh;
}

/**
 * Budget events, all or only those of the given users and groups. A subject is its kind and its
 * name together: a user named like a group (`chem-201`) never sees the group's events.
 */
export async function listEvents(db: Kysely<UsageDB>, opts: { only?: { users: readonly string[]; groups: readonly string[] } } = {}) {
  let q = db.selectFrom('budget_events').selectAll().orderBy('id');
  if (opts.only) {
    const { users, groups } = opts.only;
    if (users.length === 0 && groups.length === 0) return [];
    q = q.where((eb) =>
      eb.or([
        ...(users.length ? [eb.and([eb('subject_kind', '=', 'user'), eb('subject', 'in', [...users])])] : []),
        ...(groups.length ? [eb.and([eb('subject_kind', '=', 'group'), eb('subject', 'in', [...groups])])] : []),
      ]),
    );
  }
  const rows = await q.limit(1000).execute();
  return rows.map((r) => ({ subject_kind: r.subject_kind, subject: r.subject, threshold: r.threshold, window: r.window_start, used: r.used, limit: r.limit_value, unit: r.unit, at: new Date(r.at).toISOString() }));
}

