/** Pricing, allowance and attribution: exact decimals, hand-computed figures, and properties. */
import { Decimal } from 'decimal.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { configSchema, pollIntervalMs } from '../src/config.js';
import { attribute, buildStatement, centsOf, chargeUser, formatCents, hoursOf, priceSession, sortCards } from '../src/pricing.js';
import type { AttributionRule, PricedSession } from '../src/pricing.js';

const card = (over: Record<string, unknown>) => configSchema.parse({ rateCards: [{ id: 'x', effectiveFrom: '2026-01-01', ...over }] }).rateCards[0]!;
const res = { cpuGuarantee: 2, cpuLimit: 4, memGuaranteeGiB: 8, memLimitGiB: 16, gpus: 1 };
const T = (s: string) => Date.parse(s);
const session = (start: string, end: string, over: Partial<PricedSession> = {}): PricedSession => ({
  user: 'u',
  groups: [],
  profile: 'small',
  resources: res,
  start: new Date(start),
  end: new Date(end),
  ...over,
});

describe('pricing', () => {
  it('prices per profile-hour with the billing increment rounding up', () => {
    const cards = sortCards([card({ profileHour: { small: '0.10' }, incrementSeconds: 900 })]);
    // 16 minutes → two 15-minute increments → 0.5 h × 0.10.
    const p = priceSession(session('2026-03-01T00:00:00Z', '2026-03-01T00:16:00Z'), T('2026-03-01T00:00:00Z'), T('2026-04-01T00:00:00Z'), cards);
    expect(p.billedSeconds).toBe(1800);
    expect(p.cost.toFixed()).toBe('0.05');
  });

  it('prices per CPU-, GiB- and GPU-hour of the request', () => {
    const cards = sortCards([card({ mode: 'resource-hour', cpuHour: '0.031', gibHour: '0.0042', gpuHour: '0.9', incrementSeconds: 1 })]);
    const p = priceSession(session('2026-03-01T00:00:00Z', '2026-03-01T02:00:00Z'), 0, T('2030-01-01T00:00:00Z'), cards);
    // 2 h × (2×0.031 + 8×0.0042 + 1×0.9) = 2 × 0.9956
    expect(p.cost.toFixed()).toBe('1.9912');
  });

  it('switches rate card at its effective date, inside a session', () => {
    const cards = sortCards([
      configSchema.parse({ rateCards: [{ id: 'old', effectiveFrom: '2026-01-01', profileHour: { small: '1' }, incrementSeconds: 1 }] }).rateCards[0]!,
      configSchema.parse({ rateCards: [{ id: 'new', effectiveFrom: '2026-02-01', profileHour: { small: '2' }, incrementSeconds: 1 }] }).rateCards[0]!,
    ]);
    const p = priceSession(session('2026-01-31T23:00:00Z', '2026-02-01T01:00:00Z'), 0, T('2030-01-01T00:00:00Z'), cards);
    expect(p.cost.toFixed()).toBe('3');
  });

  it('never uses binary floats: 0.1 + 0.2 style sums are exact', () => {
    const cards = sortCards([card({ profileHour: { small: '0.1' }, incrementSeconds: 3600 })]);
    const sessions = [session('2026-03-01T00:00:00Z', '2026-03-01T01:00:00Z'), session('2026-03-02T00:00:00Z', '2026-03-02T02:00:00Z')];
    const c = chargeUser('u', sessions, T('2026-03-01T00:00:00Z'), T('2026-04-01T00:00:00Z'), cards);
    expect(c.gross.toFixed()).toBe('0.3');
  });

  it('spends the monthly allowance in time order, so adjacent ranges add up to the month', () => {
    const cards = sortCards([card({ profileHour: { small: '1' }, incrementSeconds: 1, freeAllowancePerMonth: '1.5' })]);
    const sessions = [session('2026-03-01T00:00:00Z', '2026-03-01T01:00:00Z'), session('2026-03-10T00:00:00Z', '2026-03-10T02:00:00Z')];
    const month = chargeUser('u', sessions, T('2026-03-01T00:00:00Z'), T('2026-04-01T00:00:00Z'), cards);
    const first = chargeUser('u', sessions, T('2026-03-01T00:00:00Z'), T('2026-03-05T00:00:00Z'), cards);
    const rest = chargeUser('u', sessions, T('2026-03-05T00:00:00Z'), T('2026-04-01T00:00:00Z'), cards);
    expect(month.netExact.toFixed()).toBe('1.5');
    expect(first.netExact.toFixed()).toBe('0');
    expect(rest.netExact.toFixed()).toBe('1.5');
  });
});

describe('attribution of a user in several groups', () => {
  const cards = sortCards([card({ profileHour: { small: '1' }, incrementSeconds: 1 })]);
  const sessionsByUser = new Map([
    ['ann', [session('2026-03-01T00:00:00Z', '2026-03-01T10:00:00Z', { user: 'ann', groups: ['a', 'b', 'c'] })]],
    ['ben', [session('2026-03-01T00:00:00Z', '2026-03-01T01:00:00Z', { user: 'ben', groups: ['b'] })]],
  ]);
  const statement = (rule: AttributionRule, order: string[] = []) =>
    buildStatement({ sessionsByUser, from: T('2026-03-01T00:00:00Z'), to: T('2026-04-01T00:00:00Z'), cards, currency: 'EUR', rule, order });

  it('primary: all to the first group in the configured order', () => {
    const s = statement('primary', ['c']);
    expect(s.groups).toEqual([
      { group: 'b', users: 1, net: '1.00', overlapping: false },
      { group: 'c', users: 1, net: '10.00', overlapping: false },
    ]);
    expect(s.total.net).toBe('11.00');
  });

  it('split: whole cents, remainder to the first groups, summing to the total', () => {
    const s = statement('split');
    expect(s.groups.map((g) => [g.group, g.net])).toEqual([
      ['a', '3.34'],
      ['b', '4.33'],
      ['c', '3.33'],
    ]);
    expect(s.total.net).toBe('11.00');
  });

  it('full: every group shows the whole amount, flagged, and the total is not their sum', () => {
    const s = statement('full');
    expect(s.groups.every((g) => g.overlapping)).toBe(true);
    expect(s.groups.map((g) => g.net)).toEqual(['10.00', '11.00', '10.00']);
    expect(s.total.net).toBe('11.00');
  });

  it('property: primary and split shares always add up to the amount exactly', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 10_000_000 }),
        fc.uniqueArray(fc.string({ minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 7 }),
        fc.constantFrom<AttributionRule>('primary', 'split'),
        (cents, groups, rule) => {
          const amount = new Decimal(cents).div(100);
          const shares = attribute(amount, groups, rule, []);
          const sum = [...shares.values()].reduce((a, b) => a.plus(b), new Decimal(0));
          expect(sum.equals(amount)).toBe(true);
          for (const v of shares.values()) expect(v.decimalPlaces()).toBeLessThanOrEqual(2);
        },
      ),
    );
  });

  it('property: hours of any whole microseconds (summed as doubles or not) are the exact decimal rounding', () => {
    const exact = (us: number) => new Decimal(us).div(3_600_000_000).toDecimalPlaces(4, Decimal.ROUND_HALF_UP).toFixed(4);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 4_000_000_000_000 }), { minLength: 1, maxLength: 40 }), fc.integer({ min: 0, max: 2_000 }), (parts, ties) => {
        // Sums of pieces as doubles, as the database and Tally add them up.
        const us = parts.reduce((a, b) => a + b, 0);
        expect(hoursOf(parts.reduce((a, b) => a + b / 1e6, 0))).toBe(exact(us));
        // Exact ties (half of a ten-thousandth of an hour) round up.
        expect(hoursOf((ties * 360_000 + 180_000) / 1e6)).toBe(exact(ties * 360_000 + 180_000));
      }),
    );
    // Not whole microseconds: the decimal path.
    expect(hoursOf(0.0000004)).toBe('0.0000');
    expect(hoursOf(36e300)).toMatch(/^10{298}\.0000$/);
  });

  it('property: whole cents convert to and from rounded money exactly, as decimals print it', () => {
    fc.assert(
      fc.property(fc.integer({ min: -9_000_000_000_000_000, max: 9_000_000_000_000_000 }), (cents) => {
        const amount = new Decimal(cents).div(100);
        expect(formatCents(cents)).toBe(amount.toFixed(2));
        expect(centsOf(amount)).toBe(cents);
      }),
    );
  });

  it('property: a session priced over a range equals the sum over any split of the range (increment 1 s)', () => {
    const cards1 = sortCards([card({ profileHour: { small: '0.37' }, incrementSeconds: 1 })]);
    const base = T('2026-03-01T00:00:00Z');
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 86_400 }), fc.integer({ min: 1, max: 86_400 }), fc.integer({ min: 0, max: 172_800 }), (startS, lenS, cutS) => {
        const s = session(new Date(base + startS * 1000).toISOString(), new Date(base + (startS + lenS) * 1000).toISOString());
        const whole = priceSession(s, base, base + 200_000_000, cards1).cost;
        const cut = base + cutS * 1000;
        const parts = priceSession(s, base, cut, cards1).cost.plus(priceSession(s, cut, base + 200_000_000, cards1).cost);
        // Hours are seconds / 3600, a repeating decimal: equal far below a cent (20 significant digits).
        expect(parts.toDecimalPlaces(12).equals(whole.toDecimalPlaces(12))).toBe(true);
      }),
    );
  });
});

describe('configuration', () => {
  it('HUBSIDE_POLL_INTERVAL overrides pollSeconds, and a bad value names the variable', () => {
    const cfg = configSchema.parse({ pollSeconds: 45 });
    expect(pollIntervalMs(cfg, {})).toBe(45_000);
    expect(pollIntervalMs(cfg, { HUBSIDE_POLL_INTERVAL: '2.5' })).toBe(2500);
    expect(() => pollIntervalMs(cfg, { HUBSIDE_POLL_INTERVAL: 'soon' })).toThrow(/HUBSIDE_POLL_INTERVAL/);
    expect(() => pollIntervalMs(cfg, { HUBSIDE_POLL_INTERVAL: '0' })).toThrow(/HUBSIDE_POLL_INTERVAL/);
  });

  it('rejects money as a float-y or negative value, naming the field', () => {
    const r = configSchema.safeParse({ rateCards: [{ id: 'x', effectiveFrom: '2026-01-01', profileHour: { small: '-1' } }] });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues[0]?.path)).toBe('["rateCards",0,"profileHour","small"]');
    expect(configSchema.safeParse({ rateCards: [{ id: 'a', effectiveFrom: '2026-01-01' }, { id: 'b', effectiveFrom: '2026-01-01' }] }).success).toBe(false);
  });
});
