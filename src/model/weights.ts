import type { ModelConfig } from './config.js';

/**
 * One decoder layer's weights, f32, matrices stored like PyTorch's `nn.Linear.weight`:
 * [out][in] row-major, so y = x · Wᵀ. q/k rows use the Hugging Face half-split RoPE layout.
 */
export interface LayerWeights {
  attnNorm: Float32Array; // [hidden]
  wq: Float32Array; // [numHeads·headDim][hidden]
  wk: Float32Array; // [numKvHeads·headDim][hidden]
  wv: Float32Array; // [numKvHeads·headDim][hidden]
  wo: Float32Array; // [hidden][numHeads·headDim]
  bq: Float32Array | null; // [numHeads·headDim] (Qwen2)
  bk: Float32Array | null;
  bv: Float32Array | null;
  qNorm: Float32Array | null; // [headDim] (Qwen3)
  kNorm: Float32Array | null;
  ffnNorm: Float32Array; // [hidden]
  wGate: Float32Array; // [intermediate][hidden]
  wUp: Float32Array; // [intermediate][hidden]
  wDown: Float32Array; // [hidden][intermediate]
}

export interface ModelWeights {
  embedding: Float32Array; // [vocab][hidden]
  layers: LayerWeights[];
  finalNorm: Float32Array; // [hidden]
  /** [vocab][hidden]; the same array as `embedding` when tied. */
  lmHead: Float32Array;
}

/** Checks every array's length against the config; throws naming the tensor. */
export function validateWeights(c: ModelConfig, w: ModelWeights, source: string): void {
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim, D = c.hiddenSize, F = c.intermediateSize;
  const check = (name: string, a: Float32Array | null, n: number, required = true) => {
    if (a === null) {
      if (required) throw new Error(`${source}: missing tensor ${name}`);
      return;
    }
    if (a.length !== n) throw new Error(`${source}: tensor ${name} has ${a.length} values, expected ${n}`);
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
  });
}

/** One layer's matrices as bf16 bits, laid out as their f32 originals. */
export interface Bf16LayerWeights {
  wq: Uint16Array;
  wk: Uint16Array;
  wv: Uint16Array;
  wo: Uint16Array;
  wGate: Uint16Array;
  wUp: Uint16Array;
  wDown: Uint16Array;
}

/** The bf16 copy of every matrix a decode step reads. */
export interface Bf16Weights {
  layers: Bf16LayerWeights[];
  lmHead: Uint16Array;
}
