import type { LayerContext } from '../model/layer-context.js';
import { checkRatio, type KeepIndices, type Press, type ScoreObserver } from './press.js';

/**
 * kvpress's ScorerPress: score every cached entry of every KV head, keep the
 * floor(T·(1 − ratio)) best per head. Deliberate deviations from the Python library: ties are
 * broken by lower position, and kept indices are stored in ascending position order (attention
 * is permutation-invariant, so outputs are identical, and positional presses compose correctly).
 */
export abstract class ScorerPress implements Press {
  abstract readonly name: string;
  observer: ScoreObserver | null = null;
  /** True when score() returns log-scores (ranking is unchanged by the monotone log). */
  readonly logScores: boolean = false;
  private ratio = 0;

  constructor(compressionRatio = 0) {
    this.compressionRatio = compressionRatio;
  }

  get compressionRatio(): number {
    return this.ratio;
  }

  set compressionRatio(r: number) {
    this.ratio = checkRatio(r);
  }

  /** Scores [kvHeads][T] of the layer's cached entries (T = ctx.cache.lengths[g]); higher = keep. */
  abstract score(ctx: LayerContext): Float64Array[];

  compress(ctx: LayerContext): KeepIndices | null {
    // At ratio 0 nothing is evicted, so scoring is skipped unless someone observes the scores.
    if (!ctx.isPrefill || (this.ratio === 0 && !this.observer)) return null;
    const scores = this.score(ctx);
    this.observer?.onScores(ctx.layer, scores, this.logScores);
    if (this.ratio === 0) return null;
    return scores.map((s) => topK(s, Math.floor(s.length * (1 - this.ratio))));
  }
}

/**
 * Indices of the k largest scores, ascending. Ties go to the lower index; NaN ranks lowest.
 * O(T log T); T is at most the context length.
 */
export function topK(scores: ArrayLike<number>, k: number): Int32Array {
  const n = scores.length;
  if (k >= n) return Int32Array.from({ length: n }, (_, i) => i);
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const key = (i: number) => (Number.isNaN(scores[i]) ? -Infinity : scores[i]);
  order.sort((a, b) => {
    const d = key(b) - key(a);
    return d > 0 ? 1 : d < 0 ? -1 : a - b;
  });
  return order.subarray(0, Math.max(0, k)).sort();
}
