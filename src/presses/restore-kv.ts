import { forward, Workspace } from '../model/forward.js';
import type { LayerContext, ModelParts } from '../model/layer-context.js';
import { readSafetensors } from '../model/loaders/safetensors.js';
import { weightRow, type LayerWeights, type ModelWeights } from '../model/weights.js';
import { KVzipPress, kvzipOptions } from './kvzip.js';
import { runnableModel } from './kvzip-scores.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import { PressError } from './press.js';
import type { PressEntry } from './registry.js';

export const restoreKVOptions = defineOptions({
  adapter: { type: 'string', default: '', description: 'restore file (.safetensors): LoRA adapter and restore embeddings (required; format in restore-kv.ts and the README)' },
  ...kvzipOptions,
});

/** The projections a LoRA adapter may adapt, by their Hugging Face names. */
const MODULES = { q_proj: 'wq', k_proj: 'wk', v_proj: 'wv', o_proj: 'wo', gate_proj: 'wGate', up_proj: 'wUp', down_proj: 'wDown' } as const;
type Module = keyof typeof MODULES;

/**
 * RestoreKV's assets (kvpress `RestoreKVPress`; hub `higokri/RestoreKV-{model}`), read from one
 * local safetensors file:
 * - `restore_embeddings` [n, hidden]: the input embeddings of the n restore tokens (8 in the paper);
 * - LoRA pairs `…layers.{i}.{module}.lora_A[.weight]` [r, in] and `…lora_B[.weight]` [out, r] for any
 *   of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, with any prefix (PEFT's
 *   `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` matches), so W′ = W + (α/r)·B·A;
 * - metadata `lora_alpha` (default r, i.e. scale 1).
 */
export interface RestoreAssets {
  embeddings: Float32Array;
  count: number;
  /** Per layer, the adapted matrices (merged, f32); the others are the model's own. */
  merged: Partial<Record<keyof LayerWeights, Float32Array>>[];
}

const LORA = /(?:^|\.)layers\.(\d+)\.(?:self_attn\.|mlp\.)?(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_(A|B)(?:\.weight)?$/;

/** Reads and merges a restore file for `model`; one-line errors naming the file. */
export function readRestoreAssets(path: string, model: ModelParts): RestoreAssets {
  const { tensors, metadata } = readSafetensors(path);
  const c = model.config, D = c.hiddenSize;
  const emb = tensors.restore_embeddings;
  if (!emb || emb.shape.length !== 2 || emb.shape[1] !== D || emb.shape[0] < 1) throw new Error(`${path}: needs a tensor restore_embeddings [n, ${D}]`);
  const pairs = new Map<string, { A?: Float32Array; B?: Float32Array; a?: number[]; b?: number[] }>();
  for (const [name, t] of Object.entries(tensors)) {
    const m = LORA.exec(name);
    if (!m) continue;
    const key = `${m[1]}.${m[2]}`, e = pairs.get(key) ?? {};
    if (m[3] === 'A') { e.A = t.data; e.a = t.shape; } else { e.B = t.data; e.b = t.shape; }
    pairs.set(key, e);
  }
  const dims: Record<Module, [number, number]> = {
    q_proj: [c.numHeads * c.headDim, D], k_proj: [c.numKvHeads * c.headDim, D], v_proj: [c.numKvHeads * c.headDim, D], o_proj: [D, c.numHeads * c.headDim],
    gate_proj: [c.intermediateSize, D], up_proj: [c.intermediateSize, D], down_proj: [D, c.intermediateSize],
  };
  const merged: RestoreAssets['merged'] = Array.from({ length: c.numLayers }, () => ({}));
  for (const [key, e] of pairs) {
    const [layer, mod] = [Number(key.split('.')[0]), key.split('.')[1] as Module];
    if (layer >= c.numLayers) throw new Error(`${path}: LoRA for layer ${layer}, the model has ${c.numLayers}`);
    if (!e.A || !e.B) throw new Error(`${path}: layer ${layer} ${mod} has lora_${e.A ? 'A' : 'B'} without its pair`);
    const [out, inp] = dims[mod], r = e.a![0];
    if (e.a!.length !== 2 || e.a![1] !== inp || e.b!.length !== 2 || e.b![0] !== out || e.b![1] !== r) {
      throw new Error(`${path}: layer ${layer} ${mod}: lora_A [${e.a}] and lora_B [${e.b}] do not fit [${out}, ${inp}] with one rank`);
    }
    const alpha = metadata.lora_alpha === undefined ? r : Number(metadata.lora_alpha);
    if (!Number.isFinite(alpha)) throw new Error(`${path}: metadata lora_alpha "${metadata.lora_alpha}" is not a number`);
    const field = MODULES[mod], W = new Float32Array(out * inp), base = model.layerWeights[layer][field];
    for (let i = 0; i < out; i++) {
      weightRow(base, inp, i, 0, inp, W, i * inp);
      for (let j = 0; j < r; j++) {
        const b = (alpha / r) * e.B[i * r + j];
        if (b !== 0) for (let k = 0; k < inp; k++) W[i * inp + k] += b * e.A[j * inp + k];
      }
    }
    for (const v of W) if (!Number.isFinite(v)) throw new Error(`${path}: layer ${layer} ${mod} holds a non-finite value`);
    merged[layer][field] = W;
  }
  for (const v of emb.data) if (!Number.isFinite(v)) throw new Error(`${path}: restore_embeddings holds a non-finite value`);
  return { embeddings: emb.data, count: emb.shape[0], merged };
}

/**
 * RestoreKV (kvpress `RestoreKVPress`, PR #259): KVzip, plus n learned "restore" tokens that win
 * back what eviction loses. After KVzip's scores, the restore embeddings run once through the
 * LoRA-adapted model over the whole, still uncompressed cache, at positions T … T + n − 1; their keys
 * and values join every layer's cache and stay, and KVzip evicts with its ratio raised by n/T so
 * the total budget is unchanged. The answer then starts after them (cache.nextPosition = T + n).
 * kvpress downloads the adapter; here it is read from a local file (`adapter`, see
 * readRestoreAssets). At ratio 0 nothing happens (no restore tokens either). Prefill only.
 * The restore pass runs on a copy-on-write clone of the cache; its tokens' keys and values are
 * read back from it as stored, one KV head at a time, and appended to the cache in its element type.
 */
export class RestoreKVPress extends KVzipPress {
  override name = 'restore_kv';
  readonly adapter: string;
  private assets: RestoreAssets | null = null;

  constructor(compressionRatio = 0, options: Partial<OptionsOf<typeof restoreKVOptions>> = {}) {
    const o = resolveOptions(restoreKVOptions, options, 'RestoreKVPress');
    if (!o.adapter) throw new PressError('RestoreKVPress needs its adapter: pass --press-option adapter=PATH (LoRA weights and restore embeddings, .safetensors)');
    const { adapter, ...kvzip } = o;
    super(compressionRatio, kvzip);
    this.adapter = adapter;
  }

  validate(model: ModelParts): void {
    this.load(model);
  }

  private load(model: ModelParts): RestoreAssets {
    try {
      return (this.assets ??= readRestoreAssets(this.adapter, model));
    } catch (e) {
      throw new PressError(`RestoreKVPress: ${(e as Error).message}`);
    }
  }

  protected override appendEntries(ctx: LayerContext): number {
    const a = this.load(ctx.model), m = runnableModel(ctx, this.name), c = m.config, T = ctx.rows, n = a.count, hd = c.headDim;
    const layers = m.layerWeights.map((w, l) => ({ ...w, ...a.merged[l] }));
    const weights: ModelWeights = { ...m.weights, embedding: a.embeddings, layers };
    const adapted = {
      config: { ...c, maxPositionEmbeddings: Number.MAX_SAFE_INTEGER, vocabSize: Math.max(c.vocabSize, n), embeddingScale: undefined },
      layerWeights: layers, weights, backend: m.backend, rope: m.rope, localRope: m.localRope, source: `${m.source} + ${this.adapter}`,
    };
    const copy = ctx.kvCache.clone();
    try {
      forward(adapted, new Workspace(adapted.config), Array.from({ length: n }, (_, i) => i), copy, { logits: 'none' });
      const k = new Float32Array(n * c.numKvHeads * hd), v = new Float32Array(k.length), pos = Int32Array.from({ length: n }, (_, i) => T + i);
      copy.layers.forEach((lc, l) => {
        for (let g = 0; g < c.numKvHeads; g++) {
          const K = lc.headKeys(g).subarray(T * hd), V = lc.headValues(g).subarray(T * hd);
          for (let r = 0; r < n; r++) {
            k.set(K.subarray(r * hd, (r + 1) * hd), (r * c.numKvHeads + g) * hd);
            v.set(V.subarray(r * hd, (r + 1) * hd), (r * c.numKvHeads + g) * hd);
          }
        }
        ctx.kvCache.layers[l].append(k, v, pos, n);
      });
    } finally {
      copy.dispose();
    }
    ctx.kvCache.nextPosition = T + n;
    return n;
  }
}

export const restoreKVEntry: PressEntry = {
  name: 'restore_kv',
  description: 'RestoreKV: KVzip plus restore tokens encoded by a LoRA-adapted pass, budget unchanged (adapter file from local disk)',
  options: restoreKVOptions,
  phase: 'prefill',
  create: (r, o) => new RestoreKVPress(r, o as OptionsOf<typeof restoreKVOptions>),
};
