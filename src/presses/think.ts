import type { LayerContext } from '../model/layer-context.js';
import { defineOptions, ratioOption, resolveOptions, type OptionsOf } from './options.js';
import { PressError, type KeepIndices, type Press, type PressPhase, type ScoreObserver } from './press.js';
import type { PressEntry } from './registry.js';
import { topK } from './scorer.js';

export const thinkOptions = defineOptions({
  keyChannelCompressionRatio: { type: 'number', default: 0, min: 0, max: 0.999999, description: 'fraction of each KV head\'s key channels pruned: floor(headDim·ratio) of them' },
  windowSize: { type: 'integer', default: 32, min: 1, description: 'last prompt queries whose channel magnitudes score the channels' },
});

/**
 * ThinK (Xu et al., "ThinK: Thinner Key Cache by Query-Driven Pruning", arXiv 2407.21018; kvpress
 * `ThinKPress`): prunes key *channels*, not tokens. For each KV head, channel c scores
 * mean(q_c²) over the last windowSize post-RoPE queries of the prompt and the head's query group,
 * times mean(k_c²) over the head's cached keys; the floor(headDim·ratio) lowest channels are pruned
 * (ties: the higher channel goes first). kvpress zeroes those channels and keeps the tensor's shape,
 * so it saves no memory; here the cache stores only the kept channels of that head
 * (LayerCache.pruneKeyChannels) and attention dots the query's kept channels with them, which is
 * the same attention as zeroed channels. Deviation: keys appended later (question, generated
 * tokens) store the same channels, where kvpress keeps them whole — the saving then holds during
 * generation too. Prefill only; the compression ratio it reports is kvpress's ratio / 2 (the keys'
 * share of the cache), and it evicts no token.
 * The queries are the pass's own (float32); mean(k_c²) reads the cached keys as stored, one KV
 * head at a time, and with a q8_0 or q4_0 cache the kept channels are quantized again over their
 * own blocks (LayerCache.pruneKeyChannels).
 */
export class ThinKPress implements Press {
  readonly phase: PressPhase = 'prefill';
  name = 'think';
  observer: ScoreObserver | null = null;
  readonly options: OptionsOf<typeof thinkOptions>;

  constructor(options: Partial<OptionsOf<typeof thinkOptions>> = {}) {
    this.options = resolveOptions(thinkOptions, options, 'ThinKPress');
  }

  get compressionRatio(): number {
    return this.options.keyChannelCompressionRatio / 2;
  }

  set compressionRatio(r: number) {
    throw new PressError(`ThinKPress prunes key channels: set keyChannelCompressionRatio instead of a compression ratio (got ${r})`);
  }

  /** [kvHeads][headDim] channel scores of the layer: query energy × key energy (higher = keep). */
  channelScores(ctx: LayerContext): Float64Array[] {
    const c = ctx.config, hd = c.headDim, H = c.numHeads, G = H / c.numKvHeads, qStride = H * hd;
    const w = Math.min(this.options.windowSize, ctx.rows), from = ctx.rows - w;
    return Array.from({ length: c.numKvHeads }, (_, g) => {
      const qn = new Float64Array(hd), kn = new Float64Array(hd);
      for (let r = from; r < ctx.rows; r++) {
        for (let h = g * G; h < (g + 1) * G; h++) for (let d = 0, o = r * qStride + h * hd; d < hd; d++) qn[d] += ctx.queries[o + d] ** 2;
      }
      const T = ctx.cache.lengths[g], K = ctx.cache.headKeys(g);
      for (let t = 0; t < T; t++) for (let d = 0; d < hd; d++) kn[d] += K[t * hd + d] ** 2;
      return qn.map((x, d) => (x / (w * G)) * (T > 0 ? kn[d] / T : 0));
    });
  }

  compress(ctx: LayerContext): KeepIndices | null {
    const hd = ctx.config.headDim, pruned = Math.floor(hd * this.options.keyChannelCompressionRatio);
    if (!ctx.isPrefill || pruned === 0) return null;
    this.channelScores(ctx).forEach((s, g) => ctx.cache.pruneKeyChannels(g, topK(s, hd - pruned)));
    return null;
  }
}

export const thinkEntry: PressEntry = {
  name: 'think',
  description: 'ThinK: prunes the key channels the last queries use least; the cache stores only the kept channels (arXiv 2407.21018; prefill only; the ratio is the channel ratio)',
  options: thinkOptions,
  create: (r, o) => {
    const ratio = ratioOption(r, o.keyChannelCompressionRatio as number, 'keyChannelCompressionRatio');
    return new ThinKPress({ ...(o as OptionsOf<typeof thinkOptions>), keyChannelCompressionRatio: ratio });
  },
};
