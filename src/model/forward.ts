import type { Backend } from '../backend/backend.js';
import type { KVCache } from '../cache/kv-cache.js';
import type { ModelConfig } from './config.js';
import { LayerContext, type Compressor, type ModelParts } from './layer-context.js';
import { linear, weightRow, type ModelWeights } from './weights.js';

export interface ForwardOptions {
  /** Which logits to compute: only the last row (default), every row, or none (backbone only). */
  logits?: 'last' | 'all' | 'none';
  /** Called after each layer's attention to evict cache entries. */
  press?: Compressor | null;
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
  positions = new Int32Array(0);
  scratch = new Float32Array(0); // attention row
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
      this.positions = new Int32Array(rows);
      this.rows = rows;
    }
    if (length > this.scratch.length) this.scratch = new Float32Array(Math.max(length, 2 * this.scratch.length));
  }
}

/** The forward pass, top to bottom (llama2.c's run.c, batched over the pass's rows). */
export function forward(model: ModelParts & { weights: ModelWeights; source: string }, ws: Workspace, tokens: ArrayLike<number>, cache: KVCache, opts: ForwardOptions): Float32Array {
  const c = model.config, w = model.weights, be = model.backend;
  const R = tokens.length, D = c.hiddenSize, F = c.intermediateSize, hd = c.headDim;
  const qDim = c.numHeads * hd, kvDim = c.numKvHeads * hd, eps = c.rmsNormEps;
  const start = cache.nextPosition;
  if (R === 0) throw new Error('forward: no tokens to process');
  if (cache.layers.length !== c.numLayers) throw new Error(`forward: cache has ${cache.layers.length} layers, the model ${c.numLayers}`);
  if (start + R > c.maxPositionEmbeddings) {
    throw new Error(`${model.source}: ${start + R} tokens exceed the model's context of ${c.maxPositionEmbeddings} positions`);
  }
  let longest = 0;
  for (const l of cache.layers) for (const n of l.lengths) longest = Math.max(longest, n);
  ws.reserve(R, longest + R);

  // Embedding lookup.
  for (let r = 0; r < R; r++) {
    const t = tokens[r];
    if (!Number.isInteger(t) || t < 0 || t >= c.vocabSize) throw new Error(`forward: token id ${t} outside the vocabulary [0, ${c.vocabSize})`);
    weightRow(w.embedding, D, t, 0, D, ws.x, r * D);
    ws.positions[r] = start + r;
  }
  model.rope.tables(ws.positions, R, ws.cos, ws.sin);
  const isPrefill = start === 0;
  cache.nextPosition = start + R;

  for (let l = 0; l < c.numLayers; l++) {
    const lw = w.layers[l], lc = cache.layers[l];
    // Attention: qkv projections, optional q/k norm, RoPE, append, attend.
    be.rmsnorm(ws.xb, ws.x, lw.attnNorm, R, D, eps);
    linear(be, ws.q, ws.xb, lw.wq, R, qDim, D, lw.bq);
    linear(be, ws.k, ws.xb, lw.wk, R, kvDim, D, lw.bk);
    linear(be, ws.v, ws.xb, lw.wv, R, kvDim, D, lw.bv);
    if (lw.qNorm) be.rmsnorm(ws.q, ws.q, lw.qNorm, R * c.numHeads, hd, eps);
    if (lw.kNorm) be.rmsnorm(ws.k, ws.k, lw.kNorm, R * c.numKvHeads, hd, eps);
    be.rope(ws.q, R, c.numHeads, hd, ws.cos, ws.sin);
    be.rope(ws.k, R, c.numKvHeads, hd, ws.cos, ws.sin);
    lc.append(ws.k, ws.v, ws.positions, R);
    be.attention({
      out: ws.att, q: ws.q, rows: R, numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: hd,
      keys: lc.keys, values: lc.values, lengths: lc.lengths, scale: 1 / Math.sqrt(hd), scratch: ws.scratch,
    });
    // The press sees this pass's full activations and edits only what the cache keeps.
    if (opts.press) {
      const keep = opts.press.compress(new LayerContext(model, l, cache, isPrefill, R, ws.xb, ws.positions.subarray(0, R), ws.q));
      if (keep) lc.keep(keep);
    }
    linear(be, ws.xb, ws.att, lw.wo, R, D, qDim);
    addInPlace(ws.x, ws.xb, R * D);

    // SwiGLU feed-forward.
    be.rmsnorm(ws.xb, ws.x, lw.ffnNorm, R, D, eps);
    linear(be, ws.hb, ws.xb, lw.wGate, R, F, D);
    linear(be, ws.hb2, ws.xb, lw.wUp, R, F, D);
    be.siluMul(ws.hb, ws.hb2, R * F);
    linear(be, ws.xb, ws.hb, lw.wDown, R, D, F);
    addInPlace(ws.x, ws.xb, R * D);
  }

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

function addInPlace(x: Float32Array, y: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) x[i] += y[i];
}
