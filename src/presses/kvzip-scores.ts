import type { KVCache } from '../cache/kv-cache.js';
import { forward, Workspace } from '../model/forward.js';
import type { LayerContext, ModelParts } from '../model/layer-context.js';
import { weightRow, type ModelWeights } from '../model/weights.js';
import { promptParts } from '../pipeline/chat-template.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { pressAttention } from './attention-columns.js';
import { PressError } from './press.js';

/**
 * KVzip's context reconstruction (Kim et al., "KVzip: Query-Agnostic KV Cache Compression with
 * Context Reconstruction", arXiv 2505.23416; kvpress `KVzipPress`), shared by KVzip, RestoreKV and
 * the surrogate trainers: after the prompt's prefill, the model is asked to repeat the prompt and
 * every cached entry is scored by the largest attention any repeat query gives it.
 * The keys and values are read as stored (decoded one KV head at a time by `headKeys`/`headValues`).
 */

/** The library's repeat prompts: the first chunk's, and the one of every later chunk (followed by its 8 previous tokens). */
export const REPEAT_PROMPT = '\n\nRepeat the previous context exactly.';
export const REPEAT_PART_PROMPT = '\n\nRepeat the part of the previous context exactly, starting with';
/** Tokens of the previous chunk quoted after REPEAT_PART_PROMPT. */
const QUOTED = 8;

export interface KVzipScoreOptions {
  /** Context entries before a later chunk that its repeat queries attend to besides the chunk (kvpress `n_sink`). */
  nSink: number;
  /** KVzip+ (the KVzap paper's target): attention ÷ ‖h_query‖ × ‖W_O,h v‖. */
  kvzipPlusNormalization: boolean;
  /** Context tokens per repeat pass (kvpress: 2048). */
  chunkSize: number;
}

/** One repeat pass: it reconstructs the context rows [start, end) from `ids`. */
export interface RepeatChunk {
  start: number;
  end: number;
  ids: number[];
}

/** A model this module can run passes of its own on (the library's Model is one). */
export interface RunnableModel extends ModelParts {
  readonly weights: ModelWeights;
  readonly source: string;
  readonly tokenizer?: Tokenizer | null;
}

/** The model behind a layer context, with its tokenizer; a PressError naming `who` otherwise. */
export function runnableModel(ctx: LayerContext, who: string): RunnableModel & { tokenizer: Tokenizer } {
  const m = ctx.model as Partial<RunnableModel>;
  if (!m.weights || typeof m.source !== 'string') throw new PressError(`${who} runs extra forward passes and needs a loaded model (loadModel), not bare layer weights`);
  if (!m.tokenizer) throw new PressError(`${who} encodes its repeat prompt with the model's tokenizer, and this model has none`);
  return m as RunnableModel & { tokenizer: Tokenizer };
}

/**
 * The template prefix's length and the ids that close the user turn, as kvpress's KVzip takes them
 * from the chat template: no template → prefix 0 (BOS is part of the context) and suffix "\n".
 */
export function templateFrame(tok: Tokenizer, tokens: ArrayLike<number>): { prefixLength: number; suffixIds: number[] } {
  const parts = promptParts(tok, '');
  const suffixIds = tok.encode(parts.questionSuffix, { bos: false });
  if (parts.bos) return { prefixLength: 0, suffixIds };
  const prefix = tok.encode(parts.context, { bos: false });
  const match = prefix.length <= tokens.length && prefix.every((id, i) => tokens[i] === id);
  return { prefixLength: match ? prefix.length : 0, suffixIds };
}

/**
 * The repeat passes over `tokens` (the prompt, BOS and template prefix included): the context after
 * the prefix, cut into chunks of `chunkSize`, each reconstructed from the repeat prompt, the
 * suffix that opens the answer and the chunk's own ids.
 */
export function repeatChunks(tok: Tokenizer, tokens: ArrayLike<number>, prefixLength: number, suffixIds: readonly number[], chunkSize: number): RepeatChunk[] {
  const first = tok.encode(REPEAT_PROMPT, { bos: false }), later = tok.encode(REPEAT_PART_PROMPT, { bos: false });
  const out: RepeatChunk[] = [];
  for (let start = prefixLength; start < tokens.length; start += chunkSize) {
    const end = Math.min(start + chunkSize, tokens.length);
    const head = start === prefixLength ? first : [...later, ...Array.from(tokens).slice(Math.max(prefixLength, start - QUOTED), start)];
    out.push({ start, end, ids: [...head, ...suffixIds, ...Array.from(tokens).slice(start, end)] });
  }
  return out;
}

/**
 * KVzip scores [layers][kvHeads][T] of a fully prefilled `cache` (T entries per head, entry t at
 * position t) of the prompt `tokens`: each chunk's repeat pass runs on a copy-on-write clone of the
 * cache (which it leaves untouched) at positions T…, and in every layer a context entry's score is
 * the largest attention probability it receives from a repeat query of its KV group, the softmax
 * taken over the first min(nSink, start) entries, the chunk and the causal repeat rows. Entries
 * before the first chunk (a template prefix) score 1 for the first nSink of them, else 0.
 * The repeat pass may run past the model's maximum positions, as the library's does.
 */
export function kvzipScores(model: RunnableModel & { tokenizer: Tokenizer }, cache: KVCache, tokens: ArrayLike<number>, opts: KVzipScoreOptions): Float64Array[][] {
  const c = model.config, T = tokens.length;
  for (const l of cache.layers) for (const n of l.lengths) if (n !== T) throw new Error(`KVzip needs the cache to hold exactly the ${T} prompt tokens, found ${n} entries (a press ran before it)`);
  const scores = Array.from({ length: c.numLayers }, () => Array.from({ length: c.numKvHeads }, () => new Float64Array(T)));
  const { prefixLength, suffixIds } = templateFrame(model.tokenizer, tokens);
  for (const s of scores) for (const h of s) h.fill(1, 0, Math.min(opts.nSink, prefixLength));
  // The repeat pass's positions run past the prompt by about one chunk; the library does not cap them.
  const unbounded: RunnableModel = {
    config: { ...c, maxPositionEmbeddings: Number.MAX_SAFE_INTEGER }, layerWeights: model.layerWeights, backend: model.backend,
    rope: model.rope, localRope: model.localRope, weights: model.weights, source: model.source,
  };
  const ws = new Workspace(unbounded.config);
  for (const chunk of repeatChunks(model.tokenizer, tokens, prefixLength, suffixIds, opts.chunkSize)) {
    const sinks = Math.min(opts.nSink, chunk.start);
    const copy = cache.clone();
    try {
      forward(unbounded, ws, chunk.ids, copy, { logits: 'none', press: { compress: (ctx) => void scoreChunk(ctx, T, sinks, chunk, opts.kvzipPlusNormalization, scores[ctx.layer]) } });
    } finally {
      copy.dispose();
    }
  }
  return scores;
}

/**
 * One layer of a repeat pass: writes the chunk's scores into out[g][start … end). The softmax of
 * repeat row r covers the sinks, the chunk and the repeat rows up to r (keys gathered in that
 * order); the column maxima come from the backend's pressAttention kernel (attention-columns.ts).
 * KVzip+ weighs each row by 1/‖h_r‖ there and each entry by ‖W_O,h v‖ after: both are ≥ 0, so
 * the maximum commutes with the entry's factor.
 */
function scoreChunk(ctx: LayerContext, T: number, sinks: number, chunk: RepeatChunk, plus: boolean, out: Float64Array[]): void {
  const c = ctx.config, hd = c.headDim, H = c.numHeads, G = H / c.numKvHeads, R = ctx.rows;
  const { start, end } = chunk, n = end - start, cols = sinks + n + R;
  const rowWeight = plus ? Float32Array.from(rowNorms(ctx.hidden, R, c.hiddenSize), (x) => 1 / x) : null;
  const keys = new Float32Array(cols * hd), lo = new Int32Array(R), hi = Int32Array.from({ length: R }, (_, r) => sinks + n + r + 1);
  const best = new Float64Array(G * cols);
  for (let g = 0; g < c.numKvHeads; g++) {
    const K = ctx.cache.headKeys(g);
    keys.set(K.subarray(0, sinks * hd), 0);
    keys.set(K.subarray(start * hd, end * hd), sinks * hd);
    keys.set(K.subarray(T * hd, (T + R) * hd), (sinks + n) * hd);
    best.fill(0);
    pressAttention(ctx.backend, {
      out: best, q: ctx.queries, qStride: H * hd, heads: Int32Array.from({ length: G }, (_, j) => (g * G + j) * hd), keys, n: cols, headDim: hd,
      rows: R, lo, hi, pad: null, padLogit: 0, scale: 1 / Math.sqrt(hd), rowWeight, mode: 'max',
    });
    const vNorm = plus ? projectedValueL2(ctx, g, start, end) : null, s = out[g];
    for (let j = 0; j < G; j++) {
      for (let t = 0; t < n; t++) {
        const a = best[j * cols + sinks + t] * (vNorm ? vNorm[j][t] : 1);
        if (a > s[start + t]) s[start + t] = a;
      }
    }
  }
}

/** ‖x_r‖₂ of every row of a [rows][width] matrix. */
function rowNorms(x: Float32Array, rows: number, width: number): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = r * width; i < (r + 1) * width; i++) ss += x[i] * x[i];
    out[r] = Math.sqrt(ss);
  }
  return out;
}

/** [group head j][t − start]: ‖W_O,h v_t‖₂ for the query heads h of KV head g and the cached rows [start, end). */
function projectedValueL2(ctx: LayerContext, g: number, start: number, end: number): Float64Array[] {
  const c = ctx.config, hd = c.headDim, D = c.hiddenSize, H = c.numHeads, G = H / c.numKvHeads, n = end - start;
  const V = ctx.cache.headValues(g).slice(start * hd, end * hd), block = new Float32Array(D * hd), proj = new Float32Array(n * D);
  return Array.from({ length: G }, (_, j) => {
    const h = g * G + j;
    for (let i = 0; i < D; i++) weightRow(ctx.weights.wo, H * hd, i, h * hd, (h + 1) * hd, block, i * hd);
    ctx.backend.matmul(proj, V, block, n, D, hd);
    return rowNorms(proj, n, D);
  });
}
