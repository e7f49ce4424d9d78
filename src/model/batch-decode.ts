import type { Backend } from '../backend/backend.js';
import type { KVCache } from '../cache/kv-cache.js';
import { attentionScale } from './config.js';
import { attend, decoderLayers, embed, Workspace, type PassRows } from './forward.js';
import type { Model } from './model.js';
import { linear, type Weight } from './weights.js';

/**
 * Rows a product takes per call without changing its numbers, where the backend has no
 * matmulRows for an f32 matrix (BatchDecoder.linear). An f32 matrix then goes one row at a time
 * through the GEMV (the native GEMM sums in another order, and below 8 rows it is slower than
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

/**
 * Row views of the workspace buffers, made once per (buffer, rows) so that a step allocates
 * nothing; dropped when the workspace grows (its buffers are then new).
 */
class RowViews {
  private readonly views = new Map<Float32Array, Float32Array[]>();

  /** Rows [r, r + n) (n ≤ 3) of `buf` ([rows][width]). */
  get(buf: Float32Array, width: number, r: number, n: number): Float32Array {
    let v = this.views.get(buf);
    if (!v) this.views.set(buf, (v = []));
    return (v[r * 4 + n] ??= buf.subarray(r * width, (r + n) * width));
  }

  clear(): void {
    this.views.clear();
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
export class BatchDecoder implements PassRows {
  private readonly ws: Workspace;
  private logits = new Float32Array(0);
  private readonly logitRows: Float32Array[] = [];
  private readonly views = new RowViews();
  private readonly posViews: Int32Array[] = [];
  private caches: readonly KVCache[] = [];
  private R = 0;

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
    this.caches = caches;
    this.R = R;
    for (const cache of caches) cache.begin();
    try {
      this.pass(tokens);
    } catch (e) {
      for (const cache of caches) cache.rollback();
      throw e;
    } finally {
      this.caches = [];
    }
    for (const cache of caches) cache.commit();
    return this.logitRows;
  }

  private reserve(R: number, length: number): void {
    const V = this.model.config.vocabSize, x = this.ws.x;
    this.ws.reserve(R, length);
    if (this.ws.x !== x) {
      this.views.clear();
      this.posViews.length = 0;
      for (let r = 0; r < this.ws.rows; r++) this.posViews.push(this.ws.positions.subarray(r, r + 1));
    }
    if (this.logits.length < R * V) {
      this.views.clear();
      this.logits = new Float32Array(R * V);
      this.logitRows.length = 0;
      for (let r = 0; r < R; r++) this.logitRows.push(this.logits.subarray(r * V, (r + 1) * V));
    }
  }

  /** out = x · Wᵀ for the step's rows, in the row counts per call that keep single-row numbers. */
  linear(out: Float32Array, x: Float32Array, w: Weight, n: number, k: number, bias?: Float32Array | null): void {
    const be = this.model.backend;
    if (be.matmulRows && (w instanceof Float32Array || w.type === 'f32')) {
      // The workspace buffers are [rows][width] with rows ≥ R: the first R rows are the step's.
      be.matmulRows(out, x, w instanceof Float32Array ? w : (w.data as Float32Array), this.R, n, k, bias);
      return;
    }
    const per = rowsPerCall(be, w);
    for (let r = 0; r < this.R; r += per) {
      const rows = Math.min(per, this.R - r);
      linear(this.model.backend, this.views.get(out, n, r, rows), this.views.get(x, k, r, rows), w, rows, n, k, bias);
    }
  }

  /** Each row's key and value go to its own cache, and it attends to that cache alone. */
  attend(l: number, window: number | undefined): void {
    const c = this.model.config, ws = this.ws, vw = this.views, hd = c.headDim;
    const qDim = c.numHeads * hd, kvDim = c.numKvHeads * hd, scale = attentionScale(c);
    for (let r = 0; r < this.R; r++) {
      const lc = this.caches[r].layers[l], pos = this.posViews[r];
      lc.append(vw.get(ws.k, kvDim, r, 1), vw.get(ws.v, kvDim, r, 1), pos, 1);
      attend(this.model.backend, ws, {
        out: vw.get(ws.att, qDim, r, 1), q: vw.get(ws.q, qDim, r, 1), rows: 1, numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: hd,
        cache: lc, queryPositions: pos, scale, scratch: ws.scratch, window,
      });
    }
  }

  private pass(tokens: ArrayLike<number>): void {
    const model = this.model, ws = this.ws, c = model.config, R = this.R, D = c.hiddenSize;
    for (let r = 0; r < R; r++) ws.positions[r] = this.caches[r].nextPosition++;
    embed(model, ws, tokens);
    decoderLayers(model, ws, R, this);
    model.backend.rmsnorm(ws.xb, ws.x, model.weights.finalNorm, R, D, c.rmsNormEps);
    this.linear(this.logits, ws.xb, model.weights.lmHead, c.vocabSize, D);
  }
}
