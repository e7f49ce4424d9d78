import { readFileSync } from 'node:fs';
import { validateConfig, type Architecture, type ModelConfig, type RopeScaling } from '../config.js';
import { printable } from '../../tokenizer/tokenizer.js';

/** transformers' default `max_position_embeddings` per architecture, for configs that omit it. */
const DEFAULT_MAX_POSITIONS: Record<Architecture, number> = { llama: 2048, mistral: 4096 * 32, qwen2: 32768, qwen3: 32768, phi3: 4096, gemma3: 131072 };

/** HF `model_type` → architecture (Gemma 3's text-only checkpoints say gemma3_text). */
const MODEL_TYPES: Record<string, Architecture> = { llama: 'llama', mistral: 'mistral', qwen2: 'qwen2', qwen3: 'qwen3', phi3: 'phi3', gemma3_text: 'gemma3' };

/**
 * Maps a Hugging Face `config.json` object to our ModelConfig, with transformers' defaults for
 * omitted fields.
 *
 * Mistral's `sliding_window` is ignored: attention is always over the full cache, which equals
 * sliding-window attention for contexts up to the window (4096 tokens for Mistral 7B v0.1).
 */
export function parseHfConfig(json: unknown, source: string): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${source}: not a JSON object`);
  const j = json as Record<string, unknown>;
  const arch = typeof j.model_type === 'string' && Object.hasOwn(MODEL_TYPES, j.model_type) ? MODEL_TYPES[j.model_type] : undefined;
  if (arch === undefined) {
    throw new Error(`${source}: unsupported architecture ${JSON.stringify(j.model_type ?? null)} (model_type); supported: ${Object.keys(MODEL_TYPES).join(', ')}`);
  }
  const num = (key: string, fallback?: number): number => {
    const v = j[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${source}: missing or invalid ${key}`);
    return v;
  };
  const act = arch === 'gemma3' ? j.hidden_activation ?? 'gelu_pytorch_tanh' : j.hidden_act ?? 'silu';
  const expectedAct = arch === 'gemma3' ? 'gelu_pytorch_tanh' : 'silu';
  if (act !== expectedAct) throw new Error(`${source}: unsupported ${arch === 'gemma3' ? 'hidden_activation' : 'hidden_act'} ${JSON.stringify(act)} for ${arch} (only ${expectedAct})`);
  if (j.mlp_bias === true) throw new Error(`${source}: mlp_bias is not supported`);
  // Qwen2 always has q/k/v biases; elsewhere attention_bias would also put a bias on o_proj,
  // which no supported checkpoint uses and the engine does not implement.
  if (arch !== 'qwen2' && j.attention_bias === true) throw new Error(`${source}: attention_bias (q/k/v/o_proj biases) is not supported for ${arch}`);
  if (j.use_sliding_window === true) throw new Error(`${source}: use_sliding_window is not supported (attention is full)`);
  for (const key of ['attn_logit_softcapping', 'final_logit_softcapping']) {
    if (j[key] !== undefined && j[key] !== null) throw new Error(`${source}: ${key} is not supported`);
  }
  if (arch === 'phi3' && j.partial_rotary_factor !== undefined && j.partial_rotary_factor !== 1) throw new Error(`${source}: partial_rotary_factor ${String(j.partial_rotary_factor)} is not supported`);
  // Phi-3's long-context variants use "longrope"/"su" scaling with per-frequency factors.
  if (arch === 'phi3' && j.rope_scaling !== undefined && j.rope_scaling !== null) {
    const t = (j.rope_scaling as Record<string, unknown>).rope_type ?? (j.rope_scaling as Record<string, unknown>).type;
    throw new Error(`${source}: Phi-3 rope_scaling ${JSON.stringify(t ?? null)} is not supported (only none)`);
  }

  const hiddenSize = num('hidden_size');
  const numHeads = num('num_attention_heads');
  // transformers (v5) moved rope settings into `rope_parameters`; older configs use top-level keys.
  const ropeParams = typeof j.rope_parameters === 'object' && j.rope_parameters !== null ? (j.rope_parameters as Record<string, unknown>) : null;
  const ropeTheta = j.rope_theta ?? ropeParams?.rope_theta ?? 10000;
  if (typeof ropeTheta !== 'number') throw new Error(`${source}: invalid rope_theta`);
  const config: ModelConfig = {
    architecture: arch,
    hiddenSize,
    intermediateSize: num('intermediate_size'),
    numLayers: num('num_hidden_layers'),
    numHeads,
    numKvHeads: num('num_key_value_heads', numHeads),
    // Qwen3Config's own default is 128, not hidden/heads.
    headDim: num('head_dim', arch === 'qwen3' ? 128 : hiddenSize / numHeads),
    vocabSize: num('vocab_size'),
    maxPositionEmbeddings: num('max_position_embeddings', DEFAULT_MAX_POSITIONS[arch]),
    rmsNormEps: num('rms_norm_eps', 1e-6),
    ropeTheta,
    ropeScaling: parseRopeScaling(j.rope_scaling ?? ropeParams, source),
    tieWordEmbeddings: j.tie_word_embeddings === true,
    attentionBias: arch === 'qwen2',
    qkNorm: arch === 'qwen3' || arch === 'gemma3',
  };
  if (arch === 'phi3' && typeof j.sliding_window === 'number' && j.sliding_window > 0) {
    config.slidingWindow = j.sliding_window;
    config.slidingLayers = new Array<boolean>(config.numLayers).fill(true);
  }
  if (arch === 'gemma3') gemma3Fields(j, config, source);
  validateConfig(config, source);
  return config;
}

/**
 * Gemma3TextConfig: GeGLU, √hidden embedding scale, sandwich norms, query_pre_attn_scalar, and
 * sliding-window layers (from `layer_types`, else every `sliding_window_pattern`-th layer is
 * global) with their own RoPE base `rope_local_base_freq` and no scaling.
 */
function gemma3Fields(j: Record<string, unknown>, c: ModelConfig, source: string): void {
  c.activation = 'gelu_tanh';
  c.embeddingScale = Math.fround(Math.sqrt(c.hiddenSize));
  c.postNorms = true;
  c.queryPreAttnScalar = typeof j.query_pre_attn_scalar === 'number' ? j.query_pre_attn_scalar : 256;
  c.localRopeTheta = typeof j.rope_local_base_freq === 'number' ? j.rope_local_base_freq : 10000;
  const window = j.sliding_window ?? 4096;
  if (typeof window !== 'number') throw new Error(`${source}: invalid sliding_window`);
  c.slidingWindow = window;
  if (Array.isArray(j.layer_types)) {
    if (j.layer_types.length !== c.numLayers) throw new Error(`${source}: layer_types lists ${j.layer_types.length} layers, num_hidden_layers is ${c.numLayers}`);
    c.slidingLayers = j.layer_types.map((t, i) => {
      if (t !== 'sliding_attention' && t !== 'full_attention') throw new Error(`${source}: layer_types[${i}] ${JSON.stringify(t)} is not supported`);
      return t === 'sliding_attention';
    });
  } else {
    const pattern = j.sliding_window_pattern ?? 6;
    if (!Number.isInteger(pattern) || (pattern as number) <= 0) throw new Error(`${source}: invalid sliding_window_pattern`);
    c.slidingLayers = Array.from({ length: c.numLayers }, (_, l) => (l + 1) % (pattern as number) !== 0);
  }
}

function parseRopeScaling(raw: unknown, source: string): RopeScaling | null {
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== 'object') throw new Error(`${source}: invalid rope_scaling`);
  const r = raw as Record<string, unknown>;
  const type = r.rope_type ?? r.type ?? 'default';
  const positive = (key: string): number => {
    const v = r[key];
    if (typeof v !== 'number' || !(v > 0)) throw new Error(`${source}: rope_scaling ${type} needs a positive ${key}`);
    return v;
  };
  switch (type) {
    case 'default':
      return null;
    case 'linear':
      return { type: 'linear', factor: positive('factor') };
    case 'llama3': {
      const s: RopeScaling = {
        type: 'llama3',
        factor: positive('factor'),
        lowFreqFactor: positive('low_freq_factor'),
        highFreqFactor: positive('high_freq_factor'),
        originalMaxPositionEmbeddings: positive('original_max_position_embeddings'),
      };
      if (!(s.highFreqFactor > s.lowFreqFactor)) throw new Error(`${source}: rope_scaling llama3 needs high_freq_factor > low_freq_factor`);
      return s;
    }
    default:
      throw new Error(`${source}: unsupported rope_scaling type ${JSON.stringify(type)}; supported: linear, llama3`);
  }
}

/** Reads and parses `config.json`; errors name the file. */
export function readHfConfig(path: string): ModelConfig {
  return parseHfConfig(readJson(path, 'config'), path);
}

/** Parses a JSON file with a one-line error naming it; `what` says what the file is. */
export function readJson(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`${path}: cannot read ${what} (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: invalid JSON (${printable((e as Error).message)}); replace it with the model's original file`);
  }
}
