import type { LayerContext } from '../model/layer-context.js';
import { avgPool1d, checkInt, groupMean, meanRows, padProtected, windowAttention } from './common.js';
import { recentFirst, ScorerPress, type TieRank } from './scorer.js';

export interface SnapKVOptions {
  /** Recent tokens whose attention scores the rest (and which are always kept). */
  windowSize?: number;
  /** Width of the average pooling along the sequence (odd). */
  kernelSize?: number;
  /** Which window entries survive a budget smaller than the window: 'recent' first (default) or lower 'position' first. */
  protectedOrder?: ProtectedOrder;
}

/**
 * Order among the protected entries (which all share the top score) when the budget cannot keep
 * them all: 'recent' keeps the most recent first (the default, decided by measurement, see the
 * README), 'position' the lower positions first (this port's behaviour before, and the general
 * tie rule). The Python library leaves it to torch.topk's unspecified order.
 */
export type ProtectedOrder = 'recent' | 'position';

export function checkProtectedOrder(o: unknown): ProtectedOrder {
  if (o !== 'recent' && o !== 'position') throw new RangeError(`protectedOrder must be "recent" or "position", got ${String(o)}`);
  return o;
}

/**
 * SnapKV (Li et al., "SnapKV: LLM Knows What You are Looking for Before Generation",
 * arXiv 2404.14469): the last `windowSize` queries attend to every key; a key's score is its
 * attention averaged over the window queries, smoothed by an average pool of width `kernelSize`
 * (zero padding counted, as torch's avg_pool1d), averaged over the query heads of its KV group.
 * The window's own entries get max + 1 so they always survive. Needs a prompt longer than the
 * window, as kvpress asserts. The window's queries are the pass's own (float32); the keys they
 * attend to are the cached entries as stored, decoded one KV head at a time by `headKeys`.
 */
export class SnapKVPress extends ScorerPress {
  readonly name: string = 'snapkv';
  readonly windowSize: number;
  readonly kernelSize: number;
  readonly protectedOrder: ProtectedOrder;

  constructor(compressionRatio = 0, opts: SnapKVOptions = {}) {
    super(compressionRatio);
    this.windowSize = checkInt(opts.windowSize ?? 64, 'windowSize');
    this.kernelSize = checkInt(opts.kernelSize ?? 5, 'kernelSize');
    if (this.kernelSize % 2 === 0) throw new RangeError(`kernelSize must be odd, got ${this.kernelSize}`);
    this.protectedOrder = checkProtectedOrder(opts.protectedOrder ?? 'recent');
  }

  override tieRank(T: number): TieRank | null {
    return this.protectedOrder === 'recent' ? recentFirst(T) : null;
  }

  score(ctx: LayerContext): Float64Array[] {
    const w = this.windowSize;
    if (ctx.rows <= w) throw new RangeError(`${this.name}: the prompt (${ctx.rows} tokens) must be longer than windowSize ${w}`);
    const perHead = windowMeans(ctx, w).map((a) => avgPool1d(a, this.kernelSize));
    return padProtected(groupMean(perHead, ctx.config.numKvHeads), w);
  }
}

/**
 * Per query head, the attention of the last `w` queries of the pass on each key before the
 * window, averaged over those queries, each row first multiplied by rowWeights[r] when given:
 * common.ts `windowAttention` then `meanRows`, [T_g − w] per head. On a backend with
 * windowSoftmaxSums one native call per KV head does the logits, softmax and row sums without
 * building the w × T probabilities; elsewhere the probabilities are built as the reference does.
 */
export function windowMeans(ctx: LayerContext, w: number, rowWeights: Float64Array | null = null): Float64Array[] {
  const be = ctx.backend;
  if (!be.windowSoftmaxSums) {
    return windowAttention(ctx, w).map((a) => {
      const cols = a.length / w;
      if (rowWeights) for (let r = 0; r < w; r++) for (let t = 0, o = r * cols; t < cols; t++) a[o + t] *= rowWeights[r];
      return meanRows(a, w, cols);
    });
  }
  checkInt(w, 'window', 1, ctx.rows);
  const c = ctx.config, d = c.headDim, H = c.numHeads, G = H / c.numKvHeads, first = ctx.rows - w;
  const rowPositions = ctx.positions.subarray(first, ctx.rows), scale = 1 / Math.sqrt(d);
  const out: Float64Array[] = [];
  for (let g = 0; g < c.numKvHeads; g++) {
    const T = ctx.cache.lengths[g];
    if (T < w) throw new RangeError(`window ${w} is longer than the ${T} cached entries of KV head ${g}`);
    const acc = new Float64Array(G * (T - w));
    // headPositions and headKeys are transients of the cache: read both before the next call.
    const keyPositions = ctx.cache.headPositions(g).slice();
    be.windowSoftmaxSums(acc, ctx.queries, H * d, g * G, G, d, first, w, ctx.cache.headKeys(g), T, keyPositions, rowPositions, scale, rowWeights);
    for (let k = 0; k < G; k++) {
      const a = acc.subarray(k * (T - w), (k + 1) * (T - w));
      for (let t = 0; t < a.length; t++) a[t] /= w;
      out.push(a);
    }
  }
  return out;
}
