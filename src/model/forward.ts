import type { Backend, PagedAttentionArgs } from '../backend/backend.js';
import { pagedAttention } from '../backend/js/paged-attention.js';
import type { KVCache } from '../cache/kv-cache.js';
import { attentionScale, layerWindow, type ModelConfig } from './config.js';
import { LayerContext, type AttentionColumns, type Compressor, type ModelParts } from './layer-context.js';
import { linear, weightRow, type ModelWeights, type Weight } from './weights.js';

export interface ForwardOptions {
  /** Which logits to compute: only the last row (default), every row (flat, rows × vocab), or none (backbone only). */
  logits?: 'last' | 'all' | 'none';
  /** Called after each layer's attention to evict cache entries. */
  press?: Compressor | null;
  /** Run even past maxPositionEmbeddings (see PrefillDone.forward). */
  pastWindow?: boolean;
}

/** Activation buffers, allocated once and grown only when a longer pass or cache needs it. */
export class Workspace {
  rows = 0;
  x = new Float32Array(0); // [rows][hidden] residual stream
  xb = new Float32Array(0); // [rows][hidden] normed input / projection output
  q = new Float32Array(0); // [rows][heads·headDim]
  k = new Float32Array(0); // [rows][kvHeads·headDim]
  v = new Float32Array(0);
  att = new Float32Array(0); // [rows][heads·headDim]
  hb = new Float32Array(0); // [rows][intermediate]
  hb2 = new Float32Array(0);
  cos = new Float32Array(0); // [rows][headDim/2]
  sin = new Float32Array(0);
  cosLocal = new Float32Array(0); // [rows][headDim/2], sliding-window layers' RoPE (Gemma 3)
  sinLocal = new Float32Array(0);
  positions = new Int32Array(0);
  scratch = new Float32Array(0); // attention row
  gatherK = new Float32Array(0); // [kvHeads][length][headDim]: f32 entries for a backend without paged attention
  gatherV = new Float32Array(0);
  columns = new Float64Array(0); // [kvHeads][length]: attention column sums, for a press that asks (Compressor.attentionColumns)
  logits: Float32Array;

  constructor(private readonly c: ModelConfig) {
    this.logits = new Float32Array(c.vocabSize);
  }

  reserve(rows: number, length: number): void {
    const c = this.c;
    if (rows > this.rows) {
      const qd = c.numHeads * c.headDim, kvd = c.numKvHeads * c.headDim;
      this.x = new Float32Array(rows * c.hiddenSize);
      this.xb = new Float32Array(rows * c.hiddenSize);
      this.q = new Float32Array(rows * qd);
      this.k = new Float32Array(rows * kvd);
      this.v = new Float32Array(rows * kvd);
      this.att = new Float32Array(rows * qd);
      this.hb = new Float32Array(rows * c.intermediateSize);
      this.hb2 = new Float32Array(rows * c.intermediateSize);
      this.cos = new Float32Array(rows * (c.headDim / 2));
      this.sin = new Float32Array(rows * (c.headDim / 2));
      if (c.localRopeTheta !== undefined) {
        this.cosLocal = new Float32Array(rows * (c.headDim / 2));
        this.sinLocal = new Float32Array(rows * (c.headDim / 2));
      }
      this.positions = new Int32Array(rows);
      this.rows = rows;
    }
    if (length > this.scratch.length) this.scratch = new Float32Array(Math.max(length, 2 * this.scratch.length));
  }
}

/**
 * The forward pass, top to bottom (llama2.c's run.c, batched over the pass's rows).
 *
 * Exception-safe: the cache is put back as it was before the pass when anything throws (a
 * press, a kernel, a bad token). The keep indices a press returns are therefore applied once
 * every layer has run — the cache of a compressing prefill briefly holds the whole pass, as the
 * pass itself needs — and what a press changes directly (ComposedPress's intermediate keeps,
 * KeyRerotation's rotated keys) is copy-on-write until the pass ends.
 */
export function forward(model: ModelParts & { weights: ModelWeights; source: string }, ws: Workspace, tokens: ArrayLike<number>, cache: KVCache, opts: ForwardOptions): Float32Array {
  const c = model.config, R = tokens.length;
  if (R === 0) throw new Error('forward: no tokens to process');
  if (cache.layers.length !== c.numLayers) throw new Error(`forward: cache has ${cache.layers.length} layers, the model ${c.numLayers}`);
  if (cache.layers.some((l) => l.numKvHeads !== c.numKvHeads || l.headDim !== c.headDim)) throw new Error(`forward: cache heads do not match the model's ${c.numKvHeads} KV heads of ${c.headDim}`);
  if (cache.nextPosition + R > c.maxPositionEmbeddings && !opts.pastWindow) {
    throw new Error(`${model.source}: ${cache.nextPosition + R} tokens exceed the model's context of ${c.maxPositionEmbeddings} positions`);
  }
  for (let r = 0; r < R; r++) {
    const t = tokens[r];
    if (!Number.isInteger(t) || t < 0 || t >= c.vocabSize) throw new Error(`forward: token id ${t} outside the vocabulary [0, ${c.vocabSize})`);
  }
  const keeps: (Int32Array[] | null)[] = new Array(c.numLayers).fill(null);
  const isPrefill = cache.nextPosition === 0;
  cache.begin();
  let logits: Float32Array;
  try {
    logits = pass(model, ws, tokens, cache, opts, keeps);
  } catch (e) {
    cache.rollback();
    throw e;
  }
  cache.commit();
  keeps.forEach((k, l) => k && cache.layers[l].keep(k));
  // After a compression no idle page stays: allocatedBytes ≤ bytes + one page per (layer, KV head).
  if (keeps.some((k) => k)) cache.pool.trim();
  if (isPrefill && opts.press?.afterPrefill) {
    try {
      opts.press.afterPrefill({ model, cache, tokens, forward: (t, o) => void forward(model, ws, t, cache, { logits: 'none', ...o }) });
    } catch (e) {
      cache.truncate(0);
      throw e;
    }
  }
  return logits;
}

/** Model parts a pass reads. */
type PassModel = ModelParts & { weights: ModelWeights };

/**
 * How a pass's rows meet the matrices and the KV caches: all rows of one sequence (forward), or
 * one row for each of several sequences (BatchDecoder).
 */
export interface PassRows {
  /** out ← x·Wᵀ (+ bias) over the pass's rows ([rows][n] from [rows][k]). */
  linear(out: Float32Array, x: Float32Array, w: Weight, n: number, k: number, bias?: Float32Array | null): void;
  /** Appends the rows' keys and values (ws.k, ws.v) to layer l of their caches and attends them into ws.att. */
  attend(l: number, window: number | undefined): void;
}

/** ws.x ← the embeddings of R tokens, and the RoPE tables of ws.positions[0, R). */
export function embed(model: PassModel, ws: Workspace, tokens: ArrayLike<number>): void {
  const c = model.config, w = model.weights, R = tokens.length, D = c.hiddenSize;
  for (let r = 0; r < R; r++) weightRow(w.embedding, D, tokens[r], 0, D, ws.x, r * D);
  if (c.embeddingScale !== undefined) for (let i = 0; i < R * D; i++) ws.x[i] *= c.embeddingScale;
  model.rope.tables(ws.positions, R, ws.cos, ws.sin);
  model.localRope?.tables(ws.positions, R, ws.cosLocal, ws.sinLocal);
}

/** Every decoder layer over the R rows of ws.x; afterAttention(l) runs between attention and its output projection. */
export function decoderLayers(model: PassModel, ws: Workspace, R: number, rows: PassRows, afterAttention?: (l: number) => void): void {
  const c = model.config, w = model.weights, be = model.backend;
  const D = c.hiddenSize, F = c.intermediateSize, hd = c.headDim;
  const qDim = c.numHeads * hd, kvDim = c.numKvHeads * hd, eps = c.rmsNormEps;
  for (let l = 0; l < c.numLayers; l++) {
    const lw = w.layers[l];
    const window = layerWindow(c, l);
    const local = window !== undefined && model.localRope;
    const cos = local ? ws.cosLocal : ws.cos, sin = local ? ws.sinLocal : ws.sin;
    // Attention: qkv projections, optional q/k norm, RoPE, append, attend.
    be.rmsnorm(ws.xb, ws.x, lw.attnNorm, R, D, eps);
    rows.linear(ws.q, ws.xb, lw.wq, qDim, D, lw.bq);
    rows.linear(ws.k, ws.xb, lw.wk, kvDim, D, lw.bk);
    rows.linear(ws.v, ws.xb, lw.wv, kvDim, D, lw.bv);
    if (lw.qNorm) be.rmsnorm(ws.q, ws.q, lw.qNorm, R * c.numHeads, hd, eps);
    if (lw.kNorm) be.rmsnorm(ws.k, ws.k, lw.kNorm, R * c.numKvHeads, hd, eps);
    be.rope(ws.q, R, c.numHeads, hd, cos, sin);
    be.rope(ws.k, R, c.numKvHeads, hd, cos, sin);
    rows.attend(l, window);
    afterAttention?.(l);
    rows.linear(ws.xb, ws.att, lw.wo, D, qDim);
    if (lw.postAttnNorm) be.rmsnorm(ws.xb, ws.xb, lw.postAttnNorm, R, D, eps);
    addInPlace(be, ws.x, ws.xb, R * D);

    // Gated feed-forward: SwiGLU, or GeGLU (tanh GELU) for Gemma.
    be.rmsnorm(ws.xb, ws.x, lw.ffnNorm, R, D, eps);
    rows.linear(ws.hb, ws.xb, lw.wGate, F, D);
    rows.linear(ws.hb2, ws.xb, lw.wUp, F, D);
    if (c.activation === 'gelu_tanh') geluTanhMul(ws.hb, ws.hb2, R * F);
    else be.siluMul(ws.hb, ws.hb2, R * F);
    rows.linear(ws.xb, ws.hb, lw.wDown, D, F);
    if (lw.postFfnNorm) be.rmsnorm(ws.xb, ws.xb, lw.postFfnNorm, R, D, eps);
    addInPlace(be, ws.x, ws.xb, R * D);
  }
}

/**
 * The rows of one sequence: every product over all R rows at once, one append and one attention per
 * layer. With `columns`, the attention also adds up the probability each entry receives (where the
 * backend reads the pages in place), left in `columnSums` for the layer's press.
 */
class OneSequence implements PassRows {
  columnSums: AttentionColumns | null = null;

  constructor(private readonly model: PassModel, private readonly ws: Workspace, private readonly cache: KVCache, private readonly positions: Int32Array, private readonly columns = false) {}

  linear(out: Float32Array, x: Float32Array, w: Weight, n: number, k: number, bias?: Float32Array | null): void {
    linear(this.model.backend, out, x, w, this.positions.length, n, k, bias);
  }

  attend(l: number, window: number | undefined): void {
    const c = this.model.config, ws = this.ws, lc = this.cache.layers[l];
    lc.append(ws.k, ws.v, this.positions, this.positions.length);
    let sums: Float64Array | null = null, stride = 0;
    if (this.columns && this.model.backend.attentionPaged) {
      for (let g = 0; g < c.numKvHeads; g++) stride = Math.max(stride, lc.lengths[g]);
      if (ws.columns.length < c.numKvHeads * stride) ws.columns = new Float64Array(c.numKvHeads * stride);
      sums = ws.columns.subarray(0, c.numKvHeads * stride).fill(0);
    }
    attend(this.model.backend, ws, {
      out: ws.att, q: ws.q, rows: this.positions.length, numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: c.headDim,
      cache: lc, queryPositions: this.positions, scale: attentionScale(c), scratch: ws.scratch, window, columnSums: sums, columnStride: stride,
    });
    this.columnSums = sums && { sums, stride, lengths: lc.lengths.slice(0, c.numKvHeads) };
  }
}

function pass(model: PassModel, ws: Workspace, tokens: ArrayLike<number>, cache: KVCache, opts: ForwardOptions, keeps: (Int32Array[] | null)[]): Float32Array {
  const c = model.config, w = model.weights, be = model.backend;
  const R = tokens.length, D = c.hiddenSize, qDim = c.numHeads * c.headDim, eps = c.rmsNormEps;
  const start = cache.nextPosition;
  let longest = 0;
  for (const l of cache.layers) for (const n of l.lengths) longest = Math.max(longest, n);
  ws.reserve(R, longest + R);
  for (let r = 0; r < R; r++) ws.positions[r] = start + r;
  embed(model, ws, tokens);
  const isPrefill = start === 0;
  cache.nextPosition = start + R;
  const positions = ws.positions.subarray(0, R);

  // The press sees exactly this pass's rows and edits only what the cache keeps.
  const press = opts.press;
  const rows = new OneSequence(model, ws, cache, positions, isPrefill && press?.attentionColumns === true);
  decoderLayers(model, ws, R, rows, press ? (l) => {
    const ctx = new LayerContext(model, l, cache, isPrefill, R, ws.xb.subarray(0, R * D), positions, ws.q.subarray(0, R * qDim), tokens, rows.columnSums);
    const keep = press.compress(ctx);
    if (keep) keeps[l] = cache.layers[l].checkKeep(keep);
  } : undefined);

  // Logits only where asked: a [rows][vocab] matrix is never built during a plain prefill.
  const mode = opts.logits ?? 'last';
  if (mode === 'none') return new Float32Array(0);
  if (mode === 'last') {
    const last = ws.x.subarray((R - 1) * D, R * D);
    be.rmsnorm(ws.xb, last, w.finalNorm, 1, D, eps);
    linear(be, ws.logits, ws.xb, w.lmHead, 1, c.vocabSize, D);
    return ws.logits;
  }
  const logits = new Float32Array(R * c.vocabSize);
  be.rmsnorm(ws.xb, ws.x, w.finalNorm, R, D, eps);
  linear(be, logits, ws.xb, w.lmHead, R, c.vocabSize, D);
  return logits;
}

/** gate[i] ← gelu_tanh(gate[i]) · up[i]: 0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))). */
export function geluTanhMul(gate: Float32Array, up: Float32Array, n: number): void {
  const k = Math.sqrt(2 / Math.PI);
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    gate[i] = 0.5 * g * (1 + Math.tanh(k * (g + 0.044715 * g * g * g))) * up[i];
  }
}

/**
 * Attention in place over the pages where the backend reads them; otherwise each head's entries
 * are decoded to f32 into the workspace (one copy per call) for the backend's contiguous kernel.
 */
export function attend(be: Backend, ws: Workspace, a: PagedAttentionArgs): void {
  if (be.attentionPaged) return be.attentionPaged(a);
  // The contiguous kernels know no window: the reference reads the pages instead.
  if (a.window !== undefined) return pagedAttention(a);
  const { cache, headDim: hd, numKvHeads } = a;
  let longest = 0;
  for (let g = 0; g < numKvHeads; g++) longest = Math.max(longest, cache.lengths[g]);
  if (ws.gatherK.length < numKvHeads * longest * hd) {
    ws.gatherK = new Float32Array(Math.max(numKvHeads * longest * hd, 2 * ws.gatherK.length));
    ws.gatherV = new Float32Array(ws.gatherK.length);
  }
  const lc = a.cache as KVCache['layers'][number], stride = longest * hd;
  const keys: Float32Array[] = [], values: Float32Array[] = [];
  for (let g = 0; g < numKvHeads; g++) {
    const n = lc.lengths[g];
    keys.push(ws.gatherK.subarray(g * stride, g * stride + n * hd));
    values.push(ws.gatherV.subarray(g * stride, g * stride + n * hd));
    lc.readKeys(g, keys[g]);
    lc.readValues(g, values[g]);
  }
  be.attention({ out: a.out, q: a.q, rows: a.rows, numHeads: a.numHeads, numKvHeads, headDim: hd, keys, values, lengths: lc.lengths, scale: a.scale, scratch: a.scratch });
}

/** x += y over n values: the backend's kernel where it has one (the same f32 sums). */
export function addInPlace(be: Backend, x: Float32Array, y: Float32Array, n: number): void {
  if (be.add) return be.add(x, y, n);
  for (let i = 0; i < n; i++) x[i] += y[i];
}
