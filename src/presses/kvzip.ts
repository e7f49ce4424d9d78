import type { LayerContext } from '../model/layer-context.js';
import { kvzipScores, runnableModel } from './kvzip-scores.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import { checkRatio, PressError, type KeepIndices, type Press, type ScoreObserver } from './press.js';
import type { PressEntry } from './registry.js';

export const kvzipOptions = defineOptions({
  layerwise: { type: 'boolean', default: false, description: 'each layer evicts floor(kvHeads·T·ratio) of its own entries (false: one budget over every layer and head)' },
  nSink: { type: 'integer', default: 4, min: 0, description: 'entries before a later chunk that its repeat queries also attend to; the first nSink of a chat-template prefix are always kept' },
  kvzipPlusNormalization: { type: 'boolean', default: false, description: "KVzip+: each repeat query's attention ÷ ‖h‖, each entry's × ‖W_O,h v‖" },
  chunkSize: { type: 'integer', default: 2048, min: 1, description: 'context tokens reconstructed per repeat pass (fixed to 2048 in the library)' },
});

export type KVzipOptions = OptionsOf<typeof kvzipOptions>;

/**
 * KVzip (Kim et al., "KVzip: Query-Agnostic KV Cache Compression with Context Reconstruction",
 * arXiv 2505.23416; kvpress `KVzipPress`): after the prompt's prefill the model is asked to
 * "Repeat the previous context exactly." — the repeat prompt, the answer's opening and the prompt
 * itself run through the model again, chunk by chunk (see kvzip-scores.ts, about 2× the prefill) —
 * and each cached entry scores the largest attention a repeat query of its KV group gives it.
 * The floor(layers·kvHeads·T·ratio) lowest scores over every layer and head are evicted (or, with
 * `layerwise`, floor(kvHeads·T·ratio) per layer), so heads and layers keep different numbers.
 * As the library (and its golden outputs): without a chat template the first chunk starts at the
 * prompt's first token, so no entry is protected as a sink and BOS is scored like any other.
 * Deviations: real eviction where the library masks (as AdaKVPress); ties evict the later
 * position first. Prefill only; needs the model's tokenizer and the prompt's token ids
 * (LayerContext.tokens, which model.forward supplies).
 * The repeat queries are the repeat pass's own (float32); the keys they attend to (and, for
 * KVzip+, the values) are the cached entries as stored, read one KV head at a time from a
 * copy-on-write clone of the cache, never a float32 copy of it.
 */
export class KVzipPress implements Press {
  name = 'kvzip';
  readonly phase = 'prefill' as const;
  observer: ScoreObserver | null = null;
  readonly options: KVzipOptions;
  private ratio = 0;

  constructor(compressionRatio = 0, options: Partial<KVzipOptions> = {}) {
    this.compressionRatio = compressionRatio;
    this.options = resolveOptions(kvzipOptions, options, 'KVzipPress');
  }

  get compressionRatio(): number {
    return this.ratio;
  }

  set compressionRatio(r: number) {
    this.ratio = checkRatio(r);
  }

  /** The layers' scores [layers][kvHeads][T] of a prefill whose last layer `ctx` is (its cache holds every layer). */
  protected scores(ctx: LayerContext): Float64Array[][] {
    if (!ctx.tokens) throw new PressError(`${this.name} re-runs the prompt and needs its token ids (run it through model.forward)`);
    return kvzipScores(runnableModel(ctx, this.name), ctx.kvCache, ctx.tokens, this.options);
  }

  /** Scores once the last layer has its entries, then evicts in every layer; earlier layers wait for it. */
  compress(ctx: LayerContext): KeepIndices | null {
    if (!ctx.isPrefill || ctx.layer !== ctx.config.numLayers - 1 || (this.ratio === 0 && !this.observer)) return null;
    const scores = this.scores(ctx);
    scores.forEach((s, l) => this.observer?.onScores(l, s, false));
    if (this.ratio === 0) return null;
    const T = ctx.rows, extra = this.appendEntries(ctx);
    const ratio = Math.min(1, this.ratio + extra / T);
    const keep = (this.options.layerwise ? scores.map((s) => lowestOut([s], ratio)[0]) : lowestOut(scores, ratio))
      .map((layer) => layer.map((k) => Int32Array.from([...k, ...Array.from({ length: extra }, (_, i) => T + i)])));
    // Earlier layers are done with this pass: the forward pass's rollback still covers their eviction.
    for (let l = 0; l < keep.length - 1; l++) ctx.kvCache.layers[l].keep(keep[l]);
    return keep[keep.length - 1];
  }

  /**
   * Entries a subclass appends to every layer after the prompt's T before eviction (RestoreKV's
   * restore tokens); they are kept, and the prompt's budget shrinks by as many. None here.
   */
  protected appendEntries(_ctx: LayerContext): number {
    return 0;
  }
}

/**
 * Keep indices [layers][heads] (ascending) after evicting the floor(n·ratio) lowest of the n scores
 * of every layer and head together; among equal scores the later position goes first, then the
 * later head and layer. NaN counts lowest.
 */
export function lowestOut(scores: readonly (readonly Float64Array[])[], ratio: number): Int32Array[][] {
  let n = 0;
  for (const layer of scores) for (const s of layer) n += s.length;
  const L = new Int32Array(n), G = new Int32Array(n), P = new Int32Array(n), V = new Float64Array(n);
  n = 0;
  scores.forEach((layer, l) => layer.forEach((s, g) => s.forEach((x, t) => { L[n] = l; G[n] = g; P[n] = t; V[n++] = Number.isNaN(x) ? -Infinity : x; })));
  const order = Int32Array.from({ length: n }, (_, i) => i).sort((a, b) => V[a] - V[b] || P[b] - P[a] || G[b] - G[a] || L[b] - L[a]);
  const out = scores.map((layer) => layer.map((s) => new Uint8Array(s.length).fill(1)));
  for (let i = 0; i < Math.floor(n * ratio); i++) out[L[order[i]]][G[order[i]]][P[order[i]]] = 0;
  return out.map((layer) => layer.map((k) => {
    const idx: number[] = [];
    k.forEach((x, t) => x && idx.push(t));
    return Int32Array.from(idx);
  }));
}

export const kvzipEntry: PressEntry = {
  name: 'kvzip',
  description: 'KVzip: attention each entry gets while the model repeats the prompt; one budget over all layers and heads (arXiv 2505.23416; ~2× prefill)',
  options: kvzipOptions,
  phase: 'prefill',
  create: (r, o) => new KVzipPress(r, o as KVzipOptions),
};
