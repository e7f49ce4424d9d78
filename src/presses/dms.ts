import type { LayerContext } from '../model/layer-context.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import type { KeepIndices } from './press.js';
import type { WrapperEntry } from './registry.js';
import type { ScorerPress } from './scorer.js';
import { ScorerWrapper } from './wrapper.js';

export const dmsOptions = defineOptions({
  threshold: { type: 'number', default: NaN, description: 'entries scoring strictly below it are evicted (required: the library has no default)' },
  slidingWindowSize: { type: 'integer', default: 128, min: 0, description: 'most recent tokens never evicted' },
});

/**
 * DMS in threshold mode (Łańcucki et al., "Inference-Time Hyper-Scaling with KV Cache Compression",
 * arXiv 2506.05345; kvpress `DMSPress`, as used with KVzap): in the prefill, every entry older than
 * the last slidingWindowSize tokens whose inner score is strictly below `threshold` is evicted,
 * so each head keeps its own number of entries and the ratio is an outcome, not a setting
 * (`compressionRatio` reports the fraction evicted by the last prefill). The threshold is in the
 * units the inner press reports (natural-log scores for Expected Attention).
 * Deviations: real eviction, as AdaKVPress here (the library masks); the library's `decoding=True`
 * mode (scoring each generated token as it leaves the window) is not offered yet.
 */
export class DMSPress extends ScorerWrapper {
  readonly options: OptionsOf<typeof dmsOptions>;
  private evicted = 0;
  private seen = 0;

  constructor(inner: ScorerPress, options: Partial<OptionsOf<typeof dmsOptions>> = {}) {
    super(inner, 'dms', 0);
    if (typeof options !== 'object' || options === null || !Number.isFinite(options.threshold)) throw new RangeError('DMSPress needs a finite threshold (the library has no default), e.g. threshold=-6 over kvzap scores');
    this.options = resolveOptions(dmsOptions, options, 'DMSPress');
  }

  override get compressionRatio(): number {
    return this.seen ? this.evicted / this.seen : 0;
  }

  override set compressionRatio(r: number) {
    if (r !== 0) throw new RangeError(`DMSPress evicts by threshold and takes no compression ratio (got ${r}); set threshold instead`);
  }

  reset(): void {
    this.evicted = this.seen = 0;
  }

  override compress(ctx: LayerContext): KeepIndices | null {
    if (!ctx.isPrefill) return null;
    if (ctx.layer === 0) this.reset();
    const scores = this.inner.score(ctx);
    this.observer?.onScores(ctx.layer, scores, this.inner.logScores);
    const { threshold, slidingWindowSize } = this.options;
    return scores.map((s) => {
      const T = s.length, evictable = Math.max(0, T - slidingWindowSize), keep: number[] = [];
      for (let t = 0; t < T; t++) if (t >= evictable || !(s[t] < threshold)) keep.push(t);
      this.seen += T;
      this.evicted += T - keep.length;
      return Int32Array.from(keep);
    });
  }
}

export const dmsWrapper: WrapperEntry = {
  prefix: 'dms',
  description: 'DMS (threshold): evicts every entry older than the sliding window whose score is below threshold (arXiv 2506.05345; takes no ratio)',
  options: dmsOptions,
  wrap: (inner, r, o) => {
    if (r !== 0) throw new Error(`evicts by threshold and takes no compression ratio (got ${r}); set --press-option threshold=X`);
    return new DMSPress(inner, o as OptionsOf<typeof dmsOptions>);
  },
};
