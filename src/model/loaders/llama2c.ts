import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { validateConfig, type ModelConfig } from '../config.js';
import { bf16Bits } from '../../backend/js/kernels.js';
import type { LayerWeights, ModelWeights, Weight, WeightType } from '../weights.js';
import { checkFinite, checkNotAllZero } from './finite.js';

const HEADER_BYTES = 28;
const VERSIONED_MAGIC = 0x616b3432; // "ak42", llama2.c's versioned export formats

/**
 * Loads a llama2.c legacy ("version 0") checkpoint: 7 int32 header fields, then f32 tensors in
 * run.c's order. q/k rows are permuted from llama2.c's interleaved RoPE pairs to the engine's
 * half-split layout (HF row c·hs/2 + j = llama2.c row 2j + c within each head). `type` 'bf16'
 * converts each matrix as it is read (one layer's tensor at a time), so loading never holds
 * more than the bf16 model and one f32 tensor.
 */
export function loadLlama2c(path: string, type?: WeightType): { config: ModelConfig; weights: ModelWeights } {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw new Error(`${path}: cannot open checkpoint (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  try {
    const size = fstatSync(fd).size;
    if (size < HEADER_BYTES) throw new Error(`${path}: truncated checkpoint: ${size} bytes, smaller than the 28-byte header`);
    const head = Buffer.alloc(HEADER_BYTES);
    readSync(fd, head, 0, HEADER_BYTES, 0);
    if (head.readUInt32LE(0) === VERSIONED_MAGIC) {
      throw new Error(`${path}: llama2.c versioned ("ak42") checkpoints are not supported; export with llama2.c's legacy format (version 0)`);
    }
    const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabRaw, seqLen] = Array.from({ length: 7 }, (_, i) => head.readInt32LE(i * 4));
    const config: ModelConfig = {
      architecture: 'llama',
      hiddenSize: dim,
      intermediateSize: hiddenDim,
      numLayers: nLayers,
      numHeads: nHeads,
      numKvHeads: nKvHeads,
      headDim: nHeads > 0 ? dim / nHeads : 0,
      vocabSize: Math.abs(vocabRaw),
      maxPositionEmbeddings: seqLen,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      ropeScaling: null,
      tieWordEmbeddings: vocabRaw > 0,
      attentionBias: false,
      qkNorm: false,
    };
    validateConfig(config, path);
    const hs = config.headDim, kvDim = nKvHeads * hs, L = nLayers, V = config.vocabSize;
    // Sizes are checked against the file before anything is allocated from the header.
    const counts = [V * dim, L * dim, L * dim * dim, L * kvDim * dim, L * kvDim * dim, L * dim * dim, L * dim,
      L * hiddenDim * dim, L * dim * hiddenDim, L * hiddenDim * dim, dim, seqLen * hs / 2, seqLen * hs / 2, config.tieWordEmbeddings ? 0 : V * dim];
    const expected = HEADER_BYTES + 4 * counts.reduce((a, b) => a + b, 0);
    if (size < expected) throw new Error(`${path}: truncated checkpoint: ${size} bytes, the header describes ${expected}`);
    if (size > expected) {
      throw new Error(`${path}: ${size - expected} bytes more than the header describes (${expected}): the header does not match the weights, or this is not a legacy llama2.c checkpoint`);
    }

    let offset = HEADER_BYTES;
    // Tensors carry run.c's names in error messages; a stacked tensor names its layer.
    const next = (n: number, name: string, layer?: number): Float32Array => {
      const out = new Float32Array(n);
      readSync(fd, new Uint8Array(out.buffer), 0, n * 4, offset);
      offset += n * 4;
      checkFinite(path, name, out, 1, layer);
      return out;
    };
    const perLayer = (n: number, name: string): Float32Array[] => Array.from({ length: L }, (_, l) => next(n, name, L > 1 ? l : undefined));
    // bf16: read through one small f32 buffer, rounding as it goes, so that no f32 copy of a
    // matrix is ever made (freed f32 tensors would stay in the process's heap).
    const chunk = type === 'bf16' ? new Float32Array(1 << 16) : null, chunkBits = chunk ? new Uint32Array(chunk.buffer) : null;
    const nextBf16 = (n: number, name: string, layer?: number): Uint16Array => {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i += chunk!.length) {
        const len = Math.min(chunk!.length, n - i);
        readSync(fd, new Uint8Array(chunk!.buffer, 0, len * 4), 0, len * 4, offset);
        offset += len * 4;
        for (let j = 0; j < len; j++) out[i + j] = bf16Bits(chunkBits![j]);
      }
      checkFinite(path, name, out, 1, layer);
      return out;
    };
    const matrix = (n: number, name: string, rows: number, layer?: number, heads = 0): Weight => {
      if (!chunk) {
        const w = next(n, name, layer);
        return heads ? interleavedToHalves(w, heads, hs, dim) : w;
      }
      const h = nextBf16(n, name, layer);
      return { type: 'bf16', rows, cols: n / rows, data: heads ? interleavedToHalves(h, heads, hs, dim) : h };
    };
    const matrices = (n: number, name: string, rows: number, heads = 0): Weight[] =>
      Array.from({ length: L }, (_, l) => matrix(n, name, rows, L > 1 ? l : undefined, heads));
    const embedding = matrix(V * dim, 'token_embedding_table', V);
    checkNotAllZero(path, 'token_embedding_table', bitsOf(embedding));
    const attnNorm = perLayer(dim, 'rms_att_weight');
    const wq = matrices(dim * dim, 'wq', dim, nHeads);
    const wk = matrices(kvDim * dim, 'wk', kvDim, nKvHeads);
    const wv = matrices(kvDim * dim, 'wv', kvDim);
    const wo = matrices(dim * dim, 'wo', dim);
    const ffnNorm = perLayer(dim, 'rms_ffn_weight');
    const w1 = matrices(hiddenDim * dim, 'w1', hiddenDim);
    const w2 = matrices(dim * hiddenDim, 'w2', dim);
    const w3 = matrices(hiddenDim * dim, 'w3', hiddenDim);
    const finalNorm = next(dim, 'rms_final_weight');
    checkNotAllZero(path, 'rms_final_weight', finalNorm);
    offset += seqLen * hs * 4; // legacy cos/sin tables: RoPE is recomputed exactly
    let lmHead = embedding;
    if (!config.tieWordEmbeddings) {
      lmHead = matrix(V * dim, 'wcls', V);
      checkNotAllZero(path, 'wcls', bitsOf(lmHead));
    }
    const layers: LayerWeights[] = Array.from({ length: L }, (_, l) => ({
      attnNorm: attnNorm[l], wq: wq[l], wk: wk[l], wv: wv[l], wo: wo[l],
      bq: null, bk: null, bv: null, qNorm: null, kNorm: null,
      ffnNorm: ffnNorm[l], wGate: w1[l], wDown: w2[l], wUp: w3[l],
    }));
    return { config, weights: { embedding, layers, finalNorm, lmHead } };
  } finally {
    closeSync(fd);
  }
}

/** The stored numbers of a weight as the loader made it (f32, or bf16 bits). */
function bitsOf(w: Weight): Float32Array | Uint16Array {
  if (w instanceof Float32Array) return w;
  if (w.data instanceof Uint16Array) return w.data;
  throw new Error(`llama2.c loader: a ${w.type} matrix cannot come from this format`);
}

/** Reorders each head's rows from interleaved pairs (2j, 2j+1) to halves (j, j + hs/2). */
export function interleavedToHalves<T extends Float32Array | Uint16Array>(w: T, heads: number, hs: number, cols: number): T {
  const out = (w instanceof Float32Array ? new Float32Array(w.length) : new Uint16Array(w.length)) as T;
  const half = hs / 2;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < half; j++) {
      for (let c = 0; c < 2; c++) {
        const src = (h * hs + 2 * j + c) * cols;
        const dst = (h * hs + c * half + j) * cols;
        (out as Float32Array).set((w as Float32Array).subarray(src, src + cols), dst);
      }
    }
  }
  return out;
}
