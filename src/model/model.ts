import type { Backend } from '../backend/backend.js';
import { JsBackend } from '../backend/js/kernels.js';
import { resolveKvDtype, type CheckpointPrecision, type KvDtype, type KvDtypeOption } from '../cache/format.js';
import { KVCache, type CacheOptions } from '../cache/kv-cache.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { validateConfig, type ModelConfig } from './config.js';
import { forward, Workspace, type ForwardOptions } from './forward.js';
import type { ModelParts } from './layer-context.js';
import { Rope } from './rope.js';
import { convertWeights, validateWeights, WEIGHT_TYPES, WEIGHT_TYPES_TEXT, weightsType, type LayerWeights, type ModelWeights, type WeightType } from './weights.js';

export interface ModelOptions {
  /** Kernels to run on; the TypeScript reference when omitted. */
  backend?: Backend;
  tokenizer?: Tokenizer | null;
  /** Where the model came from, for error messages. */
  source?: string;
  /**
   * The number format every matrix is held in, once, for prefill and decode alike: 'bf16'
   * rounds f32 matrices to bf16 (nearest even) — half the memory and the bytes a decode step
   * streams, bf16 × bf16 products in the prefill GEMM; activations, norms and sums stay f32.
   * 'f32' widens bf16 matrices (exact). Default: as the weights were given (a bf16 checkpoint
   * stays bf16).
   */
  weights?: WeightType;
  /** @deprecated the former name of `weights` (it now sets the one copy both passes use). */
  decodeWeights?: WeightType;
  /** Element type of the caches newCache() makes; 'auto' (default) follows `precision` (see autoKvDtype). */
  kvDtype?: KvDtypeOption;
  /** Number format of the checkpoint's weights, which 'auto' follows (default 'f32'). */
  precision?: CheckpointPrecision;
}

/** A loaded Llama-family model: config, weights held once, kernels and reusable buffers. */
export class Model implements ModelParts {
  readonly backend: Backend;
  readonly tokenizer: Tokenizer | null;
  readonly rope: Rope;
  readonly localRope: Rope | null;
  readonly source: string;
  readonly weights: ModelWeights;
  /** The number format of the matrices ('mixed' only when given so and not asked to convert). */
  readonly weightsType: WeightType | 'mixed';
  /** Number format of the checkpoint's weights. */
  readonly precision: CheckpointPrecision;
  /** Element type of the caches newCache() makes. */
  readonly kvDtype: KvDtype;
  private readonly ws: Workspace;

  constructor(readonly config: ModelConfig, weights: ModelWeights, opts: ModelOptions = {}) {
    this.source = opts.source ?? 'model';
    validateConfig(config, this.source);
    validateWeights(config, weights, this.source);
    const type = opts.weights ?? opts.decodeWeights;
    if (type !== undefined && !WEIGHT_TYPES.includes(type)) throw new Error(`${this.source}: weights must be ${WEIGHT_TYPES_TEXT}, got ${JSON.stringify(type)}`);
    this.weights = type ? convertWeights(config, weights, type) : weights;
    this.weightsType = weightsType(this.weights);
    this.backend = opts.backend ?? new JsBackend();
    this.tokenizer = opts.tokenizer ?? null;
    this.rope = new Rope(config);
    this.localRope = config.localRopeTheta === undefined ? null : new Rope({ ...config, ropeTheta: config.localRopeTheta, ropeScaling: null, ropeFreqFactors: undefined });
    this.ws = new Workspace(config);
    this.precision = opts.precision ?? 'f32';
    this.kvDtype = resolveKvDtype(opts.kvDtype, this.precision);
  }

  get layerWeights(): readonly LayerWeights[] {
    return this.weights.layers;
  }

  /** An empty paged cache in the model's kvDtype (or opts.dtype). */
  newCache(opts: CacheOptions = {}): KVCache {
    if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) throw new TypeError(`newCache: options must be an object like { dtype: 'f16', pageEntries: 64 }, got ${String(opts)}`);
    return new KVCache(this.config.numLayers, this.config.numKvHeads, this.config.headDim, { dtype: this.kvDtype, memory: this.backend.pageMemory, ...opts });
  }

  /**
   * Runs `tokens` through the model at positions cache.nextPosition…, appending their keys and
   * values to `cache`. Returns logits ([vocab] for 'last' — a view reused by the next call —
   * one flat Float32Array of rows × vocab for 'all', row r at r·vocab; empty for 'none').
   */
  forward(tokens: ArrayLike<number>, cache: KVCache, opts: ForwardOptions = {}): Float32Array {
    checkForwardArgs(tokens, opts);
    return forward(this, this.ws, tokens, cache, opts);
  }

  /** Reserves buffers for passes of up to `rows` tokens over caches of up to `length` entries. */
  reserve(rows: number, length: number): void {
    this.ws.reserve(rows, length);
  }
}

/** The public forward's arguments, checked in the library's words (token ids are checked by forward). */
function checkForwardArgs(tokens: ArrayLike<number>, opts: ForwardOptions): void {
  if (typeof opts !== 'object' || opts === null) throw new TypeError(`forward: options must be an object, got ${opts === null ? 'null' : typeof opts}`);
  const l = opts.logits;
  if (l !== undefined && l !== 'last' && l !== 'all' && l !== 'none') throw new TypeError(`forward: logits must be 'last', 'all' or 'none', got ${JSON.stringify(l)}`);
  if (typeof tokens !== 'object' || tokens === null || typeof tokens.length !== 'number') throw new TypeError(`forward: tokens must be an array of token ids, got ${tokens === null ? 'null' : typeof tokens}`);
}
