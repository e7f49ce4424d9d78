import type { Backend } from '../backend/backend.js';
import { toBf16 } from '../backend/js/kernels.js';
import type { ModelConfig } from './config.js';
import { blockFormat, dequantize, GGML_TYPE } from './quant/formats.js';
import { quantizeMatrix } from './quant/quantize.js';

/** ggml block formats a matrix can be held in, as GGUF files store them (F16 included). */
export type QuantType = 'f16' | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1' | 'q2_k' | 'q3_k' | 'q4_k' | 'q5_k' | 'q6_k';

/** Number formats a weight matrix can be held in. */
export type WeightType = 'f32' | 'bf16' | QuantType;

export const QUANT_TYPES: readonly QuantType[] = ['f16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k'];

/** The formats a model's matrices can be converted to (the `weights` option). */
export const WEIGHT_TYPES: readonly WeightType[] = ['f32', 'bf16', 'q8_0', 'q4_k'];

/** WEIGHT_TYPES for messages: 'f32', 'bf16', 'q8_0' or 'q4_k'. */
export const WEIGHT_TYPES_TEXT = `${WEIGHT_TYPES.slice(0, -1).map((t) => `'${t}'`).join(', ')} or '${WEIGHT_TYPES[WEIGHT_TYPES.length - 1]}'`;

/** ggml's type id of a block format. */
export function ggmlTypeOf(t: QuantType): number {
  return GGML_TYPE[t.toUpperCase() as keyof typeof GGML_TYPE];
}

/** The block format of a ggml type id, or null for f32/bf16 and formats we do not hold. */
export function quantTypeOf(ggmlType: number): QuantType | null {
  return QUANT_TYPES.find((t) => ggmlTypeOf(t) === ggmlType) ?? null;
}

/**
 * A weight matrix [rows][cols] row-major, like PyTorch's `nn.Linear.weight` (y = x · Wᵀ), held
 * in one number format. Code that only multiplies by a matrix goes through `linear()` and
 * `weightRow()`, which dispatch on `type`. Quantized matrices hold the file's blocks as stored
 * (each row cols / blockElements blocks), never a widened copy.
 */
export type WeightMatrix =
  | { type: 'f32'; rows: number; cols: number; data: Float32Array }
  | { type: 'bf16'; rows: number; cols: number; /** bf16 bits, the upper half of each f32 */ data: Uint16Array }
  | { type: QuantType; rows: number; cols: number; /** ggml blocks, rows one after the other */ data: Uint8Array };

/** A matrix as loaders give it: a plain Float32Array (f32, shape from the config) or a WeightMatrix. */
export type Weight = Float32Array | WeightMatrix;

type QuantMatrix = Extract<WeightMatrix, { data: Uint8Array }>;

function isQuant(w: Weight): w is QuantMatrix {
  return !(w instanceof Float32Array) && w.data instanceof Uint8Array;
}

/** The number format of a weight. */
export function weightType(w: Weight): WeightType {
  return w instanceof Float32Array ? 'f32' : w.type;
}

/** Values held (rows·cols). */
export function weightLength(w: Weight): number {
  if (w instanceof Float32Array) return w.length;
  return isQuant(w) ? w.rows * w.cols : w.data.length;
}

/** Bytes the weight's storage takes. */
export function weightBytes(w: Weight): number {
  return w instanceof Float32Array ? w.byteLength : w.data.byteLength;
}

/** Bytes of one row of a quantized matrix. */
function rowBytes(w: QuantMatrix): number {
  const f = blockFormat(ggmlTypeOf(w.type))!;
  return (w.cols / f.blockElements) * f.blockBytes;
}

/** Rows [r0, r1) of a quantized matrix as f32 into dst. */
function dequantRows(w: QuantMatrix, r0: number, r1: number, dst: Float32Array): void {
  const rb = rowBytes(w);
  dequantize(ggmlTypeOf(w.type), w.data.subarray(r0 * rb, r1 * rb), dst.subarray(0, (r1 - r0) * w.cols));
}

/**
 * `w` held as `type` ([rows][cols] given for a plain Float32Array): the same object when it
 * already is, else a converted copy (bf16 rounds to nearest even; widening and dequantizing are
 * exact; quantizing rounds to the format's blocks: q8_0, q4_0, q5_0, q4_k).
 */
export function toWeightType(w: Weight, type: WeightType, rows: number, cols: number): Weight {
  if (weightType(w) === type) return w;
  let f32: Float32Array;
  if (w instanceof Float32Array) f32 = w;
  else if (w.type === 'f32') f32 = w.data as Float32Array;
  else if (isQuant(w)) {
    f32 = new Float32Array(w.rows * w.cols);
    dequantRows(w, 0, w.rows, f32);
  } else {
    const src = w.data as Uint16Array;
    f32 = new Float32Array(src.length);
    const bits = new Uint32Array(f32.buffer);
    for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  }
  if (type === 'f32') return f32;
  if (type === 'bf16') return { type: 'bf16', rows, cols, data: toBf16(f32) };
  return { type, rows, cols, data: quantizeMatrix(ggmlTypeOf(type), f32, rows, cols) };
}

/**
 * out[m×n] = x[m×k] · Wᵀ (+ bias) with W [n][k] in whatever format it is held: the backend's
 * kernel for that format (each converts a block at a time, never the whole matrix).
 */
export function linear(be: Backend, out: Float32Array, x: Float32Array, w: Weight, m: number, n: number, k: number, bias?: Float32Array | null): void {
  if (w instanceof Float32Array) be.matmul(out, x, w, m, n, k, bias);
  else if (w.type === 'f32') be.matmul(out, x, w.data as Float32Array, m, n, k, bias);
  else if (isQuant(w)) {
    if (be.matmulQuant) be.matmulQuant(out, x, w.data, ggmlTypeOf(w.type), m, n, k, bias);
    else matmulByPanels(be, out, x, w, m, n, k, bias);
  } else if (be.matmulBf16) be.matmulBf16(out, x, w.data as Uint16Array, m, n, k, bias);
  else matmulByPanels(be, out, x, w, m, n, k, bias);
}

/** Weight rows widened per panel, for a backend with no product in the weight's format. */
const BLOCK_ROWS = 64;
let panel = new Float32Array(0), part = new Float32Array(0);

function matmulByPanels(be: Backend, out: Float32Array, x: Float32Array, w: Exclude<Weight, Float32Array>, m: number, n: number, k: number, bias?: Float32Array | null): void {
  if (panel.length < BLOCK_ROWS * k) panel = new Float32Array(BLOCK_ROWS * k);
  if (part.length < m * BLOCK_ROWS) part = new Float32Array(m * BLOCK_ROWS);
  const bits = new Uint32Array(panel.buffer);
  for (let j0 = 0; j0 < n; j0 += BLOCK_ROWS) {
    const nb = Math.min(BLOCK_ROWS, n - j0);
    if (isQuant(w)) dequantRows(w, j0, j0 + nb, panel);
    else for (let i = 0; i < nb * k; i++) bits[i] = (w.data as Uint16Array)[j0 * k + i] << 16;
    const p = part.subarray(0, m * nb);
    be.matmul(p, x, panel.subarray(0, nb * k), m, nb, k, bias ? bias.subarray(j0, j0 + nb) : null);
    for (let i = 0; i < m; i++) out.set(p.subarray(i * nb, (i + 1) * nb), i * n + j0);
  }
}

let rowScratch = new Float32Array(0);

/** Copies values [c0, c1) of row `row` of W [rows][cols] into dst at `at`, as f32. */
export function weightRow(w: Weight, cols: number, row: number, c0: number, c1: number, dst: Float32Array, at = 0): void {
  const from = row * cols + c0, to = row * cols + c1;
  if (w instanceof Float32Array) dst.set(w.subarray(from, to), at);
  else if (w.type === 'f32') dst.set((w.data as Float32Array).subarray(from, to), at);
  else if (isQuant(w)) {
    // One row dequantized (blocks do not split at arbitrary columns).
    if (rowScratch.length < cols) rowScratch = new Float32Array(cols);
    dequantRows(w, row, row + 1, rowScratch);
    dst.set(rowScratch.subarray(c0, c1), at);
  } else {
    const bits = new Uint32Array(dst.buffer, dst.byteOffset + 4 * at, to - from), h = w.data as Uint16Array;
    for (let i = 0; i < to - from; i++) bits[i] = h[from + i] << 16;
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
 * The format a matrix of `cols` columns is quantized to when `type` is asked for: as
 * llama-quantize does, a K-quant falls back to a 32-value format when rows are not whole
 * 256-value super-blocks (q4_k → q5_0), and a 32-value format to f16 when rows are not whole
 * blocks of 32.
 */
export function quantFallback(type: WeightType, cols: number): WeightType {
  if (type === 'q4_k' && cols % 256 !== 0) type = 'q5_0';
  if ((type === 'q8_0' || type === 'q4_0' || type === 'q5_0') && cols % 32 !== 0) type = 'f16';
  return type;
}

/**
 * Every matrix of one layer held as `type` (`conv` shares conversions between calls, so a matrix
 * met twice is converted once); norms and biases stay f32. Loaders call it layer by layer, so a
 * conversion never holds more than one layer twice. Quantized types fall back per matrix as
 * quantFallback says.
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
    if (!r) done.set(m, (r = toWeightType(m, quantFallback(type, cols), rows, cols)));
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
