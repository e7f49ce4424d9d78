/** RoPE frequency scaling, as Hugging Face's `rope_scaling` (only the variants we support). */
export type RopeScaling =
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number };

export type Architecture = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'phi3' | 'gemma3';

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
  /** Per-frequency divisors [headDim/2] of the RoPE frequencies (GGUF's `rope_freqs.weight`: Llama 3.x). */
  ropeFreqFactors?: number[];
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2). */
  attentionBias: boolean;
  /** Per-head RMSNorm on q and k before RoPE (Qwen3, Gemma 3). */
  qkNorm: boolean;
  // Gemma 3 (every field below is optional; absent means the Llama behaviour).
  /** Feed-forward gate activation: SwiGLU's silu (default) or GeGLU's tanh-approximated GELU. */
  activation?: 'silu' | 'gelu_tanh';
  /** Input embeddings are multiplied by this (Gemma: √hidden); 1 by default. */
  embeddingScale?: number;
  /** RMSNorms after attention and after the feed-forward, before the residual add ("sandwich"). */
  postNorms?: boolean;
  /** Attention logits are multiplied by queryPreAttnScalar^-½ instead of headDim^-½. */
  queryPreAttnScalar?: number;
  /** Sliding-window layers see the last `slidingWindow` positions (the query's own included). */
  slidingWindow?: number;
  /** [numLayers] which layers use the sliding window (Gemma 3: five of every six). */
  slidingLayers?: boolean[];
  /** RoPE base of the sliding layers (no scaling); the global layers use ropeTheta/ropeScaling. */
  localRopeTheta?: number;
}

/** The factor attention logits are multiplied by. */
export function attentionScale(c: ModelConfig): number {
  return 1 / Math.sqrt(c.queryPreAttnScalar ?? c.headDim);
}

/** The attention window of layer `l` (in positions), or undefined for full attention. */
export function layerWindow(c: ModelConfig, l: number): number | undefined {
  return c.slidingWindow !== undefined && c.slidingLayers?.[l] ? c.slidingWindow : undefined;
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
  if (c.slidingWindow !== undefined && !(Number.isInteger(c.slidingWindow) && c.slidingWindow > 0)) throw new Error(`${source}: invalid slidingWindow ${c.slidingWindow}`);
  if (c.slidingLayers !== undefined && c.slidingLayers.length !== c.numLayers) throw new Error(`${source}: slidingLayers lists ${c.slidingLayers.length} layers, the model has ${c.numLayers}`);
  if (c.localRopeTheta !== undefined && !(c.localRopeTheta > 0)) throw new Error(`${source}: invalid localRopeTheta ${c.localRopeTheta}`);
  if (c.queryPreAttnScalar !== undefined && !(c.queryPreAttnScalar > 0)) throw new Error(`${source}: invalid queryPreAttnScalar ${c.queryPreAttnScalar}`);
}
