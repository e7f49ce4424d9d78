import type { LayerContext } from '../model/layer-context.js';
import { globalMax, requirePrefillCache } from './common.js';
import { gaussianSketch, leverageScores, type Sketch } from './leverage-score.js';
import { nonCausalScores, zScore } from './non-causal-attn.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import type { PressEntry } from './registry.js';
import { ScorerPress } from './scorer.js';

export const compactorOptions = defineOptions({
  sinkSizeStart: { type: 'integer', default: 8, min: 0, description: 'first tokens always kept' },
  sinkSizeEnd: { type: 'integer', default: 4, min: 0, description: 'last tokens always kept' },
  chunkSize: { type: 'integer', default: 256, min: 1, description: 'tokens per chunk of the non-causal attention' },
  sketchDimension: { type: 'integer', default: 48, min: 1, description: 'columns of the leverage Gaussian sketch' },
  blending: { type: 'number', default: -1, min: -1, description: 'weight of the leverage scores; -1 = the compression ratio (the library\'s None)' },
  seed: { type: 'integer', default: 0, min: 0, description: 'seed of the Gaussian sketch' },
});

/**
 * Compactor (Chari & Van Durme, "Compactor: Calibrated Query-Agnostic KV Cache Compression with
 * Approximate Leverage Scores", arXiv 2507.08143; kvpress `CompactorPress`): on the tokens between
 * the first sinkSizeStart and the last sinkSizeEnd, s = β·z(leverage) + z(non-causal attention),
 * each z-scored over those tokens only, β = blending or, by default, the compression ratio. The
 * protected ends get the maximum of those scores (the library's 0.5.4 padding, without the + 1 of
 * the other presses, so the best middle tokens tie with them). A prompt with no token between the ends is refused, as kvpress.
 * The sketch follows LeverageScorePress (seeded here, torch's generator there). It reads what its
 * two parts read: the cached keys and values decoded per head (NonCausalAttn) and the pre-RoPE keys
 * (LeverageScore: the pass's float32 cache rows rotated back, or the projection of the hidden states).
 */
export class CompactorPress extends ScorerPress {
  readonly name: string = 'compactor';
  readonly options: OptionsOf<typeof compactorOptions>;
  readonly sketch: Sketch;

  constructor(compressionRatio = 0, options: Partial<OptionsOf<typeof compactorOptions>> = {}, sketch?: Sketch) {
    super(compressionRatio);
    this.options = resolveOptions(compactorOptions, options, 'CompactorPress');
    if (this.options.blending !== -1 && this.options.blending < 0) throw new RangeError(`blending must be ≥ 0 or -1 (the compression ratio), got ${this.options.blending}`);
    this.sketch = sketch ?? gaussianSketch(this.options.seed);
  }

  score(ctx: LayerContext): Float64Array[] {
    const T = requirePrefillCache(ctx, this.name), o = this.options;
    const left = Math.min(o.sinkSizeStart, T), right = Math.min(o.sinkSizeEnd, Math.max(0, T - left));
    if (T - left - right < 1) throw new RangeError(`${this.name}: the prompt (${T} tokens) leaves no token between the ${o.sinkSizeStart} + ${o.sinkSizeEnd} protected ones`);
    const lev = zScore(leverageScores(ctx, left, T - right, o.sketchDimension, this.sketch));
    const att = zScore(nonCausalScores(ctx, left, T - right, o.chunkSize));
    const beta = o.blending === -1 ? this.compressionRatio : o.blending;
    const mid = att.map((a, g) => a.map((x, t) => beta * lev[g][t] + x));
    // kvpress 0.5.4 pads with the maximum itself (no + 1): the ends tie with the best middle token.
    const pad = globalMax(mid);
    return mid.map((m) => {
      const s = new Float64Array(T).fill(pad);
      s.set(m, left);
      return s;
    });
  }
}

export const compactorEntry: PressEntry = {
  name: 'compactor',
  description: 'Compactor: blend of sketched key leverage and non-causal chunked attention, ends protected (arXiv 2507.08143; prefill only)',
  options: compactorOptions,
  create: (r, o) => new CompactorPress(r, o as OptionsOf<typeof compactorOptions>),
};
