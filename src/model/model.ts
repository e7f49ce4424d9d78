import type { Backend } from '../backend/backend.js';
import { JsBackend } from '../backend/js/kernels.js';
import { KVCache } from '../cache/kv-cache.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { validateConfig, type ModelConfig } from './config.js';
import { forward, Workspace, type ForwardOptions } from './forward.js';
import type { ModelParts } from './layer-context.js';
import { Rope } from './rope.js';
import { validateWeights, type LayerWeights, type ModelWeights } from './weights.js';

export interface ModelOptions {
  /** Kernels to run on; the TypeScript reference when omitted. */
  backend?: Backend;
  tokenizer?: Tokenizer | null;
  /** Where the model came from, for error messages. */
  source?: string;
}

/** A loaded Llama-family model: config, f32 weights, kernels and reusable buffers. */
export class Model implements ModelParts {
  readonly backend: Backend;
  readonly tokenizer: Tokenizer | null;
  readonly rope: Rope;
  readonly source: string;
  private readonly ws: Workspace;

  constructor(readonly config: ModelConfig, readonly weights: ModelWeights, opts: ModelOptions = {}) {
    this.source = opts.source ?? 'model';
    validateConfig(config, this.source);
    validateWeights(config, weights, this.source);
    this.backend = opts.backend ?? new JsBackend();
    this.tokenizer = opts.tokenizer ?? null;
    this.rope = new Rope(config);
    this.ws = new Workspace(config);
  }

  get layerWeights(): readonly LayerWeights[] {
    return this.weights.layers;
  }

  /** An empty cache, with room for `capacity` tokens per head reserved up front. */
  newCache(capacity = 0): KVCache {
    return new KVCache(this.config.numLayers, this.config.numKvHeads, this.config.headDim, capacity);
  }

  /**
   * Runs `tokens` through the model at positions cache.nextPosition…, appending their keys and
   * values to `cache`. Returns logits ([vocab] for 'last' — a view reused by the next call —
   * [rows][vocab] for 'all', empty for 'none').
   */
  forward(tokens: ArrayLike<number>, cache: KVCache, opts: ForwardOptions = {}): Float32Array {
    return forward(this, this.ws, tokens, cache, opts);
  }

  /** Reserves buffers for passes of up to `rows` tokens over caches of up to `length` entries. */
  reserve(rows: number, length: number): void {
    this.ws.reserve(rows, length);
  }
}
