import type { LayerContext } from '../model/layer-context.js';
import { pressAttention } from './attention-columns.js';
import { avgPool1d, groupMean, requirePrefillCache } from './common.js';
import { scratch } from './linalg64.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import type { PressEntry } from './registry.js';
import { ScorerPress } from './scorer.js';

export const nonCausalAttnOptions = defineOptions({
  chunkSize: { type: 'integer', default: 256, min: 1, description: 'tokens per chunk of bidirectional attention' },
  maskPadding: { type: 'boolean', default: false, description: 'attend only within the last chunk\'s real tokens (false: as the library, which pads it to chunkSize)' },
});

/**
 * NonCausalAttn (Chari & Van Durme, "Compactor: Calibrated Query-Agnostic KV Cache Compression
 * with Approximate Leverage Scores", arXiv 2507.08143; kvpress `NonCausalAttnPress`): the prompt
 * is cut into chunks of chunkSize tokens and, inside each chunk, every query attends to every key,
 * future ones included. A key's score is the attention mass it receives from its chunk's queries,
 * averaged over the KV group, × ‖v‖, average-pooled (width 3), z-scored over every head and token.
 * As the library (kvpress 0.5.4): logits are q·k without 1/√d, and the last, shorter chunk is
 * padded to chunkSize with zero queries and keys: every real query also gives the padding keys
 * logit ≈ 0 (they are not masked), and every padding query spreads a uniform 1/chunkSize over the
 * chunk, which adds (chunkSize − m)/chunkSize to each of its m real keys. `maskPadding` drops the
 * padding instead (a deliberate, documented deviation, off by default). Prefill only. The keys and
 * values are the cached entries as stored, decoded per head into float32 (over a float32 cache:
 * the pass's own rows); the queries are the pass's float32 post-RoPE queries.
 */
export class NonCausalAttnPress extends ScorerPress {
  readonly name: string = 'non_causal_attn';
  readonly options: OptionsOf<typeof nonCausalAttnOptions>;

  constructor(compressionRatio = 0, options: Partial<OptionsOf<typeof nonCausalAttnOptions>> = {}) {
    super(compressionRatio);
    this.options = resolveOptions(nonCausalAttnOptions, options, 'NonCausalAttnPress');
  }

  score(ctx: LayerContext): Float64Array[] {
    const T = requirePrefillCache(ctx, this.name);
    return zScore(nonCausalScores(ctx, 0, T, this.options.chunkSize, this.options.maskPadding));
  }
}

/**
 * Unnormalised NonCausalAttn scores of the prompt rows [from, to) (chunks start at `from`), per KV
 * head: column sums of the chunk-wise bidirectional softmax, group-averaged, × ‖v‖, pooled.
 */
export function nonCausalScores(ctx: LayerContext, from: number, to: number, chunkSize: number, maskPadding = false): Float64Array[] {
  const c = ctx.config, hd = c.headDim, H = c.numHeads, G = H / c.numKvHeads, qStride = H * hd, n = to - from;
  // Row r sees its chunk [lo, hi) and, as the library, the chunk's padding keys (logit −1e-9,
  // its mask value: not masked).
  const lo = scratch('nca.lo', Int32Array, n), hi = scratch('nca.hi', Int32Array, n), pad = scratch('nca.pad', Int32Array, n);
  const masses = scratch('nca.mass', Float64Array, H * n).fill(0);
  for (let a = 0; a < n; a += chunkSize) {
    const b = Math.min(a + chunkSize, n);
    lo.fill(a, a, b);
    hi.fill(b, a, b);
    pad.fill(maskPadding ? 0 : chunkSize - (b - a), a, b);
  }
  const perHead: Float64Array[] = [];
  for (let g = 0; g < c.numKvHeads; g++) {
    const mass = masses.subarray(g * G * n, (g + 1) * G * n);
    pressAttention(ctx.backend, {
      out: mass, q: ctx.queries.subarray(from * qStride), qStride, heads: Int32Array.from({ length: G }, (_, j) => (g * G + j) * hd),
      keys: ctx.cache.headKeys(g).subarray(from * hd, to * hd), n, headDim: hd, rows: n, lo, hi, pad, padLogit: -1e-9, scale: 1, rowWeight: null, mode: 'sum',
    });
    // Each padding query: all-zero logits, uniform over the chunkSize keys.
    for (let t = 0; t < n; t++) if (pad[t] > 0) for (let j = 0; j < G; j++) mass[j * n + t] += pad[t] / chunkSize;
    for (let j = 0; j < G; j++) perHead.push(mass.subarray(j * n, (j + 1) * n));
  }
  return groupMean(perHead, c.numKvHeads).map((s, g) => {
    const V = ctx.cache.headValues(g);
    for (let t = 0; t < n; t++) {
      let ss = 0;
      for (let d = 0, o = (from + t) * hd; d < hd; d++) ss += V[o + d] * V[o + d];
      s[t] *= Math.sqrt(ss);
    }
    return avgPool1d(s, 3);
  });
}

/** (s − mean)/max(std, 1e-6) over every head and entry together, std unbiased (torch's default). */
export function zScore(scores: Float64Array[]): Float64Array[] {
  let n = 0, sum = 0;
  for (const s of scores) {
    for (let t = 0; t < s.length; t++) sum += s[t];
    n += s.length;
  }
  const mean = sum / n;
  let ss = 0;
  for (const s of scores) for (let t = 0; t < s.length; t++) ss += (s[t] - mean) ** 2;
  const sd = Math.max(n > 1 ? Math.sqrt(ss / (n - 1)) : NaN, 1e-6), std = Number.isNaN(sd) ? 1e-6 : sd;
  return scores.map((s) => {
    const z = new Float64Array(s.length);
    for (let t = 0; t < s.length; t++) z[t] = (s[t] - mean) / std;
    return z;
  });
}

export const nonCausalAttnEntry: PressEntry = {
  name: 'non_causal_attn',
  description: "NonCausalAttn: attention each key receives from its chunk's queries, both directions, × ‖v‖ (arXiv 2507.08143; prefill only)",
  options: nonCausalAttnOptions,
  create: (r, o) => new NonCausalAttnPress(r, o as OptionsOf<typeof nonCausalAttnOptions>),
};
