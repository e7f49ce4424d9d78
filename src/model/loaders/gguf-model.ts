import type { CheckpointPrecision } from '../../cache/format.js';
import type { Architecture, ModelConfig, RopeScaling } from '../config.js';
import { validateConfig } from '../config.js';
import { ggmlTypeOf, quantFallback, quantTypeOf, toWeightType, validateWeights, type LayerWeights, type ModelWeights, type Weight, type WeightMatrix, type WeightType } from '../weights.js';
import { blockFormat, dequantize, GGML_TYPE } from '../quant/formats.js';
import { loadGgufTokenizer } from '../../tokenizer/gguf.js';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { GgufArray, GgufFile } from './gguf.js';

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
    if (v instanceof GgufArray) throw new Error(`${src}: per-layer ${a}.${key} is not supported`);
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
  const vocabSize = num('vocab_size', embd?.dims[1] ?? (tokens instanceof GgufArray ? tokens.length : undefined));
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

/** f32 bytes of the rows converted at a time when a matrix is read as another type. */
const CONVERT_CHUNK = 1 << 20;

/**
 * Reads every weight by its GGUF name, each tensor read once: matrices stay in the file's format
 * (quantized blocks, F16 and BF16 as stored; F32 as f32) or become `type`, norms and biases
 * become f32. llama GGUFs store q/k rows in interleaved RoPE pairs; they are read into the
 * engine's half-split order. phi3's fused qkv and gate_up are split into views of one buffer.
 */
function readWeights(c: ModelConfig, f: GgufFile, type?: WeightType): ModelWeights {
  const D = c.hiddenSize, F = c.intermediateSize, V = c.vocabSize, hd = c.headDim;
  const qDim = c.numHeads * hd, kvDim = c.numKvHeads * hd;
  const check = (name: string, dims: number[]) => {
    const t = f.info(name);
    if (t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i])) {
      throw new Error(`${f.path}: tensor ${name} has dims [${t.dims.join(', ')}], expected [${dims.join(', ')}]`);
    }
    return t;
  };
  const vec = (name: string, n: number): Float32Array => {
    check(name, [n]);
    return f.readF32(name);
  };
  /** A [rows][cols] matrix in its stored format, or as `type`; `heads`: reorder interleaved RoPE rows. */
  const matrix = (name: string, rows: number, cols: number, heads = 0): Weight => {
    const t = check(name, [cols, rows]);
    const order = heads ? halfSplitOrder(heads, hd) : null;
    const stored: WeightType | null = t.type === GGML_TYPE.F32 ? 'f32' : t.type === GGML_TYPE.BF16 ? 'bf16' : quantTypeOf(t.type);
    const target = type ? quantFallback(type, cols) : stored;
    if (target !== stored || stored === null) return convertRows(f, t.name, t.type, rows, cols, target ?? 'f32', order);
    const raw = f.readRows(name, rows, 0, rows, order);
    if (t.type === GGML_TYPE.F32) return new Float32Array(raw.buffer, raw.byteOffset, rows * cols);
    if (t.type === GGML_TYPE.BF16) return { type: 'bf16', rows, cols, data: new Uint16Array(raw.buffer, raw.byteOffset, rows * cols) };
    return { type: stored, rows, cols, data: raw } as WeightMatrix;
  };
  /** Rows [r0, r0 + rows) of a matrix, sharing its storage. */
  const rowsOf = (w: Weight, cols: number, r0: number, rows: number): Weight => {
    if (w instanceof Float32Array) return w.subarray(r0 * cols, (r0 + rows) * cols);
    const per = w.data.length / w.rows;
    return { ...w, rows, data: w.data.subarray(r0 * per, (r0 + rows) * per) } as WeightMatrix;
  };
  const interleaved = c.architecture === 'llama';
  const embedding = matrix('token_embd.weight', V, D);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `blk.${i}.`;
    let wq: Weight, wk: Weight, wv: Weight, wGate: Weight, wUp: Weight;
    if (c.architecture === 'phi3') {
      const qkv = matrix(p + 'attn_qkv.weight', qDim + 2 * kvDim, D);
      wq = rowsOf(qkv, D, 0, qDim);
      wk = rowsOf(qkv, D, qDim, kvDim);
      wv = rowsOf(qkv, D, qDim + kvDim, kvDim);
      const gateUp = matrix(p + 'ffn_up.weight', 2 * F, D);
      wGate = rowsOf(gateUp, D, 0, F);
      wUp = rowsOf(gateUp, D, F, F);
    } else {
      wq = matrix(p + 'attn_q.weight', qDim, D, interleaved ? c.numHeads : 0);
      wk = matrix(p + 'attn_k.weight', kvDim, D, interleaved ? c.numKvHeads : 0);
      wv = matrix(p + 'attn_v.weight', kvDim, D);
      wGate = matrix(p + 'ffn_gate.weight', F, D);
      wUp = matrix(p + 'ffn_up.weight', F, D);
    }
    const bias = (name: string, n: number) => (c.attentionBias ? vec(p + name, n) : null);
    const norm = (name: string) => (c.qkNorm ? vec(p + name, hd) : null);
    const post = (name: string) => (c.postNorms ? vec(p + name, D) : null);
    layers.push({
      attnNorm: vec(p + 'attn_norm.weight', D),
      wq, wk, wv,
      wo: matrix(p + 'attn_output.weight', D, qDim),
      bq: bias('attn_q.bias', qDim),
      bk: bias('attn_k.bias', kvDim),
      bv: bias('attn_v.bias', kvDim),
      qNorm: norm('attn_q_norm.weight'),
      kNorm: norm('attn_k_norm.weight'),
      ffnNorm: vec(p + 'ffn_norm.weight', D),
      wGate, wUp,
      wDown: matrix(p + 'ffn_down.weight', D, F),
      postAttnNorm: post('post_attention_norm.weight'),
      postFfnNorm: post('post_ffw_norm.weight'),
    });
  }
  const finalNorm = vec('output_norm.weight', D);
  const lmHead = c.tieWordEmbeddings ? embedding : matrix('output.weight', V, D);
  return { embedding, layers, finalNorm, lmHead };
}

/**
 * A [rows][cols] tensor of ggml type `stored` as `target`, CONVERT_CHUNK of f32 rows at a time
 * read from the file, widened and converted: the tensor is never whole in f32 (unless that is
 * the target) nor held twice. Each row converts on its own, so the bits are those of converting
 * the whole matrix at once.
 */
function convertRows(f: GgufFile, name: string, stored: number, rows: number, cols: number, target: WeightType, order: Int32Array | null): Weight {
  const step = Math.max(1, Math.floor(CONVERT_CHUNK / (4 * cols)));
  const chunk = new Float32Array(Math.min(rows, step) * cols);
  const fmt = blockFormat(target === 'f32' ? GGML_TYPE.F32 : target === 'bf16' ? GGML_TYPE.BF16 : ggmlTypeOf(target))!;
  const rowBytes = (cols / fmt.blockElements) * fmt.blockBytes;
  const out = new Uint8Array(rows * rowBytes);
  for (let r0 = 0; r0 < rows; r0 += step) {
    const n = Math.min(step, rows - r0), x = chunk.subarray(0, n * cols);
    dequantize(stored, f.readRows(name, rows, r0, n, order), x);
    const w = toWeightType(x, target, n, cols);
    const data = w instanceof Float32Array ? w : w.data;
    out.set(new Uint8Array(data.buffer, data.byteOffset, n * rowBytes), r0 * rowBytes);
  }
  if (target === 'f32') return new Float32Array(out.buffer);
  if (target === 'bf16') return { type: 'bf16', rows, cols, data: new Uint16Array(out.buffer) };
  return { type: target, rows, cols, data: out };
}

/** Row order that turns interleaved RoPE pairs (2j, 2j+1) into halves (j, j + hd/2), per head. */
function halfSplitOrder(heads: number, hd: number): Int32Array {
  const order = new Int32Array(heads * hd), half = hd / 2;
  for (let h = 0; h < heads; h++) for (let j = 0; j < half; j++) for (let c = 0; c < 2; c++) order[h * hd + c * half + j] = h * hd + 2 * j + c;
  return order;
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
 * Loads a GGUF model file: config from its metadata, matrices as stored (quantized blocks stay
 * quantized) or as `type`, converted layer by layer; its tokenizer and chat template.
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
