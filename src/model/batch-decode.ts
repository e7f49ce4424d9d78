import type { Backend } from '../backend/backend.js';
import type { KVCache } from '../cache/kv-cache.js';
import { attentionScale, layerWindow } from './config.js';
import { addInPlace, attend, geluTanhMul, Workspace } from './forward.js';
import type { Model } from './model.js';
import { linear, weightRow, type Weight } from './weights.js';

/**
 * Rows a product takes per call without changing its numbers. An f32 matrix goes one row at a
 * time through the GEMV (the native GEMM sums in another order, and below 8 rows it is slower than
 * GEMVs whose matrix stays in L3). A bf16 or quantized matrix goes three rows at a time where the
 * backend has its own product in that format: those stream up to three rows, each as alone, and
 * switch to a GEMM that rounds activations to bf16 or dequantizes panels from four. Elsewhere
 * the matrix is widened panel by panel for the f32 product, so again one row at a time.
 */
function rowsPerCall(be: Backend, w: Weight): number {
  if (w instanceof Float32Array || w.type === 'f32') return 1;
  if (w.type === 'bf16') return be.matmulBf16 ? 3 : 1;
  return be.matmulQuant ? 3 : 1;
}

/** Row views of a workspace buffer, built once per buffer so that a step allocates nothing. */
class RowViews {
  private buf: Float32Array | null = null;
  private views: Float32Array[] = [];

  /** Rows [r, r + n) of `buf` ([rows][width]). */
  get(buf: Float32Array, width: number, r: number, n: number): Float32Array {
    if (buf !== this.buf) {
      this.buf = buf;
      this.views = [];
    }
    const key = r * 4 + n;
    return (this.views[key] ??= buf.subarray(r * width, (r + n) * width));
  }
}

/**
 * One decode step for several independent sequences at once (the server's concurrent answers):
 * sequence r takes tokens[r] at its cache's next position. Every matrix is applied to all the
 * rows before the next one, so a matrix read from memory for the first row is still in cache for
 * the others; attention runs per sequence on its own cache. Each row's numbers are exactly those
 * of `model.forward([tokens[r]], caches[r])` (same kernels, same row counts per call), so greedy
 * answers do not change with how many run together. No press: a pressed step goes alone.
 */
export class BatchDecoder {
  private readonly ws: Workspace;
  private logits = new Float32Array(0);
  private readonly logitRows: Float32Array[] = [];
  private readonly views = { x: new RowViews(), xb: new RowViews(), q: new RowViews(), k: new RowViews(), v: new RowViews(), att: new RowViews(), hb: new RowViews(), hb2: new RowViews(), logits: new RowViews() };
  private positions = new Int32Array(0);
  private readonly posViews: Int32Array[] = [];

  constructor(readonly model: Model) {
    this.ws = new Workspace(model.config);
  }

  /**
   * Appends tokens[r] to caches[r] for every r and returns the logits: entry r (r < R) is row r's
   * [vocab] view, valid until the next step. On any error every cache is put back as it was.
   */
  step(tokens: ArrayLike<number>, caches: readonly KVCache[]): readonly Float32Array[] {
    const m = this.model, c = m.config, R = tokens.length;
    if (R === 0 || R !== caches.length) throw new Error(`BatchDecoder.step: ${R} tokens for ${caches.length} caches`);
    if (new Set(caches).size !== R) throw new Error('BatchDecoder.step: a cache appears twice; each sequence needs its own');
    let longest = 0;
    for (let r = 0; r < R; r++) {
      const t = tokens[r], cache = caches[r];
      if (!Number.isInteger(t) || t < 0 || t >= c.vocabSize) throw new Error(`BatchDecoder.step: token id ${t} outside the vocabulary [0, ${c.vocabSize})`);
      if (cache.layers.length !== c.numLayers || cache.layers.some((l) => l.numKvHeads !== c.numKvHeads || l.headDim !== c.headDim)) {
        throw new Error(`BatchDecoder.step: cache ${r} does not match the model's ${c.numLayers} layers of ${c.numKvHeads} KV heads of ${c.headDim}`);
      }
      if (cache.nextPosition + 1 > c.maxPositionEmbeddings) throw new Error(`${m.source}: ${cache.nextPosition + 1} tokens exceed the model's context of ${c.maxPositionEmbeddings} positions`);
      for (const l of cache.layers) for (const n of l.lengths) longest = Math.max(longest, n);
    }
    this.reserve(R, longest + 1);
    for (const cache of caches) cache.begin();
    try {
      this.pass(tokens, caches);
    } catch (e) {
      for (const cache of caches) cache.rollback();
      throw e;
    }
    for (const cache of caches) cache.commit();
    return this.logitRows;
  }

  private reserve(R: number, length: number): void {
    const V = this.model.config.vocabSize;
    this.ws.reserve(R, length);
    if (this.logits.length < R * V) {
      this.logits = new Float32Array(R * V);
      this.logitRows.length = 0;
      for (let r = 0; r < R; r++) this.logitRows.push(this.logits.subarray(r * V, (r + 1) * V));
    }
    if (this.positions.length < R) {
      this.positions = new Int32Array(R);
      this.posViews.length = 0;
      for (let r = 0; r < R; r++) this.posViews.push(this.positions.subarray(r, r + 1));
    }
  }

  /** out = x · Wᵀ for R rows, in the row counts per call that keep single-row numbers. */
  private linear(out: RowViews, outBuf: Float32Array, x: RowViews, xBuf: Float32Array, w: Weight, R: number, n: number, k: number, bias?: Float32Array | null): void {
    const per = rowsPerCall(this.model.backend, w);
    for (let r = 0; r < R; r += per) {
      const rows = Math.min(per, R - r);
      linear(this.model.backend, out.get(outBuf, n, r, rows), x.get(xBuf, k, r, rows), w, rows, n, k, bias);
    }
  }

  private pass(tokens: ArrayLike<number>, caches: readonly KVCache[]): void {
    const model = this.model, ws = this.ws, vw = this.views;
    const c = model.config, w = model.weights, be = model.backend;
    const R = tokens.length, D = c.hiddenSize, F = c.intermediateSize, hd = c.headDim;
    const qDim = c.numHeads * hd, kvDim = c.numKvHeads * hd, eps = c.rmsNormEps, scale = attentionScale(c);
    for (let r = 0; r < R; r++) {
      weightRow(w.embedding, D, tokens[r], 0, D, ws.x, r * D);
      this.positions[r] = caches[r].nextPosition;
      caches[r].nextPosition++;
    }
    if (c.embeddingScale !== undefined) for (let i = 0; i < R * D; i++) ws.x[i] *= c.embeddingScale;
    model.rope.tables(this.positions, R, ws.cos, ws.sin);
    model.localRope?.tables(this.positions, R, ws.cosLocal, ws.sinLocal);

    for (let l = 0; l < c.numLayers; l++) {
      const lw = w.layers[l];
      const window = layerWindow(c, l);
      const local = window !== undefined && model.localRope;
      const cos = local ? ws.cosLocal : ws.cos, sin = local ? ws.sinLocal : ws.sin;
      be.rmsnorm(ws.xb, ws.x, lw.attnNorm, R, D, eps);
      this.linear(vw.q, ws.q, vw.xb, ws.xb, lw.wq, R, qDim, D, lw.bq);
      this.linear(vw.k, ws.k, vw.xb, ws.xb, lw.wk, R, kvDim, D, lw.bk);
      this.linear(vw.v, ws.v, vw.xb, ws.xb, lw.wv, R, kvDim, D, lw.bv);
      if (lw.qNorm) be.rmsnorm(ws.q, ws.q, lw.qNorm, R * c.numHeads, hd, eps);
      if (lw.kNorm) be.rmsnorm(ws.k, ws.k, lw.kNorm, R * c.numKvHeads, hd, eps);
      be.rope(ws.q, R, c.numHeads, hd, cos, sin);
      be.rope(ws.k, R, c.numKvHeads, hd, cos, sin);
      for (let r = 0; r < R; r++) {
        const lc = caches[r].layers[l], pos = this.posViews[r];
        lc.append(vw.k.get(ws.k, kvDim, r, 1), vw.v.get(ws.v, kvDim, r, 1), pos, 1);
        attend(be, ws, {
          out: vw.att.get(ws.att, qDim, r, 1), q: vw.q.get(ws.q, qDim, r, 1), rows: 1, numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: hd,
          cache: lc, queryPositions: pos, scale, scratch: ws.scratch, window,
        });
      }
      this.linear(vw.xb, ws.xb, vw.att, ws.att, lw.wo, R, D, qDim);
      if (lw.postAttnNorm) be.rmsnorm(ws.xb, ws.xb, lw.postAttnNorm, R, D, eps);
      addInPlace(ws.x, ws.xb, R * D);

      be.rmsnorm(ws.xb, ws.x, lw.ffnNorm, R, D, eps);
      this.linear(vw.hb, ws.hb, vw.xb, ws.xb, lw.wGate, R, F, D);
      this.linear(vw.hb2, ws.hb2, vw.xb, ws.xb, lw.wUp, R, F, D);
      if (c.activation === 'gelu_tanh') geluTanhMul(ws.hb, ws.hb2, R * F);
      else be.siluMul(ws.hb, ws.hb2, R * F);
      this.linear(vw.xb, ws.xb, vw.hb, ws.hb, lw.wDown, R, D, F);
      if (lw.postFfnNorm) be.rmsnorm(ws.xb, ws.xb, lw.postFfnNorm, R, D, eps);
      addInPlace(ws.x, ws.xb, R * D);
    }
    be.rmsnorm(ws.xb, ws.x, w.finalNorm, R, D, eps);
    const V = c.vocabSize, per = rowsPerCall(be, w.lmHead);
    for (let r = 0; r < R; r += per) {
      const rows = Math.min(per, R - r);
      linear(be, vw.logits.get(this.logits, V, r, rows), vw.xb.get(ws.xb, D, r, rows), w.lmHead, rows, V, D);
    }
  }
}
