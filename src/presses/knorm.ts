import type { LayerContext } from '../model/layer-context.js';
import { ScorerPress } from './scorer.js';

/**
 * Knorm (Devoto et al., "A Simple and Effective L2 Norm-Based Strategy for KV Cache
 * Compression", arXiv 2406.11430): keys with a *small* L2 norm attract attention, so the score is
 * s_j = −‖k_j‖₂ (RoPE is a rotation, so the post-RoPE norm equals the pre-RoPE one).
 * The norms are those of the keys as stored, decoded one KV head at a time by `headKeys` (with a
 * q8_0 or q4_0 cache, the quantized keys' norms), never from a float32 copy of the cache.
 */
export class KnormPress extends ScorerPress {
  readonly name = 'knorm';

  score(ctx: LayerContext): Float64Array[] {
    const hd = ctx.config.headDim, cache = ctx.cache;
    return Array.from(cache.lengths, (T, g) => {
      const K = cache.headKeys(g), s = new Float64Array(T);
      for (let t = 0; t < T; t++) {
        let ss = 0;
        for (let d = 0, o = t * hd; d < hd; d++) ss += K[o + d] * K[o + d];
        s[t] = -Math.sqrt(ss);
      }
      return s;
    });
  }
}
