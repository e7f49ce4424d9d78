import type { LayerContext } from '../model/layer-context.js';
import { attentionScale, layerWindow } from '../model/config.js';
import { pressAttention } from './attention-columns.js';
import { ScorerPress } from './scorer.js';

/**
 * Observed attention, H2O-like (Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative
 * Inference of Large Language Models", arXiv 2306.14048): the attention key j received from every
 * query of the pass, divided by the number of queries that can see it (T − j in a prefill), then
 * averaged over the KV group.
 *
 * kvpress reads these weights from eager attention, O(heads·T²) memory. Here the prefill's own
 * attention adds up each entry's probabilities as it goes (`attentionColumns`: O(T) per KV head,
 * one pass over probabilities the kernel already holds); where a pass could not (a backend
 * without paged attention, a sub-context of a wrapper) the backend's pressAttention kernel
 * recomputes the same sums (attention-columns.ts). Both follow the layer's attention as eager
 * attention does: the model's logit scale and, on a sliding-window layer, its window.
 * Either way the keys are the cached entries as stored: the layer's attention reads the pages in
 * place, and the recomputation decodes one KV head at a time (`headKeys`), never a float32 copy of
 * the cache.
 */
export class ObservedAttentionPress extends ScorerPress {
  readonly name = 'observed_attention';
  readonly needsWholePass = true;
  readonly attentionColumns = true;

  score(ctx: LayerContext): Float64Array[] {
    const c = ctx.config, G = c.numHeads / c.numKvHeads, R = ctx.rows;
    const scores: Float64Array[] = [];
    for (let g = 0; g < c.numKvHeads; g++) {
      const T = ctx.cache.lengths[g], P = ctx.cache.headPositions(g);
      const sums = ctx.attentionColumnSums(g) ?? recompute(ctx, g);
      const out = new Float64Array(T);
      // Rows and entries are both in ascending position order: walk them together.
      for (let r = 0, t = 0; t < T; t++) {
        while (r < R && ctx.positions[r] < P[t]) r++;
        out[t] = sums[t] / (G * (R - r));
      }
      scores.push(out);
    }
    return scores;
  }
}

/** KV head g's column sums, summed over its query heads, by the backend's pressAttention kernel. */
function recompute(ctx: LayerContext, g: number): Float64Array {
  const c = ctx.config, hd = c.headDim, G = c.numHeads / c.numKvHeads, R = ctx.rows, window = layerWindow(c, ctx.layer);
  const T = ctx.cache.lengths[g], P = ctx.cache.headPositions(g);
  // Entries are in ascending position order: a row sees the prefix at or before its position,
  // and on a sliding-window layer only the entries less than `window` positions before it.
  const lo = new Int32Array(R), hi = new Int32Array(R);
  for (let r = 0, u = 0, v = 0; r < R; r++) {
    while (v < T && P[v] <= ctx.positions[r]) v++;
    if (window !== undefined) while (u < v && P[u] <= ctx.positions[r] - window) u++;
    lo[r] = u;
    hi[r] = v;
  }
  const out = new Float64Array(G * T);
  pressAttention(ctx.backend, {
    out, q: ctx.queries, qStride: c.numHeads * hd, heads: Int32Array.from({ length: G }, (_, j) => (g * G + j) * hd),
    keys: ctx.cache.headKeys(g), n: T, headDim: hd, rows: R, lo, hi, pad: null, padLogit: 0, scale: attentionScale(c), rowWeight: null, mode: 'sum',
  });
  for (let j = 1; j < G; j++) for (let t = 0; t < T; t++) out[t] += out[j * T + t];
  return out.subarray(0, T);
}
