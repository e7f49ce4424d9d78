import type { LayerContext } from '../model/layer-context.js';
import { keptCount, uniformLength } from './common.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import type { KeepIndices } from './press.js';
import type { WrapperEntry } from './registry.js';
import { topK, type ScorerPress } from './scorer.js';
import { ScorerWrapper } from './wrapper.js';

export const chunkKVOptions = defineOptions({
  chunkLength: { type: 'integer', default: 20, min: 1, description: 'tokens per chunk; whole chunks are kept or dropped' },
});

/**
 * ChunkKV (Liu et al., "ChunkKV: Semantic-Preserving KV Cache Compression for Efficient Long-Context
 * LLM Inference", arXiv 2502.00299; kvpress `ChunkKVPress`): the inner press's scores, summed over
 * the KV heads and averaged over each chunk of chunkLength positions (the last, partial chunk over
 * its own length), rank the chunks; the best max(1, floor(n_chunks·(1 − ratio))) chunks are kept,
 * the same positions for every head. As the library, this keeps whole chunks, so usually fewer (or
 * more) entries than floor(T(1 − ratio)); a prompt shorter than one chunk falls back to the inner
 * press's own top-k.
 */
export class ChunkKVPress extends ScorerWrapper {
  readonly options: OptionsOf<typeof chunkKVOptions>;

  constructor(inner: ScorerPress, compressionRatio = inner?.compressionRatio, options: Partial<OptionsOf<typeof chunkKVOptions>> = {}) {
    super(inner, 'chunkkv', compressionRatio);
    this.options = resolveOptions(chunkKVOptions, options, 'ChunkKVPress');
  }

  protected override select(ctx: LayerContext, scores: Float64Array[], ratio: number): KeepIndices {
    const T = uniformLength(ctx, this.name), C = this.options.chunkLength;
    const full = Math.floor(T / C), n = full + (T % C > 0 ? 1 : 0);
    if (full === 0) return scores.map((s) => topK(s, keptCount(s.length, ratio)));
    const chunk = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const a = i * C, b = Math.min(a + C, T);
      let sum = 0;
      for (const s of scores) for (let t = a; t < b; t++) sum += s[t];
      chunk[i] = sum / (b - a);
    }
    const kept = topK(chunk, Math.max(1, keptCount(n, ratio)));
    const idx: number[] = [];
    for (const i of kept) for (let t = i * C; t < Math.min((i + 1) * C, T); t++) idx.push(t);
    return scores.map(() => Int32Array.from(idx));
  }
}

export const chunkKVWrapper: WrapperEntry = {
  prefix: 'chunkkv',
  description: 'ChunkKV: keeps whole chunks of chunkLength tokens ranked by the mean score, same for every head (arXiv 2502.00299)',
  options: chunkKVOptions,
  wrap: (inner, r, o) => new ChunkKVPress(inner, r, o as OptionsOf<typeof chunkKVOptions>),
};
