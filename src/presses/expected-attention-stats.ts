import type { LayerContext, ModelParts } from '../model/layer-context.js';
import { eaParams, expectedAttentionScores, type EaParams, type ExpectedAttentionOptions, type QueryMoments } from './expected-attention.js';
import { PressError } from './press.js';
import { ScorerPress } from './scorer.js';
import { readQueryStats, type QueryStats } from './stats-format.js';

/**
 * Expected Attention with precomputed query statistics (kvpress `ExpectedAttentionStatsPress`,
 * spec §2.5): μ and Σ of every layer and query head come from a calibration run
 * (`kvpress calibrate`, format in stats-format.ts) instead of the current prompt; only the
 * averaged RoPE R̄ follows the current length. Scoring, log-space numerics, sinks and the
 * `positions` modes are ExpectedAttentionPress's, and so is what it reads: the cached keys and
 * values as stored, decoded one KV head at a time.
 *
 * Deviation: the Python library downloads its statistics from the Hugging Face Hub (BookSum,
 * 100 samples of 1000 characters); here they are read from a local JSON or safetensors file.
 */
export class ExpectedAttentionStatsPress extends ScorerPress {
  readonly name: string = 'expected_attention_stats';
  override readonly logScores = true;
  readonly params: EaParams;
  readonly stats: QueryStats;
  private readonly source: string;
  private readonly moments: (QueryMoments | undefined)[] = [];

  /** `stats`: the statistics, or the path of a file written by `kvpress calibrate`. */
  constructor(compressionRatio: number, stats: QueryStats | string, options: ExpectedAttentionOptions = {}) {
    super(compressionRatio);
    this.params = eaParams(options);
    this.source = typeof stats === 'string' ? stats : `statistics of ${stats.model || 'a model'}`;
    this.stats = typeof stats === 'string' ? readQueryStats(stats) : stats;
  }

  validate(model: ModelParts): void {
    const c = model.config, s = this.stats;
    if (s.layers.length !== c.numLayers || s.numHeads !== c.numHeads || s.headDim !== c.headDim) {
      throw new PressError(`${this.name}: ${this.source} are for ${s.layers.length} layers × ${s.numHeads} query heads × head_dim ${s.headDim}, `
        + `the model has ${c.numLayers} × ${c.numHeads} × ${c.headDim}; run \`kvpress calibrate\` on this model`);
    }
  }

  score(ctx: LayerContext): Float64Array[] {
    if (!this.moments[ctx.layer]) {
      this.validate(ctx.model);
      this.moments[ctx.layer] = this.layerMoments(ctx.layer);
    }
    return expectedAttentionScores(ctx, this.moments[ctx.layer]!, this.params);
  }

  private layerMoments(layer: number): QueryMoments {
    const { numHeads: H, headDim: d } = this.stats, l = this.stats.layers[layer];
    const mean = Array.from({ length: H }, (_, h) => Float64Array.from(l.mean.subarray(h * d, (h + 1) * d)));
    const cov = this.params.useCovariance ? Array.from({ length: H }, (_, h) => Float64Array.from(l.cov.subarray(h * d * d, (h + 1) * d * d))) : null;
    return { mean, cov };
  }
}
