import type { Backend } from '../backend/backend.js';
import type { LayerContext } from '../model/layer-context.js';
import { range } from './common.js';
import { linalg64 } from './linalg64.js';
import { ScorerPress } from './scorer.js';

/**
 * KeyDiff (Park et al., "KeyDiff: Key Similarity-Based KV Cache Eviction for Long-Context LLM
 * Inference in Resource-Constrained Environments", arXiv 2504.15364): keep the keys most unlike
 * the average direction. anchor = mean_j k_j/‖k_j‖, s_j = −cos(k_j, anchor). The paper runs it
 * block-wise: registry name `block_keydiff` (BlockPress, blockSize 128), which scores each head's
 * blocks through `headScorer` (a head's scores depend on its own keys alone).
 * It reads the keys as stored, one KV head at a time through `headKeys`, so with a 16-bit or
 * quantized cache the anchor and cosines are those of the rounded keys.
 */
export class KeyDiffPress extends ScorerPress {
  readonly name = 'keydiff';

  score(ctx: LayerContext): Float64Array[] {
    const hd = ctx.config.headDim, cache = ctx.cache;
    return Array.from(cache.lengths, (T, g) => this.headScorer(ctx.backend, cache.headKeys(g), hd, T)(range(0, T)));
  }

  /**
   * Scores of subsets `rows` (ascending) of one head's T keys K ([T][hd]) among themselves alone.
   * The norms and unit keys are computed once; each call sums the unit keys of `rows` (in index
   * order, as the weights of a 0/1 vector) and takes every key's dot product with that anchor on
   * the backend's float64 helpers (linalg64.ts), so block-wise KeyDiff costs O(T·hd) per block.
   * K must stay unchanged while the scorer is in use.
   */
  headScorer(backend: Backend, K: Float32Array, hd: number, T: number): (rows: Int32Array) => Float64Array {
    const la = linalg64(backend), dots = new Float64Array(T), norms = new Float64Array(T), U = new Float64Array(T * hd);
    la.rowDots(dots, K, hd, T, hd, new Float64Array(0), 0, null, true);
    // torch's F.normalize clamps the norm at 1e-12.
    for (let t = 0; t < T; t++) {
      norms[t] = Math.max(Math.sqrt(dots[t]), 1e-12);
      dots[t] = 1 / norms[t];
    }
    la.scaleRows(U, K, hd, T, hd, dots);
    const weight = new Float64Array(T), anchor = new Float64Array(hd);
    return (rows) => {
      const m = rows.length, end = m ? rows[m - 1] + 1 : 0, s = new Float64Array(m);
      if (m === 0) return s;
      weight.fill(0);
      for (let i = 0; i < m; i++) weight[rows[i]] = 1;
      la.gemm(anchor, weight, U, 1, hd, end, false);
      let an = 0;
      for (let d = 0; d < hd; d++) an += (anchor[d] /= m) ** 2;
      an = Math.max(Math.sqrt(an), 1e-8);
      la.rowDots(s, K, hd, m, hd, anchor, 1, rows, false);
      for (let i = 0; i < m; i++) s[i] = -s[i] / (Math.max(norms[rows[i]], 1e-8) * an);
      return s;
    };
  }
}
