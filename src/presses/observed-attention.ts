import type { LayerContext } from '../model/layer-context.js';
import { pressAttention } from './attention-columns.js';
import { groupMean } from './common.js';
import { ScorerPress } from './scorer.js';

/**
 * Observed attention, H2O-like (Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative
 * Inference of Large Language Models", arXiv 2306.14048): the attention key j received from every
 * query of the pass, divided by the number of queries that can see it (T − j in a prefill), then
 * averaged over the KV group.
 *
 * kvpress reads these weights from eager attention, O(heads·T²) memory; here the column sums of
 * the causal softmax (scale 1/√d) come from the backend's pressAttention kernel (attention-
 * columns.ts), O(T) memory per head.
 */
export class ObservedAttentionPress extends ScorerPress {
  readonly name = 'observed_attention';
  readonly needsWholePass = true;

  score(ctx: LayerContext): Float64Array[] {
    const c = ctx.config, hd = c.headDim, G = c.numHeads / c.numKvHeads, R = ctx.rows;
    const sums: Float64Array[] = [];
    for (let g = 0; g < c.numKvHeads; g++) {
      const T = ctx.cache.lengths[g], P = ctx.cache.headPositions(g);
      // Entries are in ascending position order: a row sees the prefix at or before its position.
      const lo = new Int32Array(R), hi = new Int32Array(R);
      for (let r = 0, v = 0; r < R; r++) {
        while (v < T && P[v] <= ctx.positions[r]) v++;
        hi[r] = v;
      }
      const out = new Float64Array(G * T);
      const heads = Int32Array.from({ length: G }, (_, j) => (g * G + j) * hd);
      pressAttention(ctx.backend, {
        out, q: ctx.queries, qStride: c.numHeads * hd, heads, keys: ctx.cache.headKeys(g), n: T, headDim: hd, rows: R,
        lo, hi, pad: null, padLogit: 0, scale: 1 / Math.sqrt(hd), rowWeight: null, mode: 'sum',
      });
      // Rows and entries are both in ascending position order: walk them together.
      for (let r = 0, t = 0; t < T; t++) {
        while (r < R && ctx.positions[r] < P[t]) r++;
        for (let j = 0; j < G; j++) out[j * T + t] /= R - r;
      }
      for (let j = 0; j < G; j++) sums.push(out.subarray(j * T, (j + 1) * T));
    }
    return groupMean(sums, c.numKvHeads);
  }
}
