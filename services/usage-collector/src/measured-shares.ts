/**
 * Turns per-user measured samples into per-session "use above the request", so that resource-hour
 * cards can price max(request, measured use) per sample interval.
 *
 * Samples are per user (all of a user's pods summed), sessions per server. Within one sample
 * interval the user's measured use is shared among the sessions running in it in proportion to their
 * requests (evenly when none requests anything). Each session is then billed max(request, share):
 * summed over the sessions that is exactly max(sum of requests, measured use), with no double count.
 * Only sessions still held raw take part: once a session is rolled up, its extras are fixed.
 */
import { Decimal } from 'decimal.js';
import type { MeasuredExtra, PricedSession } from './pricing.js';

export interface MeasuredSample {
  /** End of the interval (ms); the interval is [at - windowSeconds, at). */
  at: number;
  windowSeconds: number;
  cpuSeconds: number;
  memoryWorkingSetBytes: number;
}

const GIB = new Decimal(2).pow(30);

function shares(usage: Decimal, requests: readonly Decimal[]): Decimal[] {
  const total = requests.reduce((a, b) => a.plus(b), new Decimal(0));
  if (total.isZero()) return requests.map(() => usage.div(requests.length));
  return requests.map((r) => usage.times(r).div(total));
}

/** Returns the sessions (of one user) with `extras` set from that user's samples. */
export function withMeasuredExtras(sessions: readonly PricedSession[], samples: readonly MeasuredSample[]): PricedSession[] {
  if (samples.length === 0) return [...sessions];
  const extras = sessions.map((): MeasuredExtra[] => []);
  for (const sample of samples) {
    if (!(sample.windowSeconds > 0)) continue;
    const from = sample.at - sample.windowSeconds * 1000;
    const to = sample.at;
    const running = sessions.map((s, i) => [s, i] as const).filter(([s]) => s.start.getTime() < to && s.end.getTime() > from);
    if (running.length === 0) continue;
    // String() keeps the shortest decimal that round-trips the stored double: no binary noise.
    const cores = new Decimal(String(sample.cpuSeconds)).div(sample.windowSeconds);
    const gib = new Decimal(String(sample.memoryWorkingSetBytes)).div(GIB);
    const cpuReq = running.map(([s]) => new Decimal(s.resources.cpuGuarantee));
    const memReq = running.map(([s]) => new Decimal(s.resources.memGuaranteeGiB));
    const cpuShare = shares(cores, cpuReq);
    const memShare = shares(gib, memReq);
    running.forEach(([, i], k) => {
      const cpu = Decimal.max(0, cpuShare[k]!.minus(cpuReq[k]!));
      const mem = Decimal.max(0, memShare[k]!.minus(memReq[k]!));
      if (!cpu.isZero() || !mem.isZero()) extras[i]!.push({ from, to, cpu, gib: mem });
    });
  }
  return sessions.map((s, i) => (extras[i]!.length ? { ...s, extras: extras[i]! } : s));
}
