import type { Backend } from '../backend/backend.js';
import { JsBackend, toBf16 } from '../backend/js/kernels.js';
import { KVCache } from '../cache/kv-cache.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { validateConfig, type ModelConfig } from './config.js';
import { forward, Workspace, type ForwardOptions } from './forward.js';
import type { ModelParts } from './layer-context.js';
import { Rope } from './rope.js';
import { validateWeights, type LayerWeights, type ModelWeights } from './weights.js';

/** Number format of the matrices decode steps (one-token forward passes) read. */
export type DecodeWeights = 'f32' | 'bf16';

export interface ModelOptions {
  /** Kernels to run on; the TypeScript reference when omitted. */
  backend?: Backend;
  tokenizer?: Tokenizer | null;
  /** Where the model came from, for error messages. */
  source?: string;
  /**
   * 'bf16': keep, beside the f32 weights, a bf16 copy (rounded to nearest even) of every matrix a
   * decode step reads, and run one-token passes on it — half the bytes streamed per decoded
   * token, for +50 % weight memory. Activations and sums stay f32; prefill, presses and
   * everything else keep the f32 weights. Needs a backend with `matmulBf16` (the built-in ones
   * have it); on one without, decode steps use the f32 weights and no copy is made.
   * Default 'f32'.
   */
  decodeWeights?: DecodeWeights;
}

/** One layer's matrices as bf16 bits, laid out as their f32 originals. */
export interface Bf16LayerWeights {
  wq: Uint16Array;
  wk: Uint16Array;
  wv: Uint16Array;
  wo: Uint16Array;
  wGate: Uint16Array;
  wUp: Uint16Array;
  wDown: Uint16Array;
}

/** The bf16 copy of every matrix a decode step reads. */
export interface Bf16Weights {
  layers: Bf16LayerWeights[];
  lmHead: Uint16Array;
}

/** A loaded Llama-family model: config, f32 weights, kernels and reusable buffers. */
export class Model implements ModelParts {
  readonly backend: Backend;
  readonly tokenizer: Tokenizer | null;
  readonly rope: Rope;
  readonly source: string;
  readonly decodeWeights: DecodeWeights;
  /** The bf16 decode weights, when asked for and the backend can use them. */
  readonly bf16: Bf16Weights | null;
  private readonly ws: Workspace;

  constructor(readonly config: ModelConfig, readonly weights: ModelWeights, opts: ModelOptions = {}) {
    this.source = opts.source ?? 'model';
    validateConfig(config, this.source);
    validateWeights(config, weights, this.source);
    const dw = opts.decodeWeights ?? 'f32';
    if (dw !== 'f32' && dw !== 'bf16') throw new Error(`${this.source}: decodeWeights must be 'f32' or 'bf16', got ${JSON.stringify(dw)}`);
    this.decodeWeights = dw;
    this.backend = opts.backend ?? new JsBackend();
    this.tokenizer = opts.tokenizer ?? null;
    this.rope = new Rope(config);
    this.ws = new Workspace(config);
    this.bf16 = dw === 'bf16' && this.backend.matmulBf16 ? bf16Copy(weights) : null;
  }

  get layerWeights(): readonly LayerWeights[] {
    return this.weights.layers;
  }

  /** An empty cache, with room for `capacity` tokens per head reserved up front. */
  newCache(capacity = 0): KVCache {
    if (!Number.isSafeInteger(capacity) || capacity < 0) throw new RangeError(`newCache: capacity must be an integer ≥ 0 (tokens per head to reserve), got ${String(capacity)}`);
    return new KVCache(this.config.numLayers, this.config.numKvHeads, this.config.headDim, capacity);
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

/** Rounds every decode matrix to bf16, once per distinct array (tied weights share a copy). */
function bf16Copy(w: ModelWeights): Bf16Weights {
  const done = new Map<Float32Array, Uint16Array>();
  const round = (a: Float32Array): Uint16Array => {
    let h = done.get(a);
    if (!h) done.set(a, (h = toBf16(a)));
    return h;
  };
  return {
    layers: w.layers.map((l) => ({
      wq: round(l.wq), wk: round(l.wk), wv: round(l.wv), wo: round(l.wo),
      wGate: round(l.wGate), wUp: round(l.wUp), wDown: round(l.wDown),
    })),
    lmHead: round(w.lmHead),
  };
}

/** The public forward's arguments, checked in the library's words (token ids are checked by forward). */
function checkForwardArgs(tokens: ArrayLike<number>, opts: ForwardOptions): void {
  if (typeof opts !== 'object' || opts === null) throw new TypeError(`forward: options must be an object, got ${opts === null ? 'null' : typeof opts}`);
  const l = opts.logits;
  if (l !== undefined && l !== 'last' && l !== 'all' && l !== 'none') throw new TypeError(`forward: logits must be 'last', 'all' or 'none', got ${JSON.stringify(l)}`);
  if (typeof tokens !== 'object' || tokens === null || typeof tokens.length !== 'number') throw new TypeError(`forward: tokens must be an array of token ids, got ${tokens === null ? 'null' : typeof tokens}`);
}
