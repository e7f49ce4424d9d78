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
 * window, as kvpress asserts.
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
    const perHead = windowAttention(ctx, w).map((a) => avgPool1d(meanRows(a, w, a.length / w), this.kernelSize));
    return padProtected(groupMean(perHead, ctx.config.numKvHeads), w);
  }
}
