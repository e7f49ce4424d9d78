import type { CheckpointPrecision } from '../../cache/format.js';
import type { Architecture, ModelConfig, RopeScaling } from '../config.js';
import { validateConfig } from '../config.js';
import { convertLayer, converter, validateWeights, type LayerWeights, type ModelWeights, type WeightType } from '../weights.js';
import { loadGgufTokenizer } from '../../tokenizer/gguf.js';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { GgufFile } from './gguf.js';
import { interleavedToHalves } from './llama2c.js';

const ARCHITECTURES: readonly Architecture[] = ['llama', 'qwen2', 'qwen3', 'phi3', 'gemma3'];

/** Reads the model hyper-parameters from `{arch}.*` metadata (the keys llama.cpp's converters write). */
export function ggufConfig(f: GgufFile): ModelConfig {
  const src = f.path;
  const arch = f.get('general.architecture');
  if (typeof arch !== 'string' || !(ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new Error(`${src}: unsupported architecture ${JSON.stringify(arch ?? null)} (general.architecture); supported: ${ARCHITECTURES.join(', ')}`);
  }
  const a = arch as Architecture;
  const num = (key: string, fallback?: number): number => {
    const v = f.get(`${a}.${key}`) ?? fallback;
    if (Array.isArray(v)) throw new Error(`${src}: per-layer ${a}.${key} is not supported`);
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${src}: missing or invalid ${a}.${key}`);
    return v;
  };
  const hiddenSize = num('embedding_length');
  const numHeads = num('attention.head_count');
  const headDim = num('attention.key_length', hiddenSize / numHeads);
  if (num('attention.value_length', headDim) !== headDim) throw new Error(`${src}: value_length ≠ key_length is not supported`);
  if (num('rope.dimension_count', headDim) !== headDim) throw new Error(`${src}: partial rotary embeddings (rope.dimension_count ${num('rope.dimension_count')} < head size ${headDim}) are not supported`);
  const tokens = f.get('tokenizer.ggml.tokens');
  const embd = f.tensors.get('token_embd.weight');
  const vocabSize = num('vocab_size', embd?.dims[1] ?? (Array.isArray(tokens) ? tokens.length : undefined));
  const numLayers = num('block_count');

  const scalingType = f.get(`${a}.rope.scaling.type`) ?? 'none';
  let ropeScaling: RopeScaling | null = null;
  if (scalingType === 'linear') ropeScaling = { type: 'linear', factor: num('rope.scaling.factor') };
  else if (scalingType !== 'none') throw new Error(`${src}: unsupported ${a}.rope.scaling.type ${JSON.stringify(scalingType)} (supported: none, linear)`);
  for (const t of ['rope_factors_long.weight', 'rope_factors_short.weight']) {
    if (f.tensors.has(t)) throw new Error(`${src}: RoPE frequency factors (${t}, longrope scaling) are not supported`);
  }
  // Llama 3.x files carry their llama3 scaling as one divisor per frequency.
  let ropeFreqFactors: number[] | undefined;
  if (f.tensors.has('rope_freqs.weight')) {
    const t = f.info('rope_freqs.weight');
    if (t.dims.length !== 1 || t.dims[0] !== headDim / 2) throw new Error(`${src}: rope_freqs.weight has dims [${t.dims.join(', ')}], expected [${headDim / 2}]`);
    ropeFreqFactors = Array.from(f.readF32('rope_freqs.weight'));
    if (!ropeFreqFactors.every((x) => x > 0 && Number.isFinite(x))) throw new Error(`${src}: rope_freqs.weight holds a factor that is not positive`);
  }

  for (const key of ['attn_logit_softcapping', 'final_logit_softcapping']) {
    const v = f.get(`${a}.${key}`);
    if (v !== undefined && v !== 0) throw new Error(`${src}: ${a}.${key} is not supported`);
  }
  const config: ModelConfig = {
    architecture: a,
    hiddenSize,
    intermediateSize: num('feed_forward_length'),
    numLayers,
    numHeads,
    numKvHeads: num('attention.head_count_kv', numHeads),
    headDim,
    vocabSize,
    maxPositionEmbeddings: num('context_length'),
    rmsNormEps: num('attention.layer_norm_rms_epsilon'),
    ropeTheta: num('rope.freq_base', 10000),
    ropeScaling,
    tieWordEmbeddings: !f.tensors.has('output.weight'),
    attentionBias: f.tensors.has('blk.0.attn_q.bias'),
    qkNorm: f.tensors.has('blk.0.attn_q_norm.weight'),
  };
  if (ropeFreqFactors) config.ropeFreqFactors = ropeFreqFactors;
  const window = num('attention.sliding_window', 0);
  if (a === 'phi3' && window > 0) {
    config.slidingWindow = window;
    config.slidingLayers = new Array<boolean>(numLayers).fill(true);
  }
  if (a === 'gemma3') {
    config.activation = 'gelu_tanh';
    config.embeddingScale = Math.fround(Math.sqrt(hiddenSize));
    config.postNorms = true;
    // Gemma 3 scales by query_pre_attn_scalar^-½: the head size, except hidden/heads for the 27B (62 layers).
    config.queryPreAttnScalar = numLayers === 62 ? hiddenSize / numHeads : headDim;
    config.slidingWindow = window;
    config.localRopeTheta = num('rope.freq_base_swa', 10000);
    // Without a pattern key, five local layers then one global, repeating.
    const pattern = num('attention.sliding_window_pattern', 6);
    config.slidingLayers = Array.from({ length: numLayers }, (_, l) => (l + 1) % pattern !== 0);
  }
  validateConfig(config, src);
  return config;
}

/**
 * Reads every weight by its GGUF name, each tensor read once and converted to f32
 * (`dequantizeAtLoad`: INTERIM — quantized tensors are widened to f32 here until the engine
 * keeps quantized blocks). llama GGUFs store q/k rows in interleaved RoPE pairs; they are
 * reordered to the engine's half-split layout. phi3's fused qkv and gate_up are split.
 */
function readWeights(c: ModelConfig, f: GgufFile, type?: WeightType): ModelWeights {
  // `type` converts layer by layer as the tensors are read (never the whole model held twice).
  const conv = type ? converter(type) : null;
  const D = c.hiddenSize, F = c.intermediateSize, V = c.vocabSize, hd = c.headDim;
  const qDim = c.numHeads * hd, kvDim = c.numKvHeads * hd;
  const get = (name: string, dims: number[]): Float32Array => {
    const t = f.info(name);
    if (t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i])) {
      throw new Error(`${f.path}: tensor ${name} has dims [${t.dims.join(', ')}], expected [${dims.join(', ')}]`);
    }
    return dequantizeAtLoad(f, name);
  };
  const interleaved = c.architecture === 'llama';
  const embedding = conv ? conv(get('token_embd.weight', [D, V]), V, D) : get('token_embd.weight', [D, V]);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `blk.${i}.`;
    let wq: Float32Array, wk: Float32Array, wv: Float32Array, wGate: Float32Array, wUp: Float32Array;
    if (c.architecture === 'phi3') {
      const qkv = get(p + 'attn_qkv.weight', [D, qDim + 2 * kvDim]);
      wq = qkv.slice(0, qDim * D);
      wk = qkv.slice(qDim * D, (qDim + kvDim) * D);
      wv = qkv.slice((qDim + kvDim) * D);
      const gateUp = get(p + 'ffn_up.weight', [D, 2 * F]);
      wGate = gateUp.slice(0, F * D);
      wUp = gateUp.slice(F * D);
    } else {
      wq = get(p + 'attn_q.weight', [D, qDim]);
      wk = get(p + 'attn_k.weight', [D, kvDim]);
      wv = get(p + 'attn_v.weight', [D, kvDim]);
      if (interleaved) {
        wq = interleavedToHalves(wq, c.numHeads, hd, D);
        wk = interleavedToHalves(wk, c.numKvHeads, hd, D);
      }
      wGate = get(p + 'ffn_gate.weight', [D, F]);
      wUp = get(p + 'ffn_up.weight', [D, F]);
    }
    const bias = (name: string, n: number) => (c.attentionBias ? get(p + name, [n]) : null);
    const norm = (name: string) => (c.qkNorm ? get(p + name, [hd]) : null);
    const post = (name: string) => (c.postNorms ? get(p + name, [D]) : null);
    const layer: LayerWeights = {
      attnNorm: get(p + 'attn_norm.weight', [D]),
      wq, wk, wv,
      wo: get(p + 'attn_output.weight', [qDim, D]),
      bq: bias('attn_q.bias', qDim),
      bk: bias('attn_k.bias', kvDim),
      bv: bias('attn_v.bias', kvDim),
      qNorm: norm('attn_q_norm.weight'),
      kNorm: norm('attn_k_norm.weight'),
      ffnNorm: get(p + 'ffn_norm.weight', [D]),
      wGate, wUp,
      wDown: get(p + 'ffn_down.weight', [F, D]),
      postAttnNorm: post('post_attention_norm.weight'),
      postFfnNorm: post('post_ffw_norm.weight'),
    };
    layers.push(conv && type ? convertLayer(c, layer, type, conv) : layer);
  }
  const finalNorm = get('output_norm.weight', [D]);
  const lmHead = c.tieWordEmbeddings ? embedding : conv ? conv(get('output.weight', [D, V]), V, D) : get('output.weight', [D, V]);
  return { embedding, layers, finalNorm, lmHead };
}

/**
 * INTERIM: one tensor read from the file and widened to f32 (quantized blocks dequantized).
 * The engine's weights are f32 today; keeping quantized blocks in memory and multiplying on them
 * comes with the weight-type abstraction. Peak extra memory is one tensor's stored bytes.
 */
export function dequantizeAtLoad(f: GgufFile, name: string): Float32Array {
  return f.readF32(name);
}

/**
 * The checkpoint's number format as the KV cache's `auto` type reads it: 'quantized' when any
 * matrix is in ggml blocks, else the 16-bit type of its matrices, else f32.
 */
function ggufPrecision(f: GgufFile): CheckpointPrecision {
  const types = new Set([...f.tensors.values()].filter((t) => t.dims.length >= 2).map((t) => t.typeName));
  if ([...types].some((t) => t !== 'F32' && t !== 'F16' && t !== 'BF16')) return 'quantized';
  if (types.has('F16')) return 'f16';
  return types.has('BF16') ? 'bf16' : 'f32';
}

/**
 * Loads a GGUF model file: config from its metadata, weights as f32 (or as `type`, converted
 * layer by layer), its tokenizer and chat template.
 */
export function loadGguf(path: string, type?: WeightType): { config: ModelConfig; weights: ModelWeights; tokenizer: Tokenizer | null; precision: CheckpointPrecision } {
  const f = GgufFile.open(path);
  try {
    const config = ggufConfig(f);
    const tokenizer = loadGgufTokenizer(f);
    if (tokenizer && tokenizer.vocabSize > config.vocabSize) {
      throw new Error(`${path}: the tokenizer has ${tokenizer.vocabSize} tokens, the model's vocabulary only ${config.vocabSize}`);
    }
    const weights = readWeights(config, f, type);
    validateWeights(config, weights, path);
    return { config, weights, tokenizer, precision: ggufPrecision(f) };
  } finally {
    f.close();
  }
}
