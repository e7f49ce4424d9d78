import type { Backend } from '../backend/backend.js';
import { toBf16 } from '../backend/js/kernels.js';
import type { ModelConfig } from './config.js';

/** Number formats a weight matrix can be held in. */
export type WeightType = 'f32' | 'bf16';

/**
 * A weight matrix [rows][cols] row-major, like PyTorch's `nn.Linear.weight` (y = x · Wᵀ), held
 * in one number format. Each variant names its storage; later formats (GGUF's quantized
 * blocks) are further variants, and code that only multiplies by a matrix goes through
 * `linear()` and `weightRow()`, which dispatch on `type`.
 */
export type WeightMatrix =
  | { type: 'f32'; rows: number; cols: number; data: Float32Array }
  | { type: 'bf16'; rows: number; cols: number; /** bf16 bits, the upper half of each f32 */ data: Uint16Array };

/** A matrix as loaders give it: a plain Float32Array (f32, shape from the config) or a WeightMatrix. */
export type Weight = Float32Array | WeightMatrix;

/** The number format of a weight. */
export function weightType(w: Weight): WeightType {
  return w instanceof Float32Array ? 'f32' : w.type;
}

/** Values held (rows·cols). */
export function weightLength(w: Weight): number {
  return w instanceof Float32Array ? w.length : w.data.length;
}

/** Bytes the weight's storage takes. */
export function weightBytes(w: Weight): number {
  return w instanceof Float32Array ? w.byteLength : w.data.byteLength;
}

/**
 * `w` held as `type` ([rows][cols] given for a plain Float32Array): the same object when it
 * already is, else a converted copy (bf16 rounds to nearest even; widening is exact).
 */
export function toWeightType(w: Weight, type: WeightType, rows: number, cols: number): Weight {
  if (weightType(w) === type) return w;
  if (type === 'bf16') {
    const data = w instanceof Float32Array ? w : (w as { data: Float32Array }).data;
    return { type: 'bf16', rows, cols, data: toBf16(data) };
  }
  const src = (w as { data: Uint16Array }).data;
  const out = new Float32Array(src.length), bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}

/**
 * out[m×n] = x[m×k] · Wᵀ (+ bias) with W [n][k] in whatever format it is held: the backend's
 * kernel for that format (each converts a block at a time, never the whole matrix).
 */
export function linear(be: Backend, out: Float32Array, x: Float32Array, w: Weight, m: number, n: number, k: number, bias?: Float32Array | null): void {
  if (w instanceof Float32Array) be.matmul(out, x, w, m, n, k, bias);
  else if (w.type === 'f32') be.matmul(out, x, w.data, m, n, k, bias);
  else if (be.matmulBf16) be.matmulBf16(out, x, w.data, m, n, k, bias);
  else matmulBf16ByBlocks(be, out, x, w.data, m, n, k, bias);
}

/** Weight rows widened per block, for a backend with no bf16 product. */
const BLOCK_ROWS = 64;
function matmulBf16ByBlocks(be: Backend, out: Float32Array, x: Float32Array, w: Uint16Array, m: number, n: number, k: number, bias?: Float32Array | null): void {
  const wide = new Float32Array(BLOCK_ROWS * k), bits = new Uint32Array(wide.buffer), part = new Float32Array(m * BLOCK_ROWS);
  for (let j0 = 0; j0 < n; j0 += BLOCK_ROWS) {
    const nb = Math.min(BLOCK_ROWS, n - j0);
    for (let i = 0; i < nb * k; i++) bits[i] = w[j0 * k + i] << 16;
    be.matmul(part, x, wide, m, nb, k, bias ? bias.subarray(j0, j0 + nb) : null);
    for (let i = 0; i < m; i++) out.set(part.subarray(i * nb, (i + 1) * nb), i * n + j0);
  }
}

/** Copies values [c0, c1) of row `row` of W [rows][cols] into dst at `at`, as f32. */
export function weightRow(w: Weight, cols: number, row: number, c0: number, c1: number, dst: Float32Array, at = 0): void {
  const from = row * cols + c0, to = row * cols + c1;
  if (w instanceof Float32Array) dst.set(w.subarray(from, to), at);
  else if (w.type === 'f32') dst.set(w.data.subarray(from, to), at);
  else {
    const bits = new Uint32Array(dst.buffer, dst.byteOffset + 4 * at, to - from);
    for (let i = 0; i < to - from; i++) bits[i] = w.data[from + i] << 16;
  }
}

/**
 * One decoder layer's weights, matrices stored like PyTorch's `nn.Linear.weight`:
 * [out][in] row-major, so y = x · Wᵀ. q/k rows use the Hugging Face half-split RoPE layout.
 * Norms and biases stay f32; matrices are held in the precision the model was loaded in.
 */
export interface LayerWeights {
  attnNorm: Float32Array; // [hidden]
  wq: Weight; // [numHeads·headDim][hidden]
  wk: Weight; // [numKvHeads·headDim][hidden]
  wv: Weight; // [numKvHeads·headDim][hidden]
  wo: Weight; // [hidden][numHeads·headDim]
  bq: Float32Array | null; // [numHeads·headDim] (Qwen2)
  bk: Float32Array | null;
  bv: Float32Array | null;
  qNorm: Float32Array | null; // [headDim] (Qwen3)
  kNorm: Float32Array | null;
  ffnNorm: Float32Array; // [hidden]
  wGate: Weight; // [intermediate][hidden]
  wUp: Weight; // [intermediate][hidden]
  wDown: Weight; // [hidden][intermediate]
  /** Gemma 3's sandwich norms, applied to the attention and feed-forward outputs. */
  postAttnNorm?: Float32Array | null; // [hidden]
  postFfnNorm?: Float32Array | null; // [hidden]
}

export interface ModelWeights {
  embedding: Weight; // [vocab][hidden]
  layers: LayerWeights[];
  finalNorm: Float32Array; // [hidden]
  /** [vocab][hidden]; the same object as `embedding` when tied. */
  lmHead: Weight;
}

/**
 * Every matrix of one layer held as `type` (`conv` shares conversions between calls, so a matrix
 * met twice is converted once); norms and biases stay f32. Loaders call it layer by layer, so a
 * conversion never holds more than one layer twice.
 */
export function convertLayer(c: ModelConfig, l: LayerWeights, type: WeightType, conv = converter(type)): LayerWeights {
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim, D = c.hiddenSize, F = c.intermediateSize;
  return {
    ...l,
    wq: conv(l.wq, q, D), wk: conv(l.wk, kv, D), wv: conv(l.wv, kv, D), wo: conv(l.wo, D, q),
    wGate: conv(l.wGate, F, D), wUp: conv(l.wUp, F, D), wDown: conv(l.wDown, D, F),
  };
}

/** toWeightType to `type`, once per distinct matrix (tied embeddings stay one matrix). */
export function converter(type: WeightType): (m: Weight, rows: number, cols: number) => Weight {
  const done = new Map<Weight, Weight>();
  return (m, rows, cols) => {
    let r = done.get(m);
    if (!r) done.set(m, (r = toWeightType(m, type, rows, cols)));
    return r;
  };
}

/**
 * Every matrix of `w` held as `type`, converted once per distinct object (tied embeddings stay
 * one matrix); `w` itself when nothing needs converting. Norms and biases stay f32.
 */
export function convertWeights(c: ModelConfig, w: ModelWeights, type: WeightType): ModelWeights {
  const conv = converter(type);
  const D = c.hiddenSize;
  const out: ModelWeights = {
    embedding: conv(w.embedding, c.vocabSize, D),
    layers: w.layers.map((l) => convertLayer(c, l, type, conv)),
    finalNorm: w.finalNorm,
    lmHead: conv(w.lmHead, c.vocabSize, D),
  };
  const same = out.embedding === w.embedding && out.lmHead === w.lmHead &&
    out.layers.every((l, i) => (['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'] as const).every((k) => l[k] === w.layers[i][k]));
  return same ? w : out;
}

/** The one number format of every matrix of `w`, or 'mixed'. */
export function weightsType(w: ModelWeights): WeightType | 'mixed' {
  const types = new Set<WeightType>([weightType(w.embedding), weightType(w.lmHead)]);
  for (const l of w.layers) for (const m of [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown]) types.add(weightType(m));
  return types.size === 1 ? [...types][0] : 'mixed';
}

/** Checks every array's length against the config; throws naming the tensor. */
export function validateWeights(c: ModelConfig, w: ModelWeights, source: string): void {
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim, D = c.hiddenSize, F = c.intermediateSize;
  const check = (name: string, a: Weight | null, n: number, required = true) => {
    if (a === null) {
      if (required) throw new Error(`${source}: missing tensor ${name}`);
      return;
    }
    const len = weightLength(a);
    if (len !== n) throw new Error(`${source}: tensor ${name} has ${len} values, expected ${n}`);
  };
  check('embedding', w.embedding, c.vocabSize * D);
  check('lmHead', w.lmHead, c.vocabSize * D);
  check('finalNorm', w.finalNorm, D);
  if (w.layers.length !== c.numLayers) throw new Error(`${source}: ${w.layers.length} layers, expected ${c.numLayers}`);
  w.layers.forEach((l, i) => {
    const p = `layers.${i}.`;
    check(p + 'attnNorm', l.attnNorm, D);
    check(p + 'wq', l.wq, q * D);
    check(p + 'wk', l.wk, kv * D);
    check(p + 'wv', l.wv, kv * D);
    check(p + 'wo', l.wo, D * q);
    check(p + 'bq', l.bq, q, c.attentionBias);
    check(p + 'bk', l.bk, kv, c.attentionBias);
    check(p + 'bv', l.bv, kv, c.attentionBias);
    check(p + 'qNorm', l.qNorm, c.headDim, c.qkNorm);
    check(p + 'kNorm', l.kNorm, c.headDim, c.qkNorm);
    check(p + 'ffnNorm', l.ffnNorm, D);
    check(p + 'wGate', l.wGate, F * D);
    check(p + 'wUp', l.wUp, F * D);
    check(p + 'wDown', l.wDown, D * F);
    check(p + 'postAttnNorm', l.postAttnNorm ?? null, D, c.postNorms === true);
    check(p + 'postFfnNorm', l.postFfnNorm ?? null, D, c.postNorms === true);
  });
}
