import type { LayerContext } from '../model/layer-context.js';
import {
  addQuadraticGemm, averagedRope, logAddExp, logits, logSumExp, queryMoments, rotateCovariance, rotateVector, upperTriangle,
  type QueryMoments,
} from './expected-attention-kernels.js';
import { scratch } from './linalg64.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import { ScorerPress } from './scorer.js';

export { averagedRope, centeredGram, logAddExp, logits, queryMoments, rotateCovariance, rotateVector, type QueryMoments } from './expected-attention-kernels.js';

/**
 * Expected Attention's options (spec §2.1, the library's defaults), declared once: the option
 * types, their validation, the registry entries and `kvpress presses` derive from it.
 *
 * `positions` — where the future queries are assumed to sit outside a plain prefill (spec §2.7):
 * - `compat`: as the Python library — the averaged RoPE covers positions [rows, rows + n) with
 *   `rows` the number of hidden states scored (the buffer length in decoding, e.g. 256…767), and
 *   the first `nSink` rows and cache slots are treated as sinks whatever their positions.
 * - `absolute`: the true next positions [last position + 1, … + n), statistics from every row
 *   whose position is ≥ nSink, and only entries at positions < nSink protected as sinks.
 * In a prefill from position 0 both modes are identical.
 *
 * `precision` — how the two O(T·d²) products, the query covariance and the keys' quadratic form
 * kᵀΣ̄k, are evaluated:
 * - `float64`: float64 sums (exact to rounding; the reference): the backend's float64 kernels
 *   (`gram64`, `eaLogits64`) where it has them, else plain TypeScript loops.
 * - `mixed`: the backend's float32 GEMM on blocks of 64 tokens (covariance) or on the float32
 *   keys (quadratic form), each product then reduced in float64. Every float32 dot product has
 *   at most d or 64 terms, so the logits stay within ~1e-6 relative of float64 — the precision
 *   of the float32 keys themselves. Softmax, group mean and value norms stay in float64 log
 *   space either way.
 */
export const eaOptions = defineOptions({
  nFuturePositions: { type: 'integer', default: 512, min: 1, description: 'future positions the RoPE rotation is averaged over' },
  nSink: { type: 'integer', default: 4, min: 0, description: 'leading tokens left out of the statistics and always kept' },
  useCovariance: { type: 'boolean', default: true, description: 'include the covariance term kᵀΣ̄k/(2d)' },
  useVnorm: { type: 'boolean', default: true, description: 'weight probabilities by the value norm, (p + epsilon)·‖v‖' },
  epsilon: { type: 'number', default: 0, min: 0, description: 'added to the probabilities before the value-norm weighting' },
  positions: { type: 'string', default: 'compat', values: ['compat', 'absolute'], description: 'future positions in decoding: compat = as the Python library, absolute = the true next positions' },
  precision: { type: 'string', default: 'float64', values: ['float64', 'mixed'], description: 'covariance and kᵀΣ̄k: float64 loops, or float32 GEMM blocks reduced in float64 (faster)' },
});

/** The EA parameters, every one present and validated. */
export type EaParams = OptionsOf<typeof eaOptions>;
export type ExpectedAttentionOptions = Partial<EaParams>;
export type EaPositions = EaParams['positions'];
export type EaPrecision = EaParams['precision'];

export function eaParams(opts: ExpectedAttentionOptions = {}): EaParams {
  return resolveOptions(eaOptions, opts, 'ExpectedAttentionPress');
}

/**
 * Expected Attention (Devoto et al., arXiv 2510.00636; kvpress `ExpectedAttentionPress`, spec §2).
 *
 * Future pre-RoPE queries are modelled as Gaussian N(μ, Σ) per query head, estimated from this
 * pass's queries minus the first nSink. With R̄ the mean RoPE rotation over the next
 * nFuturePositions positions, μ̄ = R̄μ and Σ̄ = R̄ΣR̄ᵀ, every cached post-RoPE key k gets the
 * log expected attention logit z = μ̄·k/√d + kᵀΣ̄k/(2d); z is softmaxed over the non-sink keys of
 * each query head, probabilities are averaged over each GQA group, weighted as (p + ε)·‖v‖₂, and
 * the sinks get the global max + 1. Every parameter and default is the library's.
 *
 * Deliberate deviations, none of which changes the ranking the formulas define:
 * - Scores are natural logs computed in float64 (`logScores`): log p by a log-sum-exp softmax,
 *   group mean by log-mean-exp, log(p + ε) stably, + log‖v‖; sinks get log(e^max + 1), the log
 *   of the library's max + 1. Probabilities span hundreds of orders of magnitude (1e-237 occurs
 *   on stories260K), so float32 — and even float64 without logs, on long contexts — underflows to
 *   ties that top-k then breaks arbitrarily (spec §2.3, numerics).
 * - μ and Σ (population covariance, as the library) are accumulated in float64 from the
 *   pre-RoPE queries, which are recovered by rotating this pass's post-RoPE queries back (exact
 *   up to float32 rounding, q-norm and bias included) instead of projecting the hidden states
 *   through W_q a second time, which would cost as much as the layer's own q projection.
 * - R̄ is never built as a d×d matrix: its per-frequency 2×2 blocks come from the closed-form mean
 *   of cos/sin over the future positions (spec §2.4), in float64, and Σ̄ = R̄ΣR̄ᵀ is formed with
 *   the same block operator in O(d²) per head. The library averages model-dtype cos/sin.
 * - Decoding: `positions` offers the library's behaviour ('compat', default) and the true next
 *   positions ('absolute').
 * - Heads may hold different numbers of entries (after a head-adaptive press evicted for real);
 *   each KV head is scored over its own entries.
 *
 * μ and Σ come from the pass's own float32 queries; the keys and values scored are the cached
 * entries as stored, decoded one KV head at a time by `headKeys`/`headValues` (with an f16 or q8_0
 * cache, the rounded keys and values the attention reads), never a float32 copy of the cache.
 * - `precision: 'mixed'` (opt-in) runs the two O(T·d²) products on the backend's float32 GEMM in
 *   small blocks reduced in float64.
 * - From ScorerPress: kept indices ascending, ties to the lower position.
 */
export class ExpectedAttentionPress extends ScorerPress {
  readonly name: string = 'expected_attention';
  override readonly logScores = true;
  readonly params: EaParams;

  constructor(compressionRatio = 0, options: ExpectedAttentionOptions = {}) {
    super(compressionRatio);
    this.params = eaParams(options);
  }

  get nFuturePositions(): number { return this.params.nFuturePositions; }
  get nSink(): number { return this.params.nSink; }
  get useCovariance(): boolean { return this.params.useCovariance; }
  get useVnorm(): boolean { return this.params.useVnorm; }
  get epsilon(): number { return this.params.epsilon; }
  get positions(): EaPositions { return this.params.positions; }

  score(ctx: LayerContext): Float64Array[] {
    const start = statisticsStart(ctx, this.params);
    if (ctx.rows - start < 1) {
      throw new Error(`${this.name} needs more than nSink = ${this.params.nSink} tokens to estimate query statistics, got ${ctx.rows}`);
    }
    const rows = scratch('ea.rows', Float64Array, (ctx.rows - start) * ctx.config.headDim);
    const moments = queryMoments(ctx, start, this.params.useCovariance, rows, this.params.precision);
    return expectedAttentionScores(ctx, moments, this.params);
  }
}

/** First row of `ctx` whose query enters the statistics. */
export function statisticsStart(ctx: LayerContext, p: EaParams): number {
  if (p.positions === 'compat') return p.nSink;
  let r = 0;
  while (r < ctx.rows && ctx.positions[r] < p.nSink) r++;
  return r;
}

/** First position of the averaged future window. */
export function futureStart(ctx: LayerContext, p: EaParams): number {
  return p.positions === 'compat' ? ctx.rows : ctx.positions[ctx.rows - 1] + 1;
}

/** Number of leading entries of a KV head that are sinks (see EaPositions). */
function sinkCount(cache: LayerContext['cache'], g: number, p: EaParams): number {
  const length = cache.lengths[g];
  if (p.positions === 'compat') return Math.min(p.nSink, length);
  let s = 0;
  while (s < length && cache.position(g, s) < p.nSink) s++;
  return s;
}

/**
 * EA log-scores [kvHeads][entries] of the layer's cache from pre-RoPE query moments (not
 * modified): rotate by R̄ over the future window, score every non-sink key, log-softmax per query
 * head, log-mean-exp per group, value-norm weighting, sinks at log(e^max + 1).
 */
export function expectedAttentionScores(ctx: LayerContext, moments: QueryMoments, p: EaParams): Float64Array[] {
  const c = ctx.config, d = c.headDim, H = c.numHeads, Hkv = c.numKvHeads, G = H / Hkv;
  const rbar = averagedRope(ctx.rope.invFreq, futureStart(ctx, p), p.nFuturePositions);
  const invSqrtD = 1 / Math.sqrt(d);
  const cache = ctx.cache;

  const scores: Float64Array[] = [];
  const sinks: number[] = [];
  let globalMax = -Infinity;
  for (let g = 0; g < Hkv; g++) {
    const T = cache.lengths[g], s0 = sinkCount(cache, g, p), m = T - s0;
    // Per head of the group: μ̄/√d, and Σ̄/(2d) as an upper triangle with doubled off-diagonals.
    const mus = new Float64Array(G * d);
    const quad = p.useCovariance ? new Float64Array(G * d * d) : null;
    for (let k = 0; k < G; k++) {
      const h = g * G + k;
      const mu = rotateVector(moments.mean[h], rbar);
      for (let i = 0; i < d; i++) mus[k * d + i] = mu[i] * invSqrtD;
      if (quad && moments.cov) upperTriangle(rotateCovariance(moments.cov[h], rbar), d, 1 / (2 * d), quad, k * d * d);
    }
    // z[k·stride + t]: head k's logit of key s0 + t; rows padded to whole blocks of eight keys.
    const stride = Math.ceil(m / 8) * 8;
    const z = new Float64Array(G * stride);
    const be = ctx.backend;
    const linear = (q: Float64Array | null): void => {
      if (!be.eaLogits64) return logits(cache.headKeys(g), s0, m, d, G, mus, q, z, stride);
      // Float32 pages are read where they lie, a page at a time (each key's logit is computed
      // alone, so the bits are those of one call over a copy of the head's keys).
      const pages = cache.f32Pages(g, 'keys'), E = cache.pageEntries;
      if (!pages) return be.eaLogits64(z, cache.headKeys(g), s0, m, d, G, mus, q, stride);
      for (let p = Math.floor(s0 / E); p < pages.length; p++) {
        const lo = Math.max(s0, p * E), hi = Math.min(T, (p + 1) * E);
        be.eaLogits64(z.subarray(lo - s0), pages[p], lo - p * E, hi - lo, d, G, mus, q, stride);
      }
    };
    if (quad && p.precision === 'mixed') {
      linear(null);
      addQuadraticGemm(be, cache.headKeys(g), s0, m, d, G, quad, z, stride);
    } else {
      linear(quad);
    }

    const out = new Float64Array(T);
    if (be.eaScores64) {
      const values = cache.f32Pages(g, 'values') ?? cache.headValues(g);
      globalMax = Math.max(globalMax, be.eaScores64(out, z, stride, s0, m, G, values, d, p.useVnorm, p.epsilon));
    } else {
      globalMax = Math.max(globalMax, logScores(out, z, stride, s0, m, G, cache.headValues(g), d, p));
    }
    scores.push(out);
    sinks.push(s0);
  }
  // The library pads the sinks with max + 1 over the whole tensor; log(e^max + 1) here.
  const sinkScore = logAddExp(globalMax, 0);
  for (let g = 0; g < Hkv; g++) scores[g].fill(sinkScore, 0, sinks[g]);
  return scores;
}


/**
 * out[s0 + t] for the m non-sink keys of one KV head from their logits z [G][stride]: log-softmax
 * per query head, log of the group's mean probability, log(p + ε) + log‖v‖₂ with the value norms.
 * Returns the largest score. The reference for backends' eaScores64, and the loop where they have none.
 */
export function logScores(out: Float64Array, z: Float64Array, stride: number, s0: number, m: number, G: number, V: Float32Array, d: number, p: EaParams): number {
  const logG = Math.log(G), logEps = Math.log(p.epsilon);
  const lse = new Float64Array(G);
  for (let k = 0; k < G; k++) lse[k] = logSumExp(z, k * stride, m);
  let best = -Infinity;
  for (let t = 0; t < m; t++) {
    // log of the mean over the group of p_h = exp(z_h − lse_h).
    let mx = -Infinity;
    for (let k = 0; k < G; k++) mx = Math.max(mx, z[k * stride + t] - lse[k]);
    let sum = 0;
    for (let k = 0; k < G; k++) sum += Math.exp(z[k * stride + t] - lse[k] - mx);
    let s = mx + Math.log(sum) - logG;
    if (p.useVnorm) {
      if (p.epsilon > 0) s = logAddExp(s, logEps);
      const vo = (s0 + t) * d;
      let vv = 0;
      for (let i = 0; i < d; i++) vv += V[vo + i] * V[vo + i];
      s += 0.5 * Math.log(vv);
    }
    out[s0 + t] = s;
    if (s > best) best = s;
  }
  return best;
}
