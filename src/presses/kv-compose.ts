import type { LayerContext, PrefillDone } from '../model/layer-context.js';
import { forEachAttentionRow } from './common.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import { checkRatio, type Press, type PressPhase, type ScoreObserver } from './press.js';
import type { PressEntry } from './registry.js';
import { topK } from './scorer.js';

export const kvComposeOptions = defineOptions({
  structured: { type: 'boolean', default: true, description: 'every KV head of a layer keeps the same count (composite tokens); false: a count per head' },
  aggTask: { type: 'string', default: 'max', values: ['max', 'mean'], description: 'attention a context token gets over the scoring pass\'s queries' },
  aggGroup: { type: 'string', default: 'mean', values: ['mean', 'max'], description: 'over the query heads of a KV group' },
  aggHead: { type: 'string', default: 'mean', values: ['mean', 'max'], description: 'over the KV heads\' sorted score curves, for a layer\'s composite curve (structured)' },
  addVNorm: { type: 'boolean', default: false, description: 'multiply each score by the entry\'s ‖v‖' },
  addMeanAcrossHeads: { type: 'boolean', default: true, description: 'add the mean over the layer\'s KV heads to each head\'s scores' },
  keepTokenLowerBound: { type: 'integer', default: 0, min: 0, description: 'entries each layer (each head when unstructured) keeps at least' },
});

/**
 * KVCompose ("KVCompose: Efficient Structured KV Cache Compression with Composite
 * Tokens", arXiv 2509.05165; kvpress `KVComposePress`): after the prefill, the context runs through
 * the model a second time at positions T … 2T − 1, appended to its own cache (≈ 2× the context's
 * entries meanwhile). A context entry's score is the attention the second pass's queries give it
 * (aggTask over the queries, aggGroup over the KV group, + the mean over KV heads). Each head's
 * scores sorted descending form a curve; a layer's composite curve aggregates its heads' (aggHead),
 * layer 0's is the element-wise max over the layers, and the global top floor(L·T·(1 − ratio)) of
 * all (layer, rank) values give each layer its count: every KV head keeps its own top-count entries
 * ("composite tokens": the same count, different tokens). Unstructured: the top floor(L·H·T·(1 −
 * ratio)) of the per-head curves give each head its own count. The second pass's entries are then
 * dropped. Deviations: unstructured mode evicts for real and drops the copy (the library masks the
 * context and, in 0.5.4, leaves the copy visible); attention in the second pass is recomputed here
 * from float32 logits with a float64 softmax (the library's eager float64). The defaults are those
 * checked against the library; the other aggregations (mean / max) and keepTokenLowerBound (a
 * floor on each count) follow their names. Prefill only; the cost is about one more prefill of
 * twice the attention length.
 * Keys and values are the cached entries as stored, decoded one KV head at a time
 * (`headKeys`/`headValues`), never a float32 copy of the cache.
 */
export class KVComposePress implements Press {
  name = 'kv_compose';
  readonly phase: PressPhase = 'prefill';
  readonly options: OptionsOf<typeof kvComposeOptions>;
  observer: ScoreObserver | null = null;
  private ratio = 0;

  constructor(compressionRatio = 0, options: Partial<OptionsOf<typeof kvComposeOptions>> = {}) {
    this.compressionRatio = compressionRatio;
    this.options = resolveOptions(kvComposeOptions, options, 'KVComposePress');
  }

  get compressionRatio(): number {
    return this.ratio;
  }

  set compressionRatio(r: number) {
    this.ratio = checkRatio(r);
  }

  /** Nothing during the prefill itself: the budgets need every layer's scores (see afterPrefill). */
  compress(): null {
    return null;
  }

  afterPrefill(done: PrefillDone): void {
    if (this.ratio === 0 && !this.observer) return;
    const { cache, model } = done, T = done.tokens.length, c = model.config, L = c.numLayers, H = c.numKvHeads;
    if (cache.layers.some((l) => l.lengths.some((n) => n !== T))) throw new Error(`${this.name} scores the whole prefill and needs every layer to hold its ${T} entries (another press evicted some)`);
    const scores: Float64Array[][] = [];
    const score = (ctx: LayerContext) => void (scores[ctx.layer] = this.layerScores(ctx, T));
    try {
      done.forward(done.tokens, { press: { compress: score }, pastWindow: true });
    } finally {
      cache.truncate(T);
    }
    scores.forEach((s, l) => this.observer?.onScores(l, s, false));
    if (this.ratio === 0) return;
    const o = this.options, sorted = scores.map((layer) => layer.map((s) => Float64Array.from(s).sort().reverse()));
    let counts: number[][];
    if (o.structured) {
      const agg = o.aggHead === 'max' ? Math.max : (...x: number[]) => x.reduce((a, b) => a + b, 0) / x.length;
      const curves = sorted.map((layer) => Float64Array.from({ length: T }, (_, r) => agg(...layer.map((s) => s[r]))));
      curves[0] = curves[0].map((_, r) => Math.max(...curves.map((cv) => cv[r])));
      counts = budgets(curves, Math.floor(L * T * (1 - this.ratio)), T, o.keepTokenLowerBound).map((n) => new Array<number>(H).fill(n));
    } else {
      const flat = budgets(sorted.flat(), Math.floor(L * H * T * (1 - this.ratio)), T, o.keepTokenLowerBound);
      counts = scores.map((_, l) => flat.slice(l * H, (l + 1) * H));
    }
    cache.keep(scores.map((layer, l) => layer.map((s, g) => topK(s, counts[l][g]))));
  }

  /** [kvHeads][T] scores of the context entries 0 … T − 1 from the second pass's queries. */
  private layerScores(ctx: LayerContext, T: number): Float64Array[] {
    const c = ctx.config, Hq = c.numHeads, G = Hq / c.numKvHeads, o = this.options, rows = ctx.rows;
    const perQuery = Array.from({ length: Hq }, () => new Float64Array(T));
    forEachAttentionRow(ctx, 0, (h, _row, probs) => {
      const acc = perQuery[h];
      if (o.aggTask === 'max') for (let t = 0; t < T; t++) acc[t] = Math.max(acc[t], probs[t]);
      else for (let t = 0; t < T; t++) acc[t] += probs[t] / rows;
    });
    const out = Array.from({ length: c.numKvHeads }, (_, g) => {
      const s = new Float64Array(T);
      for (let j = 0; j < G; j++) {
        const x = perQuery[g * G + j];
        for (let t = 0; t < T; t++) s[t] = o.aggGroup === 'max' ? (j === 0 ? x[t] : Math.max(s[t], x[t])) : s[t] + x[t] / G;
      }
      if (o.addVNorm) {
        const V = ctx.cache.headValues(g), d = c.headDim;
        for (let t = 0; t < T; t++) {
          let ss = 0;
          for (let i = 0; i < d; i++) ss += V[t * d + i] ** 2;
          s[t] *= Math.sqrt(ss);
        }
      }
      return s;
    });
    if (o.addMeanAcrossHeads) {
      const mean = new Float64Array(T);
      for (const s of out) for (let t = 0; t < T; t++) mean[t] += s[t] / out.length;
      for (const s of out) for (let t = 0; t < T; t++) s[t] += mean[t];
    }
    return out;
  }
}

/**
 * How many of each curve's ranks fall in the global top n of all curves' values (curves are
 * non-increasing; ties go to the earlier curve), each at least `floor` (and at most T).
 */
function budgets(curves: readonly Float64Array[], n: number, T: number, floor: number): number[] {
  const all = new Float64Array(curves.length * T);
  curves.forEach((cv, i) => all.set(cv, i * T));
  const counts = new Array<number>(curves.length).fill(0);
  for (const i of topK(all, n)) counts[Math.floor(i / T)]++;
  return counts.map((k) => Math.min(T, Math.max(k, floor)));
}

export const kvComposeEntry: PressEntry = {
  name: 'kv_compose',
  description: 'KVCompose: a second pass over the context scores it; per-layer budgets from composite score curves across heads (arXiv 2509.05165; ≈ 2× cache while scoring)',
  options: kvComposeOptions,
  phase: 'prefill',
  create: (r, o) => new KVComposePress(r, o as OptionsOf<typeof kvComposeOptions>),
};
