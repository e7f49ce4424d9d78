import type { LayerContext } from '../model/layer-context.js';
import { range, windowAttention } from './common.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import type { KeepIndices, Press, ScoreObserver } from './press.js';
import type { PressEntry } from './registry.js';

export const simLayerKVOptions = defineOptions({
  lazyThreshold: { type: 'number', default: 1, min: 0, description: 'a layer is lazy when its last queries put more attention than this on the initial and recent tokens (1 disables; the paper uses 0.65 for Llama 2, 0.9 for Llama 3)' },
  nLast: { type: 'integer', default: 1, min: 1, description: 'last queries whose attention decides laziness' },
  nRecent: { type: 'integer', default: 1024, min: 1, description: 'recent tokens a lazy layer keeps (nRecent − nLast of them)' },
  nInitial: { type: 'integer', default: 4, min: 0, description: 'initial tokens a lazy layer keeps' },
});

/**
 * SimLayerKV (Zhang et al., "SimLayerKV: A Simple Framework for Layer-Level KV Cache Reduction",
 * arXiv 2410.13846; kvpress `SimLayerKVPress`): a layer is "lazy" when the attention of its last
 * nLast queries, averaged over every query head, puts more than lazyThreshold on the first
 * nInitial keys plus the nRecent keys before those queries; a lazy layer keeps only its first
 * nInitial and last nRecent − nLast entries (as the library: not exactly the keys it summed over),
 * the others keep everything. Prompts of at most nInitial + nRecent + nLast tokens are left alone.
 * The compression ratio is an outcome (mean over layers of the last prefill), not a setting.
 * The last queries are the pass's own (float32); the keys they attend to are the cached entries
 * as stored, decoded one KV head at a time by `headKeys`.
 */
export class SimLayerKVPress implements Press {
  name = 'sim_layer_kv';
  observer: ScoreObserver | null = null;
  readonly options: OptionsOf<typeof simLayerKVOptions>;
  /** Per layer of the last prefill: the fraction evicted. */
  readonly layerRatios: number[] = [];

  constructor(options: Partial<OptionsOf<typeof simLayerKVOptions>> = {}) {
    this.options = resolveOptions(simLayerKVOptions, options, 'SimLayerKVPress');
  }

  get compressionRatio(): number {
    return this.layerRatios.length ? this.layerRatios.reduce((a, b) => a + b, 0) / this.layerRatios.length : 0;
  }

  set compressionRatio(r: number) {
    if (r !== 0) throw new RangeError(`SimLayerKVPress decides per layer from lazyThreshold and takes no compression ratio (got ${r})`);
  }

  reset(): void {
    this.layerRatios.length = 0;
  }

  /** The lazy score of the layer: attention mass on the initial and recent keys, or null for a short prompt. */
  lazyScore(ctx: LayerContext): number | null {
    const { nLast, nRecent, nInitial } = this.options, T = ctx.rows;
    if (T <= nInitial + nRecent + nLast) return null;
    const att = windowAttention(ctx, nLast), H = att.length, cols = T - nLast;
    let mass = 0;
    for (const a of att) {
      for (let r = 0; r < nLast; r++) {
        for (let t = 0; t < nInitial; t++) mass += a[r * cols + t];
        for (let t = cols - nRecent; t < cols; t++) mass += a[r * cols + t];
      }
    }
    return mass / (H * nLast);
  }

  compress(ctx: LayerContext): KeepIndices | null {
    if (!ctx.isPrefill) return null;
    if (ctx.layer === 0) this.reset();
    const score = this.lazyScore(ctx), T = ctx.rows, { nLast, nRecent, nInitial } = this.options;
    const lazy = score !== null && score > this.options.lazyThreshold;
    this.layerRatios[ctx.layer] = lazy ? 1 - (nInitial + nRecent - nLast) / T : 0;
    if (!lazy) return null;
    const keep = Int32Array.from([...range(0, nInitial), ...range(T - (nRecent - nLast), T)]);
    return Array.from(ctx.cache.lengths, () => keep);
  }
}

export const simLayerKVEntry: PressEntry = {
  name: 'sim_layer_kv',
  description: 'SimLayerKV: "lazy" layers (attention concentrated on initial and recent tokens) keep only those (arXiv 2410.13846; takes no ratio)',
  options: simLayerKVOptions,
  create: (r, o) => {
    if (r !== 0) throw new Error(`decides per layer from lazyThreshold and takes no compression ratio (got ${r}); set --press-option lazyThreshold=0.9`);
    return new SimLayerKVPress(o as OptionsOf<typeof simLayerKVOptions>);
  },
};
