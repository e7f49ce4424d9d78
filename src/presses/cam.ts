import type { LayerContext } from '../model/layer-context.js';
import { forEachAttentionRow, keptCount, uniformLength } from './common.js';
import { DecodingPress } from './decoding.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import { requireScorer, type KeepIndices, type Press, type ScoreObserver } from './press.js';
import { mulberry32 } from './random.js';
import type { WrapperEntry } from './registry.js';
import { topK, type ScorerPress } from './scorer.js';

export const camOptions = defineOptions({
  compressionInterval: { type: 'integer', default: 512, min: 1, description: 'decoding forward passes between two compressions' },
  targetSize: { type: 'integer', default: 2048, min: 1, description: 'entries left after a compression (the same tokens for every head)' },
  hiddenStatesBufferSize: { type: 'integer', default: 256, min: 0, description: 'forward passes whose hidden states the scorer sees' },
  mergeBudget: { type: 'integer', default: 32, min: 1, description: 'kept entries after an evicted one that its value may merge into' },
  seed: { type: 'integer', default: 0, min: 0, description: 'seed of the Bernoulli merge draws (re-seeded at every prefill)' },
});

/**
 * CaM (Zhang et al., "CaM: Cache Merging for Memory-efficient LLMs Inference", ICML 2024; kvpress
 * `CAMPress`, a DecodingPress): while generating, every KV head adds up the attention each cached
 * entry receives from every decoding pass (the group's query heads averaged, recomputed from the
 * pass's queries). At each DecodingPress compression the scorer's scores, averaged over the KV
 * heads, evict the same T − targetSize tokens from every head; the k best-scoring evicted tokens
 * (k = decoding passes since the last compression) are merge candidates. Candidate e merges into
 * the next mergeBudget kept entries W after it: each w ∈ W independently, with probability
 * p = clamp(A_e / mean_{w∈W} A_w, 0, 1) (A the cumulative attention of that head), gets v_e / |W|
 * added to its value. Keys are untouched; the cumulative attention follows the kept entries.
 * The draws come from a seeded generator (kvpress uses torch.bernoulli), in the order: head,
 * candidate by position, target by position. Decoding only.
 * The attention is recomputed from the pass's float32 queries against the cached keys as stored
 * (one KV head at a time); the merged values are written back with setValue, which encodes them in
 * the cache's element type, so with a q8_0 or q4_0 cache each merge is quantized again.
 */
export class CAMPress extends DecodingPress {
  override readonly name: string;
  readonly options: OptionsOf<typeof camOptions>;
  private readonly merger: CamMerger;

  constructor(scorer: ScorerPress, options: Partial<OptionsOf<typeof camOptions>> = {}) {
    const o = resolveOptions(camOptions, options, 'CAMPress');
    const merger = new CamMerger(requireScorer(scorer, 'CAMPress'), o.mergeBudget, o.seed);
    super(merger, { compressionInterval: o.compressionInterval, targetSize: o.targetSize, hiddenStatesBufferSize: o.hiddenStatesBufferSize });
    this.options = o;
    this.merger = merger;
    this.name = `cam_${scorer.name}`;
  }

  override reset(): void {
    super.reset();
    this.merger.forget();
  }

  override compress(ctx: LayerContext): KeepIndices | null {
    if (ctx.isPrefill) this.merger.forget(ctx.layer);
    else this.merger.accumulate(ctx);
    return super.compress(ctx);
  }

  /** Cumulative attention of layer `layer`'s entries, per KV head (for inspection and tests). */
  cumulativeAttention(layer: number): readonly Float64Array[] | undefined {
    return this.merger.attention.get(layer);
  }
}

/** The base press CAMPress's DecodingPress calls at each compression: token-level eviction plus merging. */
class CamMerger implements Press {
  readonly name: string;
  compressionRatio = 0;
  readonly attention = new Map<number, Float64Array[]>();
  private readonly since = new Map<number, number>();
  private rng: () => number;

  constructor(readonly scorer: ScorerPress, readonly mergeBudget: number, readonly seed: number) {
    this.name = scorer.name;
    this.rng = mulberry32(seed);
  }

  get observer(): ScoreObserver | null {
    return this.scorer.observer;
  }

  set observer(o: ScoreObserver | null) {
    this.scorer.observer = o;
  }

  forget(layer?: number): void {
    if (layer === undefined || layer === 0) this.rng = mulberry32(this.seed);
    if (layer === undefined) { this.attention.clear(); this.since.clear(); return; }
    this.attention.delete(layer);
    this.since.delete(layer);
  }

  /** Adds the attention of this decoding pass's queries to every entry's running sum. */
  accumulate(ctx: LayerContext): void {
    const c = ctx.config, G = c.numHeads / c.numKvHeads;
    const A = (this.attention.get(ctx.layer) ?? []).slice();
    for (let g = 0; g < c.numKvHeads; g++) {
      const grown = new Float64Array(ctx.cache.lengths[g]);
      if (A[g]) grown.set(A[g].subarray(0, grown.length));
      A[g] = grown;
    }
    forEachAttentionRow(ctx, 0, (h, _row, probs, T) => {
      const a = A[Math.floor(h / G)];
      for (let t = 0; t < T; t++) a[t] += probs[t] / G;
    });
    this.attention.set(ctx.layer, A);
    this.since.set(ctx.layer, (this.since.get(ctx.layer) ?? 0) + 1);
  }

  compress(ctx: LayerContext): KeepIndices | null {
    const T = uniformLength(ctx, 'CAMPress'), H = ctx.config.numKvHeads, d = ctx.config.headDim;
    const scores = this.scorer.score(ctx);
    this.scorer.observer?.onScores(ctx.layer, scores, this.scorer.logScores);
    const mean = new Float64Array(T);
    for (const s of scores) for (let t = 0; t < T; t++) mean[t] += s[t] / H;
    const keep = topK(mean, keptCount(T, this.compressionRatio));
    const isKept = new Uint8Array(T);
    for (const t of keep) isKept[t] = 1;
    const evicted = Int32Array.from({ length: T }, (_, t) => t).filter((t) => !isKept[t]);
    const k = this.since.get(ctx.layer) ?? 0;
    const candidates = Array.from(topK(Float64Array.from(evicted, (t) => mean[t]), k), (i) => evicted[i]);
    const A = this.attention.get(ctx.layer) ?? Array.from({ length: H }, () => new Float64Array(T));
    for (let g = 0; g < H; g++) {
      const V = ctx.cache.headValues(g).slice(), a = A[g], add = new Float64Array(T * d), touched = new Uint8Array(T);
      let next = 0;
      for (const e of candidates) {
        while (next < keep.length && keep[next] < e) next++;
        const W = keep.subarray(next, next + this.mergeBudget);
        if (W.length === 0) continue;
        let mw = 0;
        for (const w of W) mw += a[w] / W.length;
        const p = a[e] <= 0 ? 0 : mw <= 0 ? 1 : Math.min(1, a[e] / mw);
        for (const w of W) {
          if (!(this.rng() < p)) continue;
          for (let i = 0; i < d; i++) add[w * d + i] += V[e * d + i] / W.length;
          touched[w] = 1;
        }
      }
      const row = new Float32Array(d);
      for (let t = 0; t < T; t++) {
        if (!touched[t]) continue;
        for (let i = 0; i < d; i++) row[i] = V[t * d + i] + add[t * d + i];
        ctx.cache.setValue(g, t, row);
      }
      A[g] = Float64Array.from(keep, (t) => a[t]);
    }
    this.attention.set(ctx.layer, A);
    this.since.set(ctx.layer, 0);
    return Array.from({ length: H }, () => keep);
  }
}

export const camWrapper: WrapperEntry = {
  prefix: 'cam',
  phase: 'decoding',
  description: 'CaM: decoding-time eviction to targetSize (scores averaged over heads) with evicted values merged into the next kept ones by cumulative attention (ICML 2024; decoding only, takes no ratio)',
  options: camOptions,
  wrap: (inner, r, o) => {
    if (r !== 0) throw new RangeError(`CAMPress compresses to targetSize during decoding and takes no compression ratio (got ${r})`);
    return new CAMPress(inner, o as OptionsOf<typeof camOptions>);
  },
};
