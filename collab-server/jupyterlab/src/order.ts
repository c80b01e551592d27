/**
 * Cell order, shared by both directions of the binding: the collaboration server
 * orders a notebook's cells by fractional positions (base-62 strings compared as
 * plain strings, never ending in "0", the same rule as the server's
 * `schema::position_between`), JupyterLab by their index in a list.
 */

const DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const value = (c: string | undefined) => (c === undefined ? -1 : DIGITS.indexOf(c));

function midpoint(a: string, b: string | null): string {
  if (b !== null) {
    let n = 0;
    while (n < b.length && (a[n] ?? '0') === b[n]) {
      n++;
    }
    if (n > 0) {
      return b.slice(0, n) + midpoint(n <= a.length ? a.slice(n) : '', b.slice(n));
    }
  }
  const da = Math.max(value(a[0]), 0);
  const db = b !== null && b.length > 0 ? value(b[0]) : DIGITS.length;
  if (db - da > 1) {
    return DIGITS[Math.floor((da + db) / 2)];
  }
  if (b !== null && b.length > 1) {
    return b[0];
  }
  return DIGITS[da] + midpoint(a.slice(1), null);
}

/** A position strictly between `before` and `after` (either may be absent). */
export function positionBetween(before: string | null, after: string | null): string {
  const a = before ?? '';
  if (after !== null && a >= after) {
    return positionBetween(before, null);
  }
  return midpoint(a, after);
}

/** Ids sorted by position, ties by id: the order every client shows. */
export function byPosition(positions: Map<string, string>): string[] {
  return [...positions.entries()]
    .sort((a, b) =>
      a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0
    )
    .map(([id]) => id);
}

/**
 * The items of `sequence` to leave where they are so that it can become `target`
 * by moving the others: the longest subsequence already in `target`'s order.
 * Moving only the rest keeps a collaborator's move from moving every cell under
 * someone's cursor.
 */
export function stayPut(sequence: string[], target: string[]): Set<string> {
  const rank = new Map(target.map((id, i) => [id, i]));
  const items = sequence.filter(id => rank.has(id));
  // Patience sorting: tails[k] is the index (in items) ending the best run of k+1.
  const tails: number[] = [];
  const previous = new Array<number>(items.length).fill(-1);
  items.forEach((id, i) => {
    const r = rank.get(id) as number;
    let lo = 0;
    let hi = tails.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((rank.get(items[tails[mid]]) as number) < r) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    previous[i] = lo > 0 ? tails[lo - 1] : -1;
    tails[lo] = i;
  });
  const keep = new Set<string>();
  for (let i = tails.length ? tails[tails.length - 1] : -1; i >= 0; i = previous[i]) {
    keep.add(items[i]);
  }
  return keep;
}
