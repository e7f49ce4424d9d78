import { readFileSync } from 'node:fs';
import { validateConfig, type Architecture, type ModelConfig, type RopeScaling } from '../config.js';
import { printable } from '../../tokenizer/tokenizer.js';

/** transformers' default `max_position_embeddings` per architecture, for configs that omit it. */
const DEFAULT_MAX_POSITIONS: Record<Architecture, number> = { llama: 2048, mistral: 4096 * 32, qwen2: 32768, qwen3: 32768 };

const isArchitecture = (s: unknown): s is Architecture => s === 'llama' || s === 'mistral' || s === 'qwen2' || s === 'qwen3';

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
  const arch = j.model_type;
  if (!isArchitecture(arch)) {
    throw new Error(`${source}: unsupported architecture ${JSON.stringify(arch ?? null)} (model_type); supported: llama, mistral, qwen2, qwen3`);
  }
  const num = (key: string, fallback?: number): number => {
    const v = j[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${source}: missing or invalid ${key}`);
    return v;
  };
  if (j.hidden_act !== undefined && j.hidden_act !== 'silu') throw new Error(`${source}: unsupported hidden_act ${JSON.stringify(j.hidden_act)} (only silu)`);
  if (j.mlp_bias === true) throw new Error(`${source}: mlp_bias is not supported`);
  // Qwen2 always has q/k/v biases; elsewhere attention_bias would also put a bias on o_proj,
  // which no supported checkpoint uses and the engine does not implement.
  if (arch !== 'qwen2' && j.attention_bias === true) throw new Error(`${source}: attention_bias (q/k/v/o_proj biases) is not supported for ${arch}`);
  if (j.use_sliding_window === true) throw new Error(`${source}: use_sliding_window is not supported (attention is full)`);

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
    qkNorm: arch === 'qwen3',
  };
  validateConfig(config, source);
  return config;
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
