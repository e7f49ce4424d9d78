import { existsSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { CheckpointPrecision } from '../../cache/format.js';
import type { ModelConfig } from '../config.js';
import { toWeightType, validateWeights, type LayerWeights, type ModelWeights, type Weight, type WeightType } from '../weights.js';
import { loadHfTokenizer } from '../../tokenizer/hf.js';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { readHfConfig, readJson } from './hf-config.js';
import { SafetensorsFile } from './safetensors.js';
import { checkFinite, checkNotAllZero } from './finite.js';
import { splitChatTemplate } from '../../pipeline/chat-template.js';

/** Tensors every logit depends on: all zeros makes every logit equal (a model that says <unk> forever). */
const EVERY_LOGIT_READS = new Set(['model.embed_tokens.weight', 'model.norm.weight', 'lm_head.weight']);

/** Where each tensor lives: one `model.safetensors`, or shards listed by an index file. */
class TensorSource {
  private readonly open = new Map<string, SafetensorsFile>();

  private constructor(
    /** The file named in "missing tensor" errors. */
    private readonly listing: string,
    private readonly fileOf: (name: string) => string | undefined,
  ) {}

  static forDirectory(dir: string): TensorSource {
    const single = join(dir, 'model.safetensors');
    if (existsSync(single)) return new TensorSource(single, () => single);
    const indexPath = join(dir, 'model.safetensors.index.json');
    if (!existsSync(indexPath)) throw new Error(`${dir}: no model.safetensors or model.safetensors.index.json`);
    const index = readJson(indexPath, 'safetensors index') as { weight_map?: unknown };
    const map = index?.weight_map;
    if (typeof map !== 'object' || map === null) throw new Error(`${indexPath}: missing weight_map`);
    const shards = new Map<string, string>();
    for (const [name, file] of Object.entries(map)) {
      // Shard names are plain file names inside the model directory, never paths.
      if (typeof file !== 'string' || file !== basename(file) || file === '..' || file === '.') {
        throw new Error(`${indexPath}: invalid shard file name ${JSON.stringify(file)} for tensor ${name}`);
      }
      shards.set(name, join(dir, file));
    }
    return new TensorSource(indexPath, (name) => shards.get(name));
  }

  /** The tensor as f32, checked to have exactly `shape`. */
  get(name: string, shape: number[]): Float32Array {
    return this.verified(name, this.checked(name, shape).read(name));
  }

  /**
   * A [rows][cols] matrix held as `type`, or by default as stored: BF16 stays bf16 (read
   * as is), F32 and F16 become f32. A conversion happens one tensor at a time.
   */
  matrix(name: string, rows: number, cols: number, type: WeightType | undefined): Weight {
    const f = this.checked(name, [rows, cols]);
    const stored = f.tensors.get(name)!.dtype;
    if (stored === 'BF16' && type !== 'f32') return { type: 'bf16', rows, cols, data: this.verified(name, f.readBf16(name)) };
    if (type === 'bf16') return { type: 'bf16', rows, cols, data: this.verified(name, f.readAsBf16(name)) };
    return this.verified(name, f.read(name));
  }

  /** The stored element type of tensor `name` (as safetensors spells it: F32, F16, BF16 …). */
  storedDtype(name: string): string | undefined {
    const path = this.fileOf(name);
    return path === undefined ? undefined : this.file(path).tensors.get(name)?.dtype;
  }

  /** Rejects NaN/Inf anywhere, and all zeros where every logit depends on the tensor. */
  private verified<T extends Float32Array | Uint16Array>(name: string, data: T): T {
    const path = this.fileOf(name) ?? this.listing;
    checkFinite(path, name, data);
    if (EVERY_LOGIT_READS.has(name)) checkNotAllZero(path, name, data);
    return data;
  }

  private checked(name: string, shape: number[]): SafetensorsFile {
    const path = this.fileOf(name);
    if (path === undefined) throw new Error(`${this.listing}: missing tensor ${name}`);
    const f = this.file(path);
    const entry = f.tensors.get(name);
    if (!entry) throw new Error(`${path}: missing tensor ${name}`);
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`${path}: tensor ${name} has shape [${entry.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    return f;
  }

  close(): void {
    for (const f of this.open.values()) f.close();
    this.open.clear();
  }

  private file(path: string): SafetensorsFile {
    let f = this.open.get(path);
    if (!f) {
      f = SafetensorsFile.open(path);
      this.open.set(path, f);
    }
    return f;
  }
}

/**
 * Reads every weight of a Llama/Mistral/Qwen2/Qwen3/Phi-3/Gemma-3 checkpoint by its Hugging Face
 * name. Phi-3's fused qkv_proj and gate_up_proj are split into the separate matrices (read as
 * f32, then held as `type`, f32 by default); Gemma's RMSNorm weights w are stored for x·(1 + w),
 * so 1 is added at load (in f32, as transformers does).
 */
function readWeights(c: ModelConfig, src: TensorSource, type: WeightType | undefined): ModelWeights {
  const D = c.hiddenSize, F = c.intermediateSize, V = c.vocabSize, hd = c.headDim;
  const qDim = c.numHeads * hd, kvDim = c.numKvHeads * hd;
  const mat = (name: string, rows: number, cols: number) => src.matrix(name, rows, cols, type);
  const embedding = mat('model.embed_tokens.weight', V, D);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}.`;
    const bias = (name: string, n: number) => (c.attentionBias ? src.get(p + name, [n]) : null);
    const gemma = c.architecture === 'gemma3';
    const rms = (name: string, n: number) => (gemma ? onePlus(src.get(p + name, [n])) : src.get(p + name, [n]));
    const norm = (name: string) => (c.qkNorm ? rms(name, hd) : null);
    // HF checkpoints already use the engine's half-split RoPE layout for q/k rows.
    let wq: Weight, wk: Weight, wv: Weight, wGate: Weight, wUp: Weight;
    if (c.architecture === 'phi3') {
      const part = (a: Float32Array, row0: number, rows: number) => toWeightType(a.slice(row0 * D, (row0 + rows) * D), type ?? 'f32', rows, D);
      const qkv = src.get(p + 'self_attn.qkv_proj.weight', [qDim + 2 * kvDim, D]);
      wq = part(qkv, 0, qDim);
      wk = part(qkv, qDim, kvDim);
      wv = part(qkv, qDim + kvDim, kvDim);
      const gateUp = src.get(p + 'mlp.gate_up_proj.weight', [2 * F, D]);
      wGate = part(gateUp, 0, F);
      wUp = part(gateUp, F, F);
    } else {
      wq = mat(p + 'self_attn.q_proj.weight', qDim, D);
      wk = mat(p + 'self_attn.k_proj.weight', kvDim, D);
      wv = mat(p + 'self_attn.v_proj.weight', kvDim, D);
      wGate = mat(p + 'mlp.gate_proj.weight', F, D);
      wUp = mat(p + 'mlp.up_proj.weight', F, D);
    }
    layers.push({
      attnNorm: rms('input_layernorm.weight', D),
      wq, wk, wv,
      wo: mat(p + 'self_attn.o_proj.weight', D, qDim),
      bq: bias('self_attn.q_proj.bias', qDim),
      bk: bias('self_attn.k_proj.bias', kvDim),
      bv: bias('self_attn.v_proj.bias', kvDim),
      qNorm: norm('self_attn.q_norm.weight'),
      kNorm: norm('self_attn.k_norm.weight'),
      // Gemma's post_attention_layernorm is the sandwich norm; its pre-FFN norm has its own name.
      ffnNorm: rms(gemma ? 'pre_feedforward_layernorm.weight' : 'post_attention_layernorm.weight', D),
      wGate, wUp,
      wDown: mat(p + 'mlp.down_proj.weight', D, F),
      postAttnNorm: gemma ? rms('post_attention_layernorm.weight', D) : null,
      postFfnNorm: gemma ? rms('post_feedforward_layernorm.weight', D) : null,
    });
  }
  const finalNorm = c.architecture === 'gemma3' ? onePlus(src.get('model.norm.weight', [D])) : src.get('model.norm.weight', [D]);
  // Tied checkpoints usually omit lm_head.weight; when present it is a copy and is ignored.
  const lmHead = c.tieWordEmbeddings ? embedding : mat('lm_head.weight', V, D);
  return { embedding, layers, finalNorm, lmHead };
}

/** w ← 1 + w in f32 (Gemma's RMSNorm scale convention). */
function onePlus(w: Float32Array): Float32Array {
  for (let i = 0; i < w.length; i++) w[i] = Math.fround(1 + w[i]);
  return w;
}

/**
 * Loads a Hugging Face model directory: config.json, model.safetensors (or the shards of
 * model.safetensors.index.json) and tokenizer.json when present. Matrices are held as `weights`
 * says, by default as stored (BF16 stays bf16; F32 and F16 become f32); norms and biases f32.
 */
export async function loadHfDirectory(dir: string, type?: WeightType): Promise<{ config: ModelConfig; weights: ModelWeights; tokenizer: Tokenizer | null; precision: CheckpointPrecision }> {
  let isDir: boolean;
  try {
    isDir = statSync(dir).isDirectory();
  } catch (e) {
    throw new Error(`${dir}: cannot open model directory (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  if (!isDir) throw new Error(`${dir}: not a directory`);
  const config = readHfConfig(join(dir, 'config.json'));
  // The tokenizer and its chat template are checked before gigabytes of weights are read.
  const tokenizer = loadHfTokenizer(dir);
  if (tokenizer?.chatTemplate) {
    try {
      splitChatTemplate(tokenizer.chatTemplate, 'context');
    } catch (e) {
      throw new Error(`${dir}: the model's chat template is unusable: ${(e as Error).message}; fix chat_template in tokenizer_config.json (or remove it to use plain prompts)`);
    }
  }
  const src = TensorSource.forDirectory(dir);
  let weights: ModelWeights;
  let precision: CheckpointPrecision;
  try {
    weights = readWeights(config, src, type);
    precision = checkpointPrecision(src.storedDtype('model.embed_tokens.weight'));
  } finally {
    src.close();
  }
  validateWeights(config, weights, dir);
  return { config, weights, tokenizer, precision };
}

/**
 * The checkpoint's own number format, for the KV cache's `auto` type: the stored type of the
 * embedding matrix (a checkpoint is saved in one torch_dtype; norms may differ, matrices do not).
 */
function checkpointPrecision(stored: string | undefined): CheckpointPrecision {
  return stored === 'BF16' ? 'bf16' : stored === 'F16' ? 'f16' : 'f32';
}
