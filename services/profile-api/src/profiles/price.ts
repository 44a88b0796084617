/**
 * The hourly price of a selection as a decimal string: the profile's price plus each chosen
 * choice's, summed in millionths so 0.05 + 0.1 is "0.15", not 0.15000000000000002. Saved prices
 * have at most six decimal places, so this is exact. `null` when nothing in the selection has a
 * price. The spawn page runs this very function (its source is sent to the browser), so the
 * price shown is the price resolve reports and the hub records for billing.
 *
 * Self-contained on purpose: no imports, no outer names, because its source text is reused.
 */
export function priceText(parts: ReadonlyArray<number | null | undefined>): string | null {
  let micros = 0;
  let priced = false;
  for (const p of parts) {
    if (typeof p !== 'number' || !Number.isFinite(p)) continue;
    priced = true;
    micros += Math.round(p * 1e6);
  }
  if (!priced) return null;
  const whole = Math.floor(micros / 1e6);
  const frac = String(micros % 1e6).padStart(6, '0').replace(/0+$/, '');
  return frac ? `${whole}.${frac}` : String(whole);
}
