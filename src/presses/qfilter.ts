import type { LayerContext, ModelParts } from '../model/layer-context.js';
import { PressError } from './press.js';
import { ScorerPress } from './scorer.js';
import { kvHeadFilters, readQueryStats, type QueryStats } from './stats-format.js';

/**
 * Q-Filters (Godey et al., "Q-Filters: Leveraging QK Geometry for Efficient KV Cache
 * Compression", arXiv 2503.02812): one context-agnostic direction f per layer and KV head,
 * s_j = −(f·k_j). The filters come from the `qfilter` field of a query-statistics file written by
 * `kvpress calibrate` (format and orientation in stats-format.ts); a KV head uses the mean of its
 * query heads' filters, which is the group-averaged score.
 * The projections f·k_j use the keys as stored, decoded one KV head at a time by `headKeys`.
 *
 * Deviation: the Python library downloads filters released for a few checkpoints from the
 * Hugging Face Hub; here they are computed locally for any model and read from a file.
 */
export class QFilterPress extends ScorerPress {
  readonly name = 'qfilter';
  readonly stats: QueryStats;
  private readonly source: string;
  private readonly filters: (Float32Array | undefined)[] = [];

  /** `stats`: query statistics, or the path of a file written by `kvpress calibrate`. */
  constructor(compressionRatio: number, stats: QueryStats | string) {
    super(compressionRatio);
    this.source = typeof stats === 'string' ? stats : `filters of ${stats.model || 'a model'}`;
    this.stats = typeof stats === 'string' ? readQueryStats(stats) : stats;
  }

  validate(model: ModelParts): void {
    const c = model.config, s = this.stats;
    if (s.layers.length !== c.numLayers || s.numHeads !== c.numHeads || s.headDim !== c.headDim) {
      throw new PressError(`qfilter: ${this.source} are for ${s.layers.length} layers × ${s.numHeads} query heads × head_dim ${s.headDim}, `
        + `the model has ${c.numLayers} × ${c.numHeads} × ${c.headDim}; run \`kvpress calibrate\` on this model`);
    }
  }

  score(ctx: LayerContext): Float64Array[] {
    let f = this.filters[ctx.layer];
    if (!f) {
      this.validate(ctx.model);
      f = this.filters[ctx.layer] = kvHeadFilters(this.stats, ctx.layer, ctx.config.numKvHeads);
    }
    const hd = ctx.config.headDim, cache = ctx.cache;
    return Array.from(cache.lengths, (T, g) => {
      const K = cache.headKeys(g), s = new Float64Array(T), fo = g * hd;
      for (let t = 0; t < T; t++) {
        let dot = 0;
        for (let d = 0, o = t * hd; d < hd; d++) dot += f[fo + d] * K[o + d];
        s[t] = -dot;
      }
      return s;
    });
  }
}
