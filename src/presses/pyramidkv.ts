import type { LayerContext } from '../model/layer-context.js';
import { checkInt } from './common.js';
import type { KeepIndices } from './press.js';
import { topK } from './scorer.js';
import { SnapKVPress, type SnapKVOptions } from './snapkv.js';

export interface PyramidKVOptions extends SnapKVOptions {
  /** Steepness of the pyramid: the top layer keeps about 1/beta of the average budget. */
  beta?: number;
}

/**
 * PyramidKV (Cai et al., "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information
 * Funneling", arXiv 2406.02069): SnapKV scores, but lower layers keep more entries than higher
 * ones, the budgets falling linearly from layer 0 to the last and averaging T(1 − ratio). The
 * budget is rounded with Python's round-half-to-even, as kvpress does (74.5 → 74).
 * Like SnapKV it scores the cached keys as stored, one KV head at a time.
 */
export class PyramidKVPress extends SnapKVPress {
  override readonly name: string = 'pyramidkv';
  readonly beta: number;

  constructor(compressionRatio = 0, opts: PyramidKVOptions = {}) {
    super(compressionRatio, opts);
    this.beta = checkInt(opts.beta ?? 20, 'beta');
  }

  /** Entries layer `layer` of `numLayers` keeps out of T (kvpress's `get_layer_budget`). */
  layerBudget(layer: number, numLayers: number, T: number): number {
    const w = this.windowSize, kept = T * (1 - this.compressionRatio);
    const cap = w + kept;
    let min = (cap - w) / this.beta;
    let max = (cap - w) * 2 - min;
    if (max >= T - w) {
      max = T - w;
      min = (cap - w) * 2 - max;
    }
    if (!(T >= max && max >= min && min >= w)) return roundHalfEven(kept);
    const steps = numLayers > 1 ? (max - min) / (numLayers - 1) : 0;
    return roundHalfEven(max - layer * steps);
  }

  override compress(ctx: LayerContext): KeepIndices | null {
    if (!ctx.isPrefill || (this.compressionRatio === 0 && !this.observer)) return null;
    const scores = this.score(ctx);
    this.observer?.onScores(ctx.layer, scores, this.logScores);
    if (this.compressionRatio === 0) return null;
    return scores.map((s) => topK(s, this.layerBudget(ctx.layer, ctx.config.numLayers, s.length), this.tieRank(s.length)));
  }
}

/** Python's round(): to the nearest integer, halves to the even neighbour. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x), diff = x - f;
  if (diff < 0.5) return f;
  if (diff > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}
