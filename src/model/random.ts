import type { ModelConfig } from './config.js';
import type { LayerWeights, ModelWeights } from './weights.js';

/** Model shapes used by the benchmark and the press-overhead measurements. */
export const SHAPES = {
  /** stories260K's shape (its real weights live in models/stories260K). */
  stories260K: { hiddenSize: 64, intermediateSize: 172, numLayers: 5, numHeads: 8, numKvHeads: 4, headDim: 8, vocabSize: 512 },
  /** SmolLM2-135M-shaped. */
  small: { hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9, numKvHeads: 3, headDim: 64, vocabSize: 49152 },
  /** Qwen2.5-0.5B-shaped. */
  medium: { hiddenSize: 896, intermediateSize: 4864, numLayers: 24, numHeads: 14, numKvHeads: 2, headDim: 64, vocabSize: 151936 },
} as const;

export type ShapeName = keyof typeof SHAPES;

/** A llama-architecture config of a named shape, with a context long enough for benchmarks. */
export function shapeConfig(name: ShapeName, maxPositionEmbeddings = 32768): ModelConfig {
  return {
    architecture: 'llama', ...SHAPES[name], maxPositionEmbeddings, rmsNormEps: 1e-5, ropeTheta: 10000,
    ropeScaling: null, tieWordEmbeddings: true, attentionBias: false, qkNorm: false,
  };
}

/**
 * Random weights for `config` (uniform, std 0.02; norms 1), from a seeded generator so two
 * builds are identical. Tied embeddings unless the config says otherwise.
 */
export function randomWeights(config: ModelConfig, seed = 1): ModelWeights {
  let s = seed >>> 0 || 1;
  const a = 0.02 * Math.sqrt(3);
  const rand = (n: number): Float32Array => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
      out[i] = ((s >>> 0) / 4294967296 * 2 - 1) * a;
    }
    return out;
  };
  const ones = (n: number) => new Float32Array(n).fill(1);
  const D = config.hiddenSize, F = config.intermediateSize, q = config.numHeads * config.headDim, kv = config.numKvHeads * config.headDim;
  const layers: LayerWeights[] = Array.from({ length: config.numLayers }, () => ({
    attnNorm: ones(D), wq: rand(q * D), wk: rand(kv * D), wv: rand(kv * D), wo: rand(D * q),
    bq: config.attentionBias ? rand(q) : null, bk: config.attentionBias ? rand(kv) : null, bv: config.attentionBias ? rand(kv) : null,
    qNorm: config.qkNorm ? ones(config.headDim) : null, kNorm: config.qkNorm ? ones(config.headDim) : null,
    ffnNorm: ones(D), wGate: rand(F * D), wUp: rand(F * D), wDown: rand(D * F),
  }));
  const embedding = rand(config.vocabSize * D);
  return { embedding, layers, finalNorm: ones(D), lmHead: config.tieWordEmbeddings ? embedding : rand(config.vocabSize * D) };
}
