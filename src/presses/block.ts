import type { Backend } from '../backend/backend.js';
import type { LayerContext } from '../model/layer-context.js';
import { checkInt, range, requirePrefillCache, subContext } from './common.js';
import type { KeepIndices } from './press.js';
import { topK, type ScorerPress } from './scorer.js';
import { ScorerWrapper } from './wrapper.js';

/**
 * BlockPress (kvpress; the block-wise prefill of KeyDiff, Park et al., arXiv 2504.15364): simulates
 * a prefill that arrives in blocks of `blockSize` under a fixed budget n_kept =
 * max(1, floor(T(1 − ratio))). Start with the first n_kept tokens; for each following block, score
 * kept ∪ block with the inner press and keep the top n_kept. One real forward pass, as in kvpress.
 * Where kvpress reshapes the hidden states per head to fit the inner press, each KV head is scored
 * here on a context of exactly its own tokens (heads that hold the same tokens share one call);
 * an inner press whose head scores depend on that head's keys alone (`HeadLocalScorer`, KeyDiff)
 * scores each head's rows in place, without building a sub-cache per block, and computes each
 * key's norm once per head instead of once per block.
 * Each head's keys are read as stored (decoded by `headKeys` into a copy of that one head's keys,
 * never a float32 copy of the cache).
 */
export class BlockPress extends ScorerWrapper {
  readonly blockSize: number;

  constructor(inner: ScorerPress, compressionRatio = inner?.compressionRatio, blockSize = 128) {
    super(inner, 'block', compressionRatio);
    this.blockSize = checkInt(blockSize, 'blockSize');
  }

  override compress(ctx: LayerContext): KeepIndices | null {
    const ratio = this.compressionRatio;
    if (!ctx.isPrefill || ratio === 0) return null;
    const T = requirePrefillCache(ctx, this.name), H = ctx.config.numKvHeads;
    const block = Math.min(this.blockSize, T), nKept = Math.max(1, Math.floor(T * (1 - ratio)));
    let kept: Int32Array[] = Array.from({ length: H }, () => range(0, nKept));
    const inner = this.inner;
    if (isHeadLocal(inner)) {
      const hd = ctx.config.headDim;
      return kept.map((k, g) => {
        const score = inner.headScorer(ctx.backend, ctx.cache.headKeys(g).slice(), hd, T);
        for (let start = nKept; start < T; start += block) {
          const rows = concat(k, range(start, Math.min(T, start + block)));
          k = topK(score(rows), nKept).map((i) => rows[i]);
        }
        return k;
      });
    }
    for (let start = nKept; start < T; start += block) {
      const fresh = range(start, Math.min(T, start + block));
      const next: Int32Array[] = new Array(H);
      // Heads holding the same tokens are scored together.
      const groups = new Map<string, number[]>();
      kept.forEach((k, g) => {
        const key = k.join(',');
        groups.set(key, [...(groups.get(key) ?? []), g]);
      });
      for (const heads of groups.values()) {
        const rows = concat(kept[heads[0]], fresh);
        const scores = this.inner.score(subContext(ctx, rows));
        for (const g of heads) next[g] = topK(scores[g], nKept).map((i) => rows[i]);
      }
      kept = next;
    }
    return kept;
  }
}

/** A scorer whose scores of a KV head depend only on that head's own keys. */
export interface HeadLocalScorer {
  /**
   * For one head's T keys K ([T][headDim]), unchanged while in use: the scores of a subset `rows`
   * (ascending) among themselves, with what does not depend on the subset computed once.
   */
  headScorer(backend: Backend, K: Float32Array, headDim: number, T: number): (rows: Int32Array) => Float64Array;
}

function isHeadLocal(p: ScorerPress): p is ScorerPress & HeadLocalScorer {
  return typeof (p as Partial<HeadLocalScorer>).headScorer === 'function';
}

function concat(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
