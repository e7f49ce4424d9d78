/** RoPE frequency scaling, as Hugging Face's `rope_scaling` (only the variants we support). */
export type RopeScaling =
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number };

export type Architecture = 'llama' | 'mistral' | 'qwen2' | 'qwen3';

/** One normalized description of every supported Llama-family model. */
export interface ModelConfig {
  architecture: Architecture;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  /** Longest sequence the model was trained for; prompts beyond it are rejected. */
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2). */
  attentionBias: boolean;
  /** Per-head RMSNorm on q and k before RoPE (Qwen3). */
  qkNorm: boolean;
}

/** Throws a one-line error when the shape fields are inconsistent or absurd. */
export function validateConfig(c: ModelConfig, source: string): void {
  const ints: (keyof ModelConfig)[] = ['hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'vocabSize', 'maxPositionEmbeddings'];
  for (const k of ints) {
    const v = c[k] as number;
    if (!Number.isInteger(v) || v <= 0 || v > 1 << 24) throw new Error(`${source}: invalid ${k} ${v}`);
  }
  if (c.numHeads % c.numKvHeads !== 0) throw new Error(`${source}: numHeads ${c.numHeads} is not a multiple of numKvHeads ${c.numKvHeads}`);
  if (c.headDim % 2 !== 0) throw new Error(`${source}: headDim ${c.headDim} must be even for RoPE`);
  if (!(c.rmsNormEps > 0)) throw new Error(`${source}: invalid rmsNormEps ${c.rmsNormEps}`);
  if (!(c.ropeTheta > 0)) throw new Error(`${source}: invalid ropeTheta ${c.ropeTheta}`);
}
