import type { LayerContext, ModelParts } from '../model/layer-context.js';
import { requirePrefillCache } from './common.js';
import { predictSurrogate, readSurrogate, type KVzipSurrogate } from './kvzip-surrogate.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import { PressError } from './press.js';
import type { PressEntry } from './registry.js';
import { ScorerPress } from './scorer.js';

export const kvzapOptions = defineOptions({
  surrogate: { type: 'string', default: '', description: 'surrogate file (.safetensors) from `kvpress calibrate kvzap` or the authors\' KVzapModel weights (required)' },
  modelType: { type: 'string', default: 'mlp', values: ['mlp', 'linear'], description: 'the surrogate the file must hold' },
});

/**
 * KVzap (Jegou & Jeblick, "KVzap: Fast, Adaptive and Faithful KV Cache Pruning", arXiv 2601.07891;
 * kvpress `KVzapPress`): a per-layer linear or MLP surrogate maps each token's attention-input
 * hidden state to the predicted log KVzip+ score of its entry in every KV head (kvzip-surrogate.ts),
 * so KVzip's selection costs one small matmul instead of a second pass. As a scorer it keeps the
 * top floor(T(1 − ratio)) per head; the paper's use is `dms_kvzap` (threshold eviction, e.g.
 * threshold=-6). kvpress downloads the surrogate from the hub; here `kvpress calibrate kvzap`
 * trains it on local text from the model's own KVzip+ scores. Prefill only; scores are logs. The
 * surrogate reads the pass's own float32 hidden states and no cached key or value.
 */
export class KVzapPress extends ScorerPress {
  readonly name: string = 'kvzap';
  readonly phase = 'prefill' as const;
  override readonly logScores = true;
  readonly options: OptionsOf<typeof kvzapOptions>;
  private surrogate: KVzipSurrogate | null;

  /** `surrogate`: a trained surrogate in memory, instead of options.surrogate's file. */
  constructor(compressionRatio = 0, options: Partial<OptionsOf<typeof kvzapOptions>> = {}, surrogate: KVzipSurrogate | null = null) {
    super(compressionRatio);
    this.options = resolveOptions(kvzapOptions, options, 'KVzapPress');
    if (!surrogate && !this.options.surrogate) throw new PressError('KVzapPress needs a surrogate: pass --press-option surrogate=PATH, a file written by `kvpress calibrate kvzap`');
    this.surrogate = surrogate;
  }

  validate(model: ModelParts): void {
    const s = this.load(model);
    if (s.type !== this.options.modelType) throw new PressError(`KVzapPress: ${this.options.surrogate || 'the surrogate'} is a ${s.type} surrogate, modelType is ${this.options.modelType}`);
  }

  private load(model: ModelParts): KVzipSurrogate {
    const c = model.config;
    if (!this.surrogate) {
      try {
        this.surrogate = readSurrogate(this.options.surrogate, c.numLayers, c.hiddenSize, c.numKvHeads);
      } catch (e) {
        throw new PressError(`KVzapPress: ${(e as Error).message}`);
      }
    }
    const s = this.surrogate;
    if (s.layers.length !== c.numLayers || s.hiddenSize !== c.hiddenSize || s.numKvHeads !== c.numKvHeads) {
      throw new PressError(`KVzapPress: the surrogate fits ${s.layers.length} layers × ${s.numKvHeads} KV heads of hidden size ${s.hiddenSize}, the model has ${c.numLayers} × ${c.numKvHeads} of ${c.hiddenSize}`);
    }
    return s;
  }

  score(ctx: LayerContext): Float64Array[] {
    const T = requirePrefillCache(ctx, this.name);
    return predictSurrogate(this.load(ctx.model), ctx.layer, ctx.hidden, T, ctx.backend);
  }
}

export const kvzapEntry: PressEntry = {
  name: 'kvzap',
  description: 'KVzap: a linear/MLP surrogate of log KVzip+ scores from hidden states, trained by `kvpress calibrate kvzap`; use as dms_kvzap (arXiv 2601.07891)',
  options: kvzapOptions,
  phase: 'prefill',
  create: (r, o) => new KVzapPress(r, o as OptionsOf<typeof kvzapOptions>),
};
