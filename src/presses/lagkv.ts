import type { LayerContext } from '../model/layer-context.js';
import { checkInt } from './common.js';
import { ScorerPress, type TieRank } from './scorer.js';
import { checkProtectedOrder, type ProtectedOrder } from './snapkv.js';

export interface LagKVOptions {
  /** Attention-sink tokens always kept. */
  nSink?: number;
  /** Partition length λ: each partition is scored against the next one. */
  lagSize?: number;
  /** Keep the softmax scores (comparable across partitions) instead of within-partition ranks. */
  crossScoring?: boolean;
  /** Which protected entries survive a budget smaller than sinks + tail: 'recent' (sinks, then the most recent; default) or lower 'position' first. */
  protectedOrder?: ProtectedOrder;
}

/**
 * LagKV (Liang et al., "LagKV: Lag-Relative Information of the KV Cache Tells Which Tokens Are
 * Important", arXiv 2504.04704), from keys and values only. After the sinks, the cache is cut into
 * partitions of λ tokens; partition p is normalised channel-wise by the min/max of partition p+1,
 * and a token's score is the softmax over its partition of the (unbiased) std over channels of its
 * normalised vector, keys and values averaged; without crossScoring the score is replaced by the
 * token's rank in its partition / λ. Sinks and the tail (last full partition + remainder) get 1.
 * Prompts shorter than nSink + 2λ are not really compressed: the score then rises linearly so the
 * most recent tokens are kept. A channel whose reference range is zero contributes 0 (kvpress
 * would divide by zero and rank NaNs arbitrarily). It reads the cached keys and values as stored,
 * decoded per head into float32 (in a prefill over a float32 cache: the pass's own rows).
 */
export class LagKVPress extends ScorerPress {
  readonly name = 'lagkv';
  readonly nSink: number;
  readonly lagSize: number;
  readonly crossScoring: boolean;
  readonly protectedOrder: ProtectedOrder;

  constructor(compressionRatio = 0, opts: LagKVOptions = {}) {
    super(compressionRatio);
    this.nSink = checkInt(opts.nSink ?? 4, 'nSink', 0);
    this.lagSize = checkInt(opts.lagSize ?? 128, 'lagSize');
    this.crossScoring = opts.crossScoring ?? false;
    this.protectedOrder = checkProtectedOrder(opts.protectedOrder ?? 'recent');
  }

  /** 'recent': the sinks first, then the most recent entries. */
  override tieRank(T: number): TieRank | null {
    const s = this.nSink;
    return this.protectedOrder === 'recent' ? (i) => (i < s ? i : s + T - 1 - i) : null;
  }

  score(ctx: LayerContext): Float64Array[] {
    const hd = ctx.config.headDim, cache = ctx.cache, sink = this.nSink, lag = this.lagSize;
    return Array.from(cache.lengths, (T, g) => {
      const s = new Float64Array(T).fill(1);
      if (T < sink + 2 * lag) {
        for (let t = sink; t < T; t++) s[t] = (t - sink) / (T - sink);
        return s;
      }
      const parts = Math.floor((T - sink) / lag);
      const k = partitionScores(cache.headKeys(g), hd, sink, lag, parts);
      const v = partitionScores(cache.headValues(g), hd, sink, lag, parts);
      for (let p = 0; p + 1 < parts; p++) {
        const o = sink + p * lag, chunk = new Float64Array(lag);
        for (let i = 0; i < lag; i++) chunk[i] = (k[p * lag + i] + v[p * lag + i]) / 2;
        if (!this.crossScoring) ranks(chunk);
        s.set(chunk, o);
      }
      return s;
    });
  }
}

/**
 * Scores of the first parts − 1 partitions of one head's keys or values ([T][hd]): for token i of
 * partition p, softmax over the partition of std_c((x_ic − min_c) / (max_c − min_c)), min/max over
 * partition p + 1.
 */
function partitionScores(X: Float32Array, hd: number, sink: number, lag: number, parts: number): Float64Array {
  const out = new Float64Array((parts - 1) * lag), mn = new Float64Array(hd), range = new Float64Array(hd), y = new Float64Array(hd);
  for (let p = 0; p + 1 < parts; p++) {
    const ref = sink + (p + 1) * lag;
    mn.fill(Infinity);
    range.fill(-Infinity);
    for (let i = 0; i < lag; i++) {
      for (let c = 0, o = (ref + i) * hd; c < hd; c++) {
        mn[c] = Math.min(mn[c], X[o + c]);
        range[c] = Math.max(range[c], X[o + c]);
      }
    }
    for (let c = 0; c < hd; c++) range[c] -= mn[c];
    let max = -Infinity;
    for (let i = 0; i < lag; i++) {
      const o = (sink + p * lag + i) * hd;
      let mean = 0;
      for (let c = 0; c < hd; c++) mean += y[c] = range[c] > 0 ? (X[o + c] - mn[c]) / range[c] : 0;
      mean /= hd;
      let ss = 0;
      for (let c = 0; c < hd; c++) ss += (y[c] - mean) ** 2;
      const std = Math.sqrt(ss / (hd - 1));
      out[p * lag + i] = std;
      if (std > max) max = std;
    }
    let sum = 0;
    for (let i = 0; i < lag; i++) sum += out[p * lag + i] = Math.exp(out[p * lag + i] - max);
    for (let i = 0; i < lag; i++) out[p * lag + i] /= sum;
  }
  return out;
}

/** Replaces each value by its rank (0 = smallest; ties by position) divided by the length. */
function ranks(x: Float64Array): void {
  const order = Array.from(x.keys()).sort((a, b) => x[a] - x[b] || a - b);
  const n = x.length;
  order.forEach((i, r) => (x[i] = r / n));
}
