import type { LayerContext } from '../model/layer-context.js';
import { range } from './common.js';
import { ScorerPress } from './scorer.js';

/**
 * KeyDiff (Park et al., "KeyDiff: Key Similarity-Based KV Cache Eviction for Long-Context LLM
 * Inference in Resource-Constrained Environments", arXiv 2504.15364): keep the keys most unlike
 * the average direction. anchor = mean_j k_j/‖k_j‖, s_j = −cos(k_j, anchor). The paper runs it
 * block-wise: registry name `block_keydiff` (BlockPress, blockSize 128), which scores each head's
 * blocks through `scoreEntries` (a head's scores depend on its own keys alone).
 */
export class KeyDiffPress extends ScorerPress {
  readonly name = 'keydiff';

  score(ctx: LayerContext): Float64Array[] {
    const hd = ctx.config.headDim, cache = ctx.cache;
    return Array.from(cache.lengths, (T, g) => this.scoreEntries(cache.headKeys(g), hd, range(0, T)));
  }

  /** Scores of the entries `rows` of one head's keys K ([entries][headDim]) among themselves alone. */
  scoreEntries(K: Float32Array, hd: number, rows: Int32Array): Float64Array {
    const T = rows.length, norms = new Float64Array(T), anchor = new Float64Array(hd);
    for (let t = 0; t < T; t++) {
      const o = rows[t] * hd;
      let ss = 0;
      for (let d = 0; d < hd; d++) ss += K[o + d] * K[o + d];
      // torch's F.normalize clamps the norm at 1e-12.
      norms[t] = Math.max(Math.sqrt(ss), 1e-12);
      for (let d = 0; d < hd; d++) anchor[d] += K[o + d] / norms[t];
    }
    let an = 0;
    for (let d = 0; d < hd; d++) an += (anchor[d] /= T) ** 2;
    an = Math.max(Math.sqrt(an), 1e-8);
    const s = new Float64Array(T);
    for (let t = 0; t < T; t++) {
      const o = rows[t] * hd;
      let dot = 0;
      for (let d = 0; d < hd; d++) dot += K[o + d] * anchor[d];
      s[t] = -dot / (Math.max(norms[t], 1e-8) * an);
    }
    return s;
  }
}
