import type { LayerContext } from '../model/layer-context.js';
import { padProtected, uniformLength, windowAttention } from './common.js';
import { ScorerPress } from './scorer.js';

/**
 * TOVA (Oren et al., "Transformers are Multi-State RNNs", arXiv 2401.06104): the attention of the
 * last token to every earlier one, averaged over *all* query heads (not per KV group), the same
 * score for every KV head, so all heads keep the same tokens. The last token gets max + 1.
 * The last query is the pass's own (float32); the keys are the cached entries as stored, decoded
 * one KV head at a time by `headKeys`.
 */
export class TOVAPress extends ScorerPress {
  readonly name = 'tova';

  score(ctx: LayerContext): Float64Array[] {
    const T = uniformLength(ctx, 'tova');
    const perHead = windowAttention(ctx, 1);
    const s = new Float64Array(T - 1);
    for (const a of perHead) for (let t = 0; t < T - 1; t++) s[t] += a[t];
    for (let t = 0; t < T - 1; t++) s[t] /= perHead.length;
    return padProtected(Array.from({ length: ctx.config.numKvHeads }, () => s), 1);
  }
}
