import type { LayerContext } from '../model/layer-context.js';
import { keptCount } from './common.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import type { KeepIndices } from './press.js';
import type { WrapperEntry } from './registry.js';
import { topK, type ScorerPress } from './scorer.js';
import { ScorerWrapper } from './wrapper.js';

export const mergingOptions = defineOptions({
  similarityThreshold: { type: 'number', default: 0, min: 0, max: 1, description: 'minimum key cosine similarity for an evicted value to be merged' },
  mergeFraction: { type: 'number', default: 1, min: 0, max: 1, exclusiveMin: true, description: 'share of the evicted entries (the most similar) that are merged' },
});

const EPS = 1e-6;

/**
 * Merging (kvpress `MergingPress`, after Token Merging, Bolya et al., arXiv 2210.09461, and D2O,
 * Wan et al., arXiv 2406.13035): the inner press's top max(1, floor(T(1 − ratio))) survive, and
 * each evicted entry e folds its value into the surviving entry t whose key is most
 * cosine-similar: w_e = max(sim, 0)·‖v_e‖/(‖v_e‖ + ‖v_t‖ + 1e-6), v_t ← (v_t + Σ w_e v_e)/(1 + Σ w_e)
 * over the e merged into t. Entries below similarityThreshold, or outside the top mergeFraction by
 * similarity, are dropped without merging. Keys are untouched (RoPE-safe).
 * Keys and values are read as stored, one KV head at a time (`headKeys`/`headValues`); a merged
 * value is written back with setValue, which encodes it in the cache's element type (with q8_0 or
 * q4_0, one more rounding of that value).
 */
export class MergingPress extends ScorerWrapper {
  readonly options: OptionsOf<typeof mergingOptions>;

  constructor(inner: ScorerPress, compressionRatio = inner?.compressionRatio, options: Partial<OptionsOf<typeof mergingOptions>> = {}) {
    super(inner, 'merging', compressionRatio);
    this.options = resolveOptions(mergingOptions, options, 'MergingPress');
  }

  protected override select(ctx: LayerContext, scores: Float64Array[], ratio: number): KeepIndices {
    return scores.map((s, g) => {
      const keep = topK(s, Math.max(1, keptCount(s.length, ratio)));
      this.merge(ctx, g, keep);
      return keep;
    });
  }

  /** Folds the evicted values of head g into their most similar kept entries, in place. */
  private merge(ctx: LayerContext, g: number, keep: Int32Array): void {
    const d = ctx.config.headDim, K = ctx.cache.headKeys(g), V = ctx.cache.headValues(g), T = K.length / d;
    const kept = new Uint8Array(T);
    for (const t of keep) kept[t] = 1;
    const evict: number[] = [];
    for (let t = 0; t < T; t++) if (!kept[t]) evict.push(t);
    if (evict.length === 0) return;
    const norm = (X: Float32Array, t: number) => { let s = 0; for (let j = 0; j < d; j++) s += X[t * d + j] ** 2; return Math.sqrt(s); };
    const sim = new Float64Array(evict.length), target = new Int32Array(evict.length);
    evict.forEach((e, i) => {
      const ne = Math.max(norm(K, e), EPS);
      let best = -Infinity, arg = 0;
      for (const t of keep) {
        let dot = 0;
        for (let j = 0; j < d; j++) dot += K[e * d + j] * K[t * d + j];
        const c = dot / (ne * Math.max(norm(K, t), EPS));
        if (c > best) { best = c; arg = t; }
      }
      sim[i] = best;
      target[i] = arg;
    });
    const ok = Array.from(sim, (x) => x >= this.options.similarityThreshold);
    if (this.options.mergeFraction < 1 && ok.some(Boolean)) {
      const q = quantile(Array.from(sim, (x, i) => (ok[i] ? x : -Infinity)), 1 - this.options.mergeFraction);
      ok.forEach((v, i) => (ok[i] = v && sim[i] >= q));
    }
    const acc = new Map<number, { w: number; v: Float64Array }>();
    evict.forEach((e, i) => {
      if (!ok[i]) return;
      const t = target[i], ne = norm(V, e);
      const w = Math.max(sim[i], 0) * ne / (ne + norm(V, t) + EPS);
      const a = acc.get(t) ?? { w: 0, v: new Float64Array(d) };
      a.w += w;
      for (let j = 0; j < d; j++) a.v[j] += w * V[e * d + j];
      acc.set(t, a);
    });
    // V is a per-head transient copy: the merged rows are written back through the cache.
    const row = new Float32Array(d);
    for (const [t, a] of acc) {
      if (!(a.w > 0)) continue;
      for (let j = 0; j < d; j++) row[j] = (V[t * d + j] + a.v[j]) / (1 + a.w);
      ctx.cache.setValue(g, t, row);
    }
  }
}

/** torch.quantile's linear interpolation between the two nearest order statistics. */
function quantile(x: number[], q: number): number {
  const s = [...x].sort((a, b) => a - b), pos = q * (s.length - 1), lo = Math.floor(pos), hi = Math.ceil(pos);
  return lo === hi || s[lo] === s[hi] ? s[lo] : s[lo] + (pos - lo) * (s[hi] - s[lo]);
}

export const mergingWrapper: WrapperEntry = {
  prefix: 'merging',
  description: 'Merging: evicted values folded into the most key-similar kept entry, weighted by similarity and value norms',
  options: mergingOptions,
  wrap: (inner, r, o) => new MergingPress(inner, r, o as OptionsOf<typeof mergingOptions>),
};
