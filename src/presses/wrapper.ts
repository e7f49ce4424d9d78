import type { LayerContext, ModelParts } from '../model/layer-context.js';
import { checkRatio, requireScorer, type KeepIndices, type Press, type ScoreObserver } from './press.js';
import { keptCount } from './common.js';
import { topK, type ScorerPress } from './scorer.js';

/**
 * What every wrapper over a ScorerPress shares (kvpress §1.8): the compression ratio lives in the
 * inner press (read/write through the wrapper), validation is the inner press's, and the inner
 * scores go to the wrapper's observer. The default `compress` scores once and hands the scores to
 * `select`; wrappers that score differently (per chunk, per block) override `compress`.
 */
export abstract class ScorerWrapper implements Press {
  readonly name: string;
  /** The inner press's scores are reported here, before the wrapper's own selection. */
  observer: ScoreObserver | null = null;

  constructor(readonly inner: ScorerPress, prefix: string, compressionRatio: number) {
    requireScorer(inner, `the ${prefix} wrapper`);
    this.name = `${prefix}_${inner.name}`;
    this.compressionRatio = compressionRatio;
  }

  get compressionRatio(): number {
    return this.inner.compressionRatio;
  }

  set compressionRatio(r: number) {
    this.inner.compressionRatio = checkRatio(r);
  }

  /** The inner press's request for the attention's column sums (LayerContext.attentionColumnSums). */
  get attentionColumns(): boolean {
    return (this.inner as Press).attentionColumns === true;
  }

  validate(model: ModelParts): void {
    (this.inner as Press).validate?.(model);
  }

  compress(ctx: LayerContext): KeepIndices | null {
    const ratio = this.compressionRatio;
    if (!ctx.isPrefill || (ratio === 0 && !this.observer)) return null;
    const scores = this.inner.score(ctx);
    this.observer?.onScores(ctx.layer, scores, this.inner.logScores);
    return ratio === 0 ? null : this.select(ctx, scores, ratio);
  }

  /** Per-KV-head keep indices from the inner scores [kvHeads][T] (ratio > 0); the plain top-k here. */
  protected select(_ctx: LayerContext, scores: Float64Array[], ratio: number): KeepIndices {
    return scores.map((s) => topK(s, keptCount(s.length, ratio)));
  }
}
