import type { LayerContext } from '../model/layer-context.js';
import { forEachAttentionRow, groupMean } from './common.js';
import { ScorerPress } from './scorer.js';

/**
 * Observed attention, H2O-like (Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative
 * Inference of Large Language Models", arXiv 2306.14048): the attention key j received from every
 * query of the pass, divided by the number of queries that can see it (T − j in a prefill), then
 * averaged over the KV group.
 *
 * kvpress reads these weights from eager attention, O(heads·T²) memory; here the same
 * probabilities are recomputed block by block (common.ts `forEachAttentionRow`), O(64·T) memory.
 */
export class ObservedAttentionPress extends ScorerPress {
  readonly name = 'observed_attention';
  readonly needsWholePass = true;

  score(ctx: LayerContext): Float64Array[] {
    const G = ctx.config.numHeads / ctx.config.numKvHeads;
    const sums = Array.from({ length: ctx.config.numHeads }, (_, h) => new Float64Array(ctx.cache.lengths[Math.floor(h / G)]));
    forEachAttentionRow(ctx, 0, (h, _row, probs, _T, visible) => {
      const s = sums[h];
      for (let t = 0; t < visible; t++) s[t] += probs[t];
    });
    sums.forEach((s, h) => {
      const P = ctx.cache.headPositions(Math.floor(h / G));
      // Rows and entries are both in ascending position order: walk them together.
      let r = 0;
      for (let t = 0; t < s.length; t++) {
        while (r < ctx.rows && ctx.positions[r] < P[t]) r++;
        s[t] /= ctx.rows - r;
      }
    });
    return groupMean(sums, ctx.config.numKvHeads);
  }
}
