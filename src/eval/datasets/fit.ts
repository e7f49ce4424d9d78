/**
 * Finding how much haystack fits a token budget. Token counts are only nearly additive
 * (merges across unit boundaries), so the answer is found by measuring, not by arithmetic.
 */

/**
 * Largest unit count n in [minUnits, maxUnits] with lengthOf(n) ≤ budget, assuming lengthOf
 * grows with n. Starts from `hint` (e.g. the previous sample's answer) or from a secant
 * estimate, brackets the answer with growing steps, then bisects — typically 6–12 calls.
 * Returns null when even `minUnits` does not fit.
 *
 * @example
 * // 7 tokens of template plus 3 tokens per unit, budget 100 → 31 units
 * largestFitting((n) => 7 + 3 * n, 100, 1); // 31
 */
export function largestFitting(
  lengthOf: (units: number) => number,
  budget: number,
  minUnits: number,
  opts: { hint?: number; maxUnits?: number } = {},
): number | null {
  const maxUnits = opts.maxUnits ?? Number.MAX_SAFE_INTEGER;
  const memo = new Map<number, number>();
  const fits = (n: number): boolean => {
    let len = memo.get(n);
    if (len === undefined) {
      len = lengthOf(n);
      memo.set(n, len);
    }
    return len <= budget;
  };

  if (!fits(minUnits)) return null;
  if (maxUnits <= minUnits) return minUnits;

  let guess: number;
  if (opts.hint !== undefined) {
    guess = opts.hint;
  } else {
    const probe = Math.min(maxUnits, minUnits * 2 + 8);
    const l0 = memo.get(minUnits)!;
    fits(probe);
    const l1 = memo.get(probe)!;
    const slope = (l1 - l0) / (probe - minUnits);
    guess = slope > 0 ? probe + Math.floor((budget - l1) / slope) : probe * 2;
  }
  guess = Math.min(maxUnits, Math.max(minUnits, guess));

  // Bracket: lo fits, hi does not (hi = maxUnits + 1 stands for "everything fits").
  let lo = minUnits;
  let hi = maxUnits + 1;
  let step = Math.max(1, Math.ceil(guess * 0.005));
  if (fits(guess)) {
    lo = guess;
    for (;;) {
      const n = Math.min(maxUnits, lo + step);
      if (n === lo) break;
      if (!fits(n)) {
        hi = n;
        break;
      }
      lo = n;
      step *= 2;
    }
  } else {
    hi = guess;
    for (;;) {
      const n = Math.max(minUnits, hi - step);
      if (n === minUnits || fits(n)) {
        lo = n;
        break;
      }
      hi = n;
      step *= 2;
    }
  }
  while (hi - lo > 1) {
    const mid = lo + Math.floor((hi - lo) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}
