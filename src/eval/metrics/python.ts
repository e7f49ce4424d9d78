/**
 * Python's string and number semantics where they change a score: the whitespace set of
 * str.split()/strip() (JavaScript's \s lacks \x1c–\x1f and \x85 and adds \ufeff) and
 * round(), which rounds the exact binary value with ties to even.
 */

/** The characters Python's str.split()/strip() treat as whitespace. */
const PY_WS = '\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_WS_RUN = new RegExp(`[${PY_WS}]+`);
const PY_WS_EDGES = new RegExp(`^[${PY_WS}]+|[${PY_WS}]+$`, 'g');

/** Python's `s.split()`: whitespace-separated non-empty pieces. */
export function pySplit(s: string): string[] {
  return s.split(PY_WS_RUN).filter((w) => w.length > 0);
}

/** Python's `s.strip()`. */
export function pyStrip(s: string): string {
  return s.replace(PY_WS_EDGES, '');
}

/**
 * Python's `round(x, digits)`: correctly rounded from the exact binary value, ties to even.
 * Ties only happen when x is an odd multiple of 2^-(digits+1); everything else is what
 * `toFixed` (exact decimal expansion) already gives.
 *
 * @example
 * pyRound(2.675, 2); // 2.67 (2.675 is stored as 2.67499…)
 * pyRound(0.125, 2); // 0.12 (exact tie, to even)
 */
export function pyRound(x: number, digits = 0): number {
  if (!Number.isFinite(x)) return x;
  const scaledTie = x * 2 ** (digits + 1);
  if (Number.isInteger(scaledTie) && Math.abs(scaledTie) % 2 === 1 && Math.abs(scaledTie) < 2 ** 52) {
    const lower = Number((x - 0.5 * 10 ** -digits).toFixed(digits));
    const upper = Number((x + 0.5 * 10 ** -digits).toFixed(digits));
    const lastDigit = (v: number): number => Math.round(Math.abs(v) * 10 ** digits) % 2;
    return lastDigit(lower) === 0 ? lower : upper;
  }
  return Number(x.toFixed(digits));
}
