import type { LayerContext } from '../model/layer-context.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import type { PressEntry } from './registry.js';
import { ScorerPress } from './scorer.js';

export const curOptions = defineOptions({
  numSinks: { type: 'integer', default: 4, min: 0, description: 'first tokens always kept (score 1)' },
  leverageType: { type: 'string', default: 'kv_product', values: ['key', 'value', 'kv_avg', 'kv_product'], description: 'how key and value leverages combine' },
  useLocalApproximation: { type: 'boolean', default: true, description: 'normalise ‖k‖² and ‖v‖² inside windows of localWindowSize tokens' },
  localWindowSize: { type: 'integer', default: 16, min: 1, description: 'window of the local approximation' },
});

/**
 * CUR (CurDKV, Sengupta et al., "Value-Guided KV Compression for LLMs via Approximated CUR
 * Decomposition", arXiv 2509.15038; kvpress `CURPress`): approximate leverage of each entry from
 * ‖k‖² and ‖v‖², by default normalised within consecutive windows of 16 (the last one
 * zero-padded), combined as k·v (or key / value / their mean), normalised to sum 1 per head; the
 * first numSinks entries get 1. The library's random-projection option (use_random_leverage,
 * torch's generator) is not offered.
 * ‖k‖² and ‖v‖² are those of the entries as stored, decoded one KV head at a time by
 * `headKeys`/`headValues`.
 */
export class CURPress extends ScorerPress {
  readonly name: string = 'cur';
  readonly options: OptionsOf<typeof curOptions>;

  constructor(compressionRatio = 0, options: Partial<OptionsOf<typeof curOptions>> = {}) {
    super(compressionRatio);
    this.options = resolveOptions(curOptions, options, 'CURPress');
  }

  score(ctx: LayerContext): Float64Array[] {
    const hd = ctx.config.headDim, o = this.options, w = o.localWindowSize;
    const sq = (X: Float32Array, T: number) => {
      const s = new Float64Array(T);
      for (let t = 0; t < T; t++) for (let d = 0; d < hd; d++) s[t] += X[t * hd + d] * X[t * hd + d];
      if (o.useLocalApproximation) {
        for (let a = 0; a < T; a += w) {
          let sum = 0;
          for (let t = a; t < Math.min(a + w, T); t++) sum += s[t];
          for (let t = a; t < Math.min(a + w, T); t++) s[t] /= sum;
        }
      }
      return s;
    };
    return Array.from(ctx.cache.lengths, (T, g) => {
      const k2 = sq(ctx.cache.headKeys(g), T), v2 = sq(ctx.cache.headValues(g), T);
      const s = new Float64Array(T);
      for (let t = 0; t < T; t++) {
        s[t] = o.leverageType === 'key' ? k2[t] : o.leverageType === 'value' ? v2[t] : o.leverageType === 'kv_avg' ? (k2[t] + v2[t]) / 2 : k2[t] * v2[t];
      }
      let total = 0;
      for (const x of s) total += x;
      for (let t = 0; t < T; t++) s[t] = t < o.numSinks ? 1 : s[t] / total;
      return s;
    });
  }
}

export const curEntry: PressEntry = {
  name: 'cur',
  description: 'CUR (CurDKV): approximate leverage of keys × values, normalised in local windows (arXiv 2509.15038)',
  options: curOptions,
  create: (r, o) => new CURPress(r, o as OptionsOf<typeof curOptions>),
};
