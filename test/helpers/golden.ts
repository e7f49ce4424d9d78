import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';

/**
 * NVIDIA kvpress's own outputs on stories260K (float64 run), compacted by
 * scripts/golden-fixture.mjs into test/fixtures/kvpress-golden.json.gz: per prompt the token ids,
 * LeverageScore's stored Gaussian sketch, and per configuration the library's scores, kept / masked
 * sets and ties. Score arrays are interned in `scores` and referenced by index.
 */
export interface GoldenPrompt {
  n_tokens: number;
  token_ids: number[];
  /** [layer][kvHead][d][48]: LeverageScore's sketch, already × 1/√48, in HF halves channel order. */
  phi: number[][][][];
  presses: Record<string, GoldenEntry>;
}

export interface GoldenTie {
  head?: number;
  exact: boolean;
  indices?: number[];
  pairs?: number[][];
  n_selected_from_tie: number;
}

// Layers and entries carry many kind-specific fields (see the golden README); the tests read them by name.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type GoldenLayer = Record<string, any>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type GoldenEntry = Record<string, any> & { kind: string; skipped?: boolean; error?: string; layers?: GoldenLayer[] };

const path = new URL('../../../test/fixtures/kvpress-golden.json.gz', import.meta.url);

let cache: { prompts: Record<string, GoldenPrompt> } | null = null;

/** Loads the fixture once; "Infinity" / "inf" / "NaN" strings (Python's) become numbers and score references arrays. */
export function golden(): Record<string, GoldenPrompt> {
  if (cache) return cache.prompts;
  const special: Record<string, number> = { Infinity, inf: Infinity, '-Infinity': -Infinity, '-inf': -Infinity, NaN, nan: NaN };
  const raw = JSON.parse(gunzipSync(readFileSync(path)).toString('utf8'), (_k, v) => (typeof v === 'string' && v in special ? special[v] : v)) as { scores: number[][]; prompts: Record<string, GoldenPrompt> };
  for (const p of Object.values(raw.prompts)) {
    for (const e of Object.values(p.presses)) {
      for (const l of e.layers ?? []) {
        for (const f of ['scores', 'stage2_scores']) if (Array.isArray(l[f])) l[f] = (l[f] as number[]).map((i) => raw.scores[i]);
      }
    }
  }
  cache = raw;
  return raw.prompts;
}

/** Score tolerance: |a − b| ≤ rel·|b| + abs, or in log space |a − ln b| ≤ rel when `log`. */
export interface Tolerance {
  rel: number;
  abs: number;
}

/** finfo(float64).max markers and their overflow are pads, compared by rank only. */
export const isMarker = (x: number): boolean => !(Math.abs(x) < 1e300);

/** Largest tolerance-normalised error of `ours` against `ref` (≤ 1 passes); markers skipped. */
export function scoreError(ours: ArrayLike<number>, ref: readonly number[], tol: Tolerance, log = false): { worst: number; at: number } {
  if (ours.length !== ref.length) return { worst: Infinity, at: -1 };
  let worst = 0, at = -1;
  for (let t = 0; t < ref.length; t++) {
    if (isMarker(ref[t]) || isMarker(ours[t])) continue;
    const e = log
      ? (ref[t] > 0 ? Math.abs(ours[t] - Math.log(ref[t])) / tol.rel : ours[t] === -Infinity ? 0 : Infinity)
      : Math.abs(ours[t] - ref[t]) / (tol.rel * Math.abs(ref[t]) + tol.abs);
    if (!(e <= worst)) { worst = e; at = t; }
  }
  return { worst, at };
}

/**
 * Whether `kept` (indices into `ref`) is a top-|kept| of the reference scores up to the score
 * tolerance: every kept entry scores at least every dropped one, less the tolerance. This is the
 * golden README's tie rule (which tied entries win is arbitrary) widened to the float32 resolution
 * of this port. `wild` entries are left out: members of a tie the reference resolved arbitrarily in
 * an earlier stage (CriticalKV's stage 1), whose final reference score depends on that choice.
 * Returns null when it holds, else a one-line reason.
 */
export function topKViolation(kept: ArrayLike<number>, ref: readonly number[], tol: Tolerance, log = false, wild?: ReadonlySet<number>): string | null {
  const inKept = new Uint8Array(ref.length);
  for (let i = 0; i < kept.length; i++) inKept[kept[i]] = 1;
  const v = (t: number) => (log ? (ref[t] > 0 ? Math.log(ref[t]) : -Infinity) : ref[t]);
  let minKept = Infinity, maxDropped = -Infinity, a = -1, b = -1;
  for (let t = 0; t < ref.length; t++) {
    if (wild?.has(t)) continue;
    if (inKept[t]) { if (v(t) < minKept) { minKept = v(t); a = t; } } else if (v(t) > maxDropped) { maxDropped = v(t); b = t; }
  }
  if (minKept >= maxDropped) return null;
  if (isMarker(minKept) && isMarker(maxDropped) && minKept === maxDropped) return null;
  const slack = log ? tol.rel : tol.rel * Math.max(Math.abs(minKept), Math.abs(maxDropped)) + tol.abs;
  return maxDropped - minKept <= slack ? null : `kept ${a} (${minKept}) below dropped ${b} (${maxDropped})`;
}

export const sameSet = (a: ArrayLike<number>, b: ArrayLike<number>): boolean => {
  if (a.length !== b.length) return false;
  const s = new Set(Array.from(b));
  return Array.from(a).every((x) => s.has(x));
};
