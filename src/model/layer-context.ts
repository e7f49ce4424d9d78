import type { Backend } from '../backend/backend.js';
import type { KVCache, LayerCache } from '../cache/kv-cache.js';
import { attentionScale, layerWindow, type ModelConfig } from './config.js';
import type { Rope } from './rope.js';
import { linear, type LayerWeights } from './weights.js';

/**
 * What the forward pass hands a compressor after one layer's attention. The activations of the
 * current pass are never changed by a compressor; only what stays in the cache.
 */
export interface Compressor {
  /**
   * Called after every layer's attention in every forward pass (prefill and decode: check
   * `ctx.isPrefill`). Returns per-KV-head indices of the entries to keep (into the layer's
   * current entries), or nothing to leave the layer as it is.
   */
  compress(ctx: LayerContext): readonly ArrayLike<number>[] | null | undefined | void;
  /**
   * True when the compressor reads LayerContext.attentionColumnSums: a prefill's attention then
   * adds up, per KV head, the probability each entry receives (a pass over the probabilities it
   * already holds, instead of the press recomputing QKᵀ). Other passes never compute them.
   */
  readonly attentionColumns?: boolean;
  /**
   * Called once after a prefill pass (one that started from an empty cache) has finished and its
   * keeps are applied: for presses whose method needs whole extra passes of the model (KVCompose
   * runs the context a second time). If it throws, the cache is emptied (as before the prefill).
   */
  afterPrefill?(done: PrefillDone): void;
}

/** What a compressor's afterPrefill receives. */
export interface PrefillDone {
  readonly model: ModelParts;
  readonly cache: KVCache;
  /** The prefill's tokens. */
  readonly tokens: ArrayLike<number>;
  /**
   * Another forward pass over `cache` (no logits): `press` sees its layers as during any pass.
   * `pastWindow` lets it run past the model's maxPositionEmbeddings (RoPE extends there), for
   * scoring passes whose entries are dropped afterwards.
   */
  forward(tokens: ArrayLike<number>, opts: { press: Compressor; pastWindow?: boolean }): void;
}

/** The parts of a model a layer context reads. */
export interface ModelParts {
  readonly config: ModelConfig;
  readonly layerWeights: readonly LayerWeights[];
  readonly backend: Backend;
  readonly rope: Rope;
  /** The sliding-window layers' RoPE when it differs from `rope` (Gemma 3). */
  readonly localRope?: Rope | null;
}

/**
 * What a layer's attention added up for a compressor with `attentionColumns`: sums[g·stride + t]
 * is Σ over the pass's rows and KV head g's query heads of the softmax probability of entry t
 * (the rows' own causal, and on a sliding-window layer windowed, attention at the model's scale);
 * lengths[g] is how many entries head g held then. A view into the forward pass's workspace,
 * overwritten by the next layer.
 */
export interface AttentionColumns {
  readonly sums: Float64Array;
  readonly stride: number;
  readonly lengths: Int32Array;
}

/** An activation of the pass, or how to compute it when a press first reads it (sub-contexts gather lazily). */
export type Activation = Float32Array | (() => Float32Array);

export class LayerContext {
  private preRope: Float32Array | null = null;
  private hiddenStates: Activation;
  private queryStates: Activation;

  constructor(
    readonly model: ModelParts,
    readonly layer: number,
    readonly kvCache: KVCache,
    /** True when this forward started from an empty cache (kvpress's `is_prefilling`). */
    readonly isPrefill: boolean,
    /** Tokens in this forward pass. */
    readonly rows: number,
    hidden: Activation,
    /** [rows] absolute positions of this pass's tokens. */
    readonly positions: Int32Array,
    queries: Activation,
    /** [rows] token ids of this pass, where the caller knows them (presses that re-run the prompt, such as KVzip, need them). */
    readonly tokens: ArrayLike<number> | null = null,
    /** The attention's column sums when the forward pass computed them (see attentionColumnSums). */
    readonly columns: AttentionColumns | null = null,
  ) {
    this.hiddenStates = hidden;
    this.queryStates = queries;
  }

  /** [rows][hidden] attention-input hidden states (after the pre-attention RMSNorm). */
  get hidden(): Float32Array {
    if (typeof this.hiddenStates === 'function') this.hiddenStates = this.hiddenStates();
    return this.hiddenStates;
  }

  /** [rows][numHeads·headDim] post-RoPE queries of this pass. */
  get queries(): Float32Array {
    if (typeof this.queryStates === 'function') this.queryStates = this.queryStates();
    return this.queryStates;
  }

  /**
   * Σ over this pass's rows and the query heads of KV head g of the softmax probability each of
   * its entries received in this layer's attention ([entries], a view valid during this call of
   * the compressor only), or null when the pass did not compute it or the cache no longer holds
   * what the attention saw: then a press computes it itself.
   */
  attentionColumnSums(g: number): Float64Array | null {
    const a = this.columns;
    if (!a || a.lengths[g] !== this.cache.lengths[g]) return null;
    return a.sums.subarray(g * a.stride, g * a.stride + a.lengths[g]);
  }

  get config(): ModelConfig {
    return this.model.config;
  }

  get weights(): LayerWeights {
    return this.model.layerWeights[this.layer];
  }

  get backend(): Backend {
    return this.model.backend;
  }

  /** This layer's RoPE (a sliding-window layer's own base where the model has one). */
  get rope(): Rope {
    return (layerWindow(this.config, this.layer) !== undefined && this.model.localRope) || this.model.rope;
  }

  /** This layer's cache, already holding this pass's keys and values. */
  get cache(): LayerCache {
    return this.kvCache.layers[this.layer];
  }

  /**
   * [rows][numHeads·headDim] queries before RoPE: x·W_qᵀ (+bias) then the per-head q-norm
   * where the architecture has one (kvpress's `get_prerope_query_states`). Computed once.
   */
  preRopeQueries(): Float32Array {
    if (this.preRope) return this.preRope;
    const c = this.config, w = this.weights, qDim = c.numHeads * c.headDim;
    const q = new Float32Array(this.rows * qDim);
    linear(this.backend, q, this.hidden, w.wq, this.rows, qDim, c.hiddenSize, w.bq);
    if (w.qNorm) this.backend.rmsnorm(q, q, w.qNorm, this.rows * c.numHeads, c.headDim, c.rmsNormEps);
    this.preRope = q;
    return q;
  }

  /**
   * Softmax attention probabilities of the last `window` queries of this pass against every
   * cached entry, per query head: result[h] is [window][length of h's KV head], causal
   * (row i sees the entries up to its own token, and on a sliding-window layer only those inside
   * the window; the others are 0). Float32, computed on demand.
   */
  attentionProbs(window = this.rows): Float32Array[] {
    if (!(window >= 1 && window <= this.rows)) throw new Error(`attentionProbs: window ${window} outside [1, ${this.rows}]`);
    const c = this.config, hd = c.headDim, group = c.numHeads / c.numKvHeads, qStride = c.numHeads * hd;
    const scale = attentionScale(c), win = layerWindow(c, this.layer);
    const out: Float32Array[] = [];
    for (let h = 0; h < c.numHeads; h++) {
      const g = Math.floor(h / group);
      const len = this.cache.lengths[g];
      const K = this.cache.headKeys(g), P = win === undefined ? null : this.cache.headPositions(g);
      const probs = new Float32Array(window * len);
      for (let i = 0; i < window; i++) {
        const row = this.rows - window + i;
        const visible = len - this.rows + row + 1;
        let first = 0;
        if (P && win !== undefined) while (P[first] <= P[visible - 1] - win) first++;
        const qo = row * qStride + h * hd, po = i * len;
        let max = -Infinity;
        for (let t = first; t < visible; t++) {
          let s = 0;
          for (let d = 0; d < hd; d++) s += this.queries[qo + d] * K[t * hd + d];
          s *= scale;
          probs[po + t] = s;
          if (s > max) max = s;
        }
        let sum = 0;
        for (let t = first; t < visible; t++) sum += probs[po + t] = Math.exp(probs[po + t] - max);
        for (let t = first; t < visible; t++) probs[po + t] /= sum;
      }
      out.push(probs);
    }
    return out;
  }

  /**
   * [rows][numKvHeads·headDim] keys before RoPE: x·W_kᵀ (+bias) then the per-head k-norm where the
   * architecture has one (kvpress's `get_prerope_key_states`). Computed on each call.
   */
  preRopeKeys(): Float32Array {
    const c = this.config, w = this.weights, kDim = c.numKvHeads * c.headDim;
    const k = new Float32Array(this.rows * kDim);
    linear(this.backend, k, this.hidden, w.wk, this.rows, kDim, c.hiddenSize, w.bk);
    if (w.kNorm) this.backend.rmsnorm(k, k, w.kNorm, this.rows * c.numKvHeads, c.headDim, c.rmsNormEps);
    return k;
  }
}
