import type { LayerContext } from '../model/layer-context.js';
import { keptCount } from './common.js';
import type { KeepIndices } from './press.js';
import { topK, type ScorerPress } from './scorer.js';
import { ScorerWrapper } from './wrapper.js';

/**
 * KeyRerotation (kvpress's KeyRerotationPress, the re-rotation of SinkCache and of FINCH,
 * Corallo & Papotti, TACL 2024): after the inner press's top-k, the kept keys are re-rotated to
 * contiguous positions 0 … n_kept − 1 (RoPE rotation by (new − old)·θ_i with the model's inverse
 * frequencies), their stored positions renumbered, and after the last layer the cache's next
 * position set to n_kept, so the next tokens continue right after the compressed context.
 * Keeps max(1, floor(T(1 − ratio))) entries per head, like kvpress.
 * A kept key is read as stored (`headKeys`, one KV head at a time), rotated (angles in float64)
 * and written back with setEntry, which encodes it in the cache's element type again (one more
 * rounding with f16, bf16, q8_0 or q4_0).
 */
export class KeyRerotationPress extends ScorerWrapper {
  constructor(inner: ScorerPress, compressionRatio = inner?.compressionRatio) {
    super(inner, 'key_rerotation', compressionRatio);
  }

  protected override select(ctx: LayerContext, scores: Float64Array[], ratio: number): KeepIndices {
    const keep = scores.map((s) => topK(s, Math.max(1, keptCount(s.length, ratio))));
    // Rotate the chosen entries in the cache (copy-on-write until the pass ends); the forward pass then keeps them.
    keep.forEach((idx, g) => rerotate(ctx, g, idx));
    if (ctx.layer === ctx.config.numLayers - 1) ctx.kvCache.nextPosition = Math.max(...keep.map((k) => k.length));
    return keep;
  }
}

/**
 * Moves entry idx[i] of KV head g from its stored position p to position i: RoPE is a rotation by
 * p·θ_j in each (j, j + d/2) plane, so rotating by (i − p)·θ_j lands on i·θ_j. Angles in float64.
 */
export function rerotate(ctx: LayerContext, g: number, idx: Int32Array): void {
  const hd = ctx.config.headDim, half = hd / 2, inv = ctx.rope.invFreq, cache = ctx.cache;
  const K = cache.headKeys(g), P = cache.headPositions(g).slice(), key = new Float32Array(hd);
  for (let i = 0; i < idx.length; i++) {
    const t = idx[i], delta = i - P[t], o = t * hd;
    if (delta === 0) continue;
    for (let j = 0; j < half; j++) {
      const a = delta * inv[j], c = Math.cos(a), s = Math.sin(a);
      const x = K[o + j], y = K[o + j + half];
      key[j] = x * c - y * s;
      key[j + half] = y * c + x * s;
    }
    cache.setEntry(g, t, key, i);
  }
}
