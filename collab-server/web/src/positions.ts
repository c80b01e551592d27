// Fractional cell positions: base-62 strings compared as plain strings, never
// ending in "0"; the same midpoint rule as the server's schema::position_between.

const DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const value = (c: string | undefined) => (c === undefined ? -1 : DIGITS.indexOf(c));

function midpoint(a: string, b: string | null): string {
  if (b !== null) {
    let n = 0;
    while (n < b.length && (a[n] ?? "0") === b[n]) n++;
    if (n > 0) return b.slice(0, n) + midpoint(n <= a.length ? a.slice(n) : "", b.slice(n));
  }
  const da = Math.max(value(a[0]), 0);
  const db = b !== null && b.length > 0 ? value(b[0]) : DIGITS.length;
  if (db - da > 1) return DIGITS[Math.floor((da + db) / 2)];
  if (b !== null && b.length > 1) return b[0];
  return DIGITS[da] + midpoint(a.slice(1), null);
}

/** A position strictly between `before` and `after` (either may be absent). */
export function positionBetween(before: string | null, after: string | null): string {
  const a = before ?? "";
  if (after !== null && a >= after) return positionBetween(before, null);
  return midpoint(a, after);
}
