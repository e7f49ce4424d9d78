import type { LayerContext } from '../model/layer-context.js';
import { checkInt, keptCount, range, requirePrefillCache, subContext } from './common.js';
import type { KeepIndices } from './press.js';
import { topK, type ScorerPress } from './scorer.js';
import { ScorerWrapper } from './wrapper.js';

/**
 * ChunkPress (kvpress; the chunking of FINCH, Corallo & Papotti, TACL 2024): cuts the prefill into
 * chunks of `chunkLength` tokens, scores each chunk on its own (its hidden states, queries, keys
 * and values only) and keeps max(1, floor(len·(1 − ratio))) per chunk, so the whole context stays
 * covered. Unlike kvpress, whose inner press re-applies RoPE with the *last* positions of the whole
 * sequence, each chunk's queries keep their true positions. The observer receives the chunk scores
 * side by side.
 */
export class ChunkPress extends ScorerWrapper {
  readonly chunkLength: number;

  constructor(inner: ScorerPress, compressionRatio = inner?.compressionRatio, chunkLength = 1024) {
    super(inner, 'chunk', compressionRatio);
    this.chunkLength = checkInt(chunkLength, 'chunkLength');
  }

  override compress(ctx: LayerContext): KeepIndices | null {
    const ratio = this.compressionRatio;
    if (!ctx.isPrefill || (ratio === 0 && !this.observer)) return null;
    const T = requirePrefillCache(ctx, this.name), H = ctx.config.numKvHeads;
    const all = Array.from({ length: H }, () => new Float64Array(T));
    const keep: number[][] = Array.from({ length: H }, () => []);
    for (let start = 0; start < T; start += this.chunkLength) {
      const end = Math.min(T, start + this.chunkLength);
      const scores = this.inner.score(subContext(ctx, range(start, end)));
      scores.forEach((s, g) => {
        all[g].set(s, start);
        for (const t of topK(s, Math.max(1, keptCount(end - start, ratio)))) keep[g].push(start + t);
      });
    }
    this.observer?.onScores(ctx.layer, all, this.inner.logScores);
    return ratio === 0 ? null : keep.map((k) => Int32Array.from(k));
  }
}
