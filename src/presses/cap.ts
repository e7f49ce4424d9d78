import type { Linalg64 } from '../backend/linalg64.js';
import type { LayerContext } from '../model/layer-context.js';
import { weightRow } from '../model/weights.js';
import { globalMax, groupMean } from './common.js';
import { averagedRope, rotateVector } from './expected-attention.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import type { PressEntry } from './registry.js';
import { cholesky, gram, inverseForm, quadraticForms } from './quadratic-forms.js';
import { linalg64 } from './linalg64.js';
import { ScorerPress } from './scorer.js';

export const capOptions = defineOptions({
  tau: { type: 'number', default: 5, min: 0, description: 'temperature of the query–key alignment weights' },
  nFuturePositions: { type: 'integer', default: 512, min: 1, description: 'future positions the query anchor\'s RoPE rotation is averaged over' },
  nSink: { type: 'integer', default: 4, min: 0, description: 'first tokens always kept and left out of the anchor' },
  epsilon: { type: 'number', default: 1e-6, min: 0, description: 'added to the weights inside the capacity matrix' },
});

/**
 * Cap (CAPKV, arXiv 2604.25975; kvpress `CapPress`): a historical-query anchor μ̄_h — the mean
 * pre-RoPE query of the non-sink prompt tokens rotated by the RoPE rotation averaged over the next
 * nFuturePositions positions, as Expected Attention — weighs every non-sink entry by
 * w_j = exp(τ(cos(μ̄_h, k_j) − max_j cos)); with the capacity matrix A_h = I + Σ_j (w_j + ε) v_j v_jᵀ,
 * the score is w_j · v_jᵀA_h⁻¹v_j, averaged over the KV group; sinks get max + 1. Float64
 * throughout (kvpress solves the d×d system in float32); A_h and the forms on the backend's
 * float64 kernels (quadratic-forms.ts). Needs more than nSink entries. It reads the cached keys
 * and values as stored, decoded per head into float32 (in a prefill over a float32 cache: the
 * pass's own rows); the anchor comes from the pass's hidden states.
 */
export class CapPress extends ScorerPress {
  readonly name: string = 'cap';
  readonly options: OptionsOf<typeof capOptions>;

  constructor(compressionRatio = 0, options: Partial<OptionsOf<typeof capOptions>> = {}) {
    super(compressionRatio);
    this.options = resolveOptions(capOptions, options, 'CapPress');
  }

  score(ctx: LayerContext): Float64Array[] {
    const c = ctx.config, d = c.headDim, H = c.numHeads, G = H / c.numKvHeads, o = this.options, S = o.nSink, la = linalg64(ctx.backend);
    for (const T of ctx.cache.lengths) if (T <= S) throw new RangeError(`${this.name}: the cache length (${T}) must be larger than nSink = ${S}`);
    if (ctx.rows <= S) throw new RangeError(`${this.name}: needs more than nSink = ${S} tokens for the query anchor, got ${ctx.rows}`);
    const mq = meanPreRopeQuery(ctx, S), rbar = averagedRope(ctx.rope.invFreq, ctx.rows, o.nFuturePositions);
    let longest = 0;
    for (const T of ctx.cache.lengths) longest = Math.max(longest, T - S);
    const X = new Float64Array(longest * d), a = new Float64Array(longest), inv = new Float64Array(G * d * d), I = new Float64Array(d * d);
    for (let i = 0; i < d; i++) I[i * d + i] = 1;
    const perHead: Float64Array[] = [];
    for (let g = 0; g < c.numKvHeads; g++) {
      const n = ctx.cache.lengths[g] - S, K = ctx.cache.headKeys(g).subarray(S * d), V = ctx.cache.headValues(g);
      const w = anchorWeights(la, mq, g * G, G, d, K, n, rbar, o.tau);
      // A_h = I + Σ_j (w_j + ε) v_j v_jᵀ as the Gram matrix of the rows √(w_j + ε)·v_j, and
      // v_jᵀA_h⁻¹v_j as one quadratic form per entry (quadratic-forms.ts): A_h⁻¹ = L⁻ᵀL⁻¹.
      for (let j = 0; j < G; j++) {
        for (let t = 0; t < n; t++) a[t] = Math.sqrt(w[j * n + t] + o.epsilon);
        la.scaleRows(X, V.subarray(S * d), d, n, d, a);
        const A = gram(ctx.backend, X, n, d);
        for (let i = 0; i < d; i++) A[i * d + i] += 1;
        const L = cholesky(A, d);
        if (!L) throw new Error(`${this.name}: the capacity matrix of layer ${ctx.layer}, head ${g * G + j} is not positive definite (non-finite values in the cache)`);
        inverseForm(ctx.backend, L, d, I, d, inv.subarray(j * d * d, (j + 1) * d * d));
      }
      const lev = quadraticForms(ctx.backend, V, S, n, d, inv, new Float64Array(G * d), G);
      for (let j = 0; j < G; j++) {
        const s = new Float64Array(n);
        for (let t = 0; t < n; t++) s[t] = w[j * n + t] * lev[j * n + t];
        perHead.push(s);
      }
    }
    const scores = groupMean(perHead, c.numKvHeads), pad = globalMax(scores) + 1;
    return scores.map((s) => {
      const out = new Float64Array(S + s.length).fill(pad);
      out.set(s, S);
      return out;
    });
  }
}

/**
 * The mean pre-RoPE query of rows [from, rows), [numHeads·headDim]. Without a q-norm the query is
 * affine in the hidden state, so the mean is W_q·(mean hidden) + b: one matrix-vector product in
 * float64 instead of the rows × hidden × numHeads·headDim float32 projection of every row.
 */
function meanPreRopeQuery(ctx: LayerContext, from: number): Float64Array {
  const c = ctx.config, w = ctx.weights, D = c.hiddenSize, qDim = c.numHeads * c.headDim, n = ctx.rows - from;
  const out = new Float64Array(qDim);
  if (w.qNorm) {
    const q = ctx.preRopeQueries();
    for (let r = from; r < ctx.rows; r++) for (let i = 0, o = r * qDim; i < qDim; i++) out[i] += q[o + i];
    for (let i = 0; i < qDim; i++) out[i] /= n;
    return out;
  }
  const x = ctx.hidden, mx = new Float64Array(D), row = new Float32Array(D);
  for (let r = from; r < ctx.rows; r++) for (let j = 0, o = r * D; j < D; j++) mx[j] += x[o + j];
  for (let j = 0; j < D; j++) mx[j] /= n;
  for (let i = 0; i < qDim; i++) {
    weightRow(w.wq, D, i, 0, D, row);
    let s = w.bq ? w.bq[i] : 0;
    for (let j = 0; j < D; j++) s += row[j] * mx[j];
    out[i] = s;
  }
  return out;
}

/**
 * w[j·n + t] = exp(τ(cos(μ̄_h, k_t) − max_t cos)) of the n non-sink keys K of the G query heads
 * h = h0 + j: μ̄_h the mean pre-RoPE query (mq) rotated by the averaged RoPE `rbar`.
 */
function anchorWeights(la: Linalg64, mq: Float64Array, h0: number, G: number, d: number, K: Float32Array, n: number, rbar: { cos: Float64Array; sin: Float64Array }, tau: number): Float64Array {
  const anchors = new Float64Array(G * d), an = new Float64Array(G);
  for (let j = 0; j < G; j++) {
    const v = rotateVector(mq.subarray((h0 + j) * d, (h0 + j + 1) * d), rbar, anchors.subarray(j * d, (j + 1) * d));
    an[j] = Math.max(Math.hypot(...v), 1e-12);
  }
  const dots = new Float64Array((G + 1) * n), w = new Float64Array(G * n);
  la.rowDots(dots, K, d, n, d, anchors, G, null, true);
  for (let j = 0; j < G; j++) {
    let max = -Infinity;
    for (let t = 0; t < n; t++) {
      const cos = Math.min(1, Math.max(-1, dots[j * n + t] / (an[j] * Math.max(Math.sqrt(dots[G * n + t]), 1e-12))));
      w[j * n + t] = cos;
      if (tau * cos > max) max = tau * cos;
    }
    for (let t = 0; t < n; t++) w[j * n + t] = Math.exp(tau * w[j * n + t] - max);
  }
  return w;
}

export const capEntry: PressEntry = {
  name: 'cap',
  description: 'Cap (CAPKV): historical-query anchor weights × value leverage under a capacity matrix (arXiv 2604.25975)',
  options: capOptions,
  create: (r, o) => new CapPress(r, o as OptionsOf<typeof capOptions>),
};
