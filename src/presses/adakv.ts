import type { LayerContext } from '../model/layer-context.js';
import { keptCount } from './common.js';
import type { KeepIndices } from './press.js';
import { topK, type ScorerPress } from './scorer.js';
import { ScorerWrapper } from './wrapper.js';

/**
 * AdaKV (Feng et al., "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation for
 * Efficient LLM Inference", arXiv 2407.11550): the layer keeps the same total as the plain press,
 * floor(T(1 − ratio)) per KV head on average, but chooses it globally over the heads, so heads
 * whose scores are concentrated give budget to heads whose scores are spread. A safeguard first
 * guarantees each head its top floor(n_kept · alphaSafeguard) entries.
 *
 * Deliberate deviation from the Python library, which only masks evicted entries: this is
 * **real eviction** — every head keeps its own number of entries and the rest is freed.
 * Ties are broken by lower position, then lower head.
 */
export class AdaKVPress extends ScorerWrapper {
  readonly alphaSafeguard: number;

  constructor(inner: ScorerPress, compressionRatio = inner?.compressionRatio, alphaSafeguard = 0.2) {
    if (!(alphaSafeguard >= 0 && alphaSafeguard <= 1)) throw new RangeError(`alphaSafeguard must be in [0, 1], got ${alphaSafeguard}`);
    super(inner, 'adakv', compressionRatio);
    this.alphaSafeguard = alphaSafeguard;
  }

  protected override select(_ctx: LayerContext, scores: Float64Array[], ratio: number): KeepIndices {
    const budgets = scores.map((s) => keptCount(s.length, ratio));
    const safe = scores.map((s, g) => topK(s, Math.floor(budgets[g] * this.alphaSafeguard)));
    return globalTopK(scores, safe, budgets.reduce((a, b) => a + b, 0));
  }
}

/**
 * Per-head keep sets holding, over all heads together, the `total` best entries: first every
 * head's `protect`ed entries, then the highest scores of the rest (ties: lower position, then lower
 * head; NaN lowest). Returns ascending indices per head.
 */
export function globalTopK(scores: readonly Float64Array[], protect: readonly Int32Array[], total: number): KeepIndices {
  const H = scores.length;
  const chosen = scores.map((s) => new Uint8Array(s.length));
  let left = total;
  protect.forEach((idx, g) => {
    for (const t of idx) chosen[g][t] = 1;
    left -= idx.length;
  });
  let n = 0;
  for (let g = 0; g < H; g++) n += scores[g].length - protect[g].length;
  const head = new Int32Array(n), pos = new Int32Array(n), val = new Float64Array(n);
  n = 0;
  for (let g = 0; g < H; g++) {
    const s = scores[g];
    for (let t = 0; t < s.length; t++) {
      if (chosen[g][t]) continue;
      head[n] = g;
      pos[n] = t;
      val[n++] = Number.isNaN(s[t]) ? -Infinity : s[t];
    }
  }
  const order = Int32Array.from({ length: n }, (_, i) => i).sort((a, b) => {
    const d = val[b] - val[a];
    return d > 0 ? 1 : d < 0 ? -1 : pos[a] - pos[b] || head[a] - head[b];
  });
  for (let i = 0; i < Math.min(left, n); i++) chosen[head[order[i]]][pos[order[i]]] = 1;
  return chosen.map((c) => {
    const out: number[] = [];
    for (let t = 0; t < c.length; t++) if (c[t]) out.push(t);
    return Int32Array.from(out);
  });
}
