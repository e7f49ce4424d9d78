import type { LayerContext } from '../model/layer-context.js';
import { globalMax, groupMean } from './common.js';
import { averagedRope, rotateVector } from './expected-attention.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import type { PressEntry } from './registry.js';
import { cholesky, gram, inverseForm, quadraticForms } from './quadratic-forms.js';
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
 * float64 kernels (quadratic-forms.ts). Needs more than nSink entries.
 */
export class CapPress extends ScorerPress {
  readonly name: string = 'cap';
  readonly options: OptionsOf<typeof capOptions>;

  constructor(compressionRatio = 0, options: Partial<OptionsOf<typeof capOptions>> = {}) {
    super(compressionRatio);
    this.options = resolveOptions(capOptions, options, 'CapPress');
  }

  score(ctx: LayerContext): Float64Array[] {
    const c = ctx.config, d = c.headDim, H = c.numHeads, G = H / c.numKvHeads, o = this.options, S = o.nSink;
    for (const T of ctx.cache.lengths) if (T <= S) throw new RangeError(`${this.name}: the cache length (${T}) must be larger than nSink = ${S}`);
    if (ctx.rows <= S) throw new RangeError(`${this.name}: needs more than nSink = ${S} tokens for the query anchor, got ${ctx.rows}`);
    const q = ctx.preRopeQueries(), rbar = averagedRope(ctx.rope.invFreq, ctx.rows, o.nFuturePositions);
    const perHead: Float64Array[] = [];
    for (let g = 0; g < c.numKvHeads; g++) {
      const K = ctx.cache.headKeys(g), n = ctx.cache.lengths[g] - S;
      const w = Array.from({ length: G }, (_, j) => anchorWeights(q, ctx.rows, H, g * G + j, d, S, K, n, rbar, o.tau));
      // A_h = I + Σ_j (w_j + ε) v_j v_jᵀ as the Gram matrix of the rows √(w_j + ε)·v_j, and
      // v_jᵀA_h⁻¹v_j as one quadratic form per entry (quadratic-forms.ts): A_h⁻¹ = L⁻ᵀL⁻¹.
      const V = ctx.cache.headValues(g), X = new Float64Array(n * d), inv = new Float64Array(G * d * d), I = new Float64Array(d * d);
      for (let i = 0; i < d; i++) I[i * d + i] = 1;
      for (let j = 0; j < G; j++) {
        for (let t = 0; t < n; t++) {
          const a = Math.sqrt(w[j][t] + o.epsilon);
          for (let i = 0, vo = (S + t) * d; i < d; i++) X[t * d + i] = a * V[vo + i];
        }
        const A = gram(ctx.backend, X, n, d);
        for (let i = 0; i < d; i++) A[i * d + i] += 1;
        const L = cholesky(A, d);
        if (!L) throw new Error(`${this.name}: the capacity matrix of layer ${ctx.layer}, head ${g * G + j} is not positive definite (non-finite values in the cache)`);
        inv.set(inverseForm(L, d, I, d), j * d * d);
      }
      const lev = quadraticForms(ctx.backend, V, S, n, d, inv, new Float64Array(G * d), G);
      for (let j = 0; j < G; j++) perHead.push(w[j].map((x, t) => x * lev[j * n + t]));
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
 * w_j = exp(τ(cos(μ̄_h, k_j) − max_j cos)) of the n non-sink entries of query head h: μ̄_h the
 * mean pre-RoPE query of the non-sink rows rotated by the averaged RoPE `rbar`.
 */
function anchorWeights(q: Float32Array, rows: number, H: number, h: number, d: number, S: number, K: Float32Array, n: number, rbar: { cos: Float64Array; sin: Float64Array }, tau: number): Float64Array {
  const mean = new Float64Array(d);
  for (let r = S; r < rows; r++) for (let j = 0; j < d; j++) mean[j] += q[r * H * d + h * d + j] / (rows - S);
  const anchor = rotateVector(mean, rbar);
  const an = Math.hypot(...anchor);
  const stat = new Float64Array(n);
  let max = -Infinity;
  for (let t = 0; t < n; t++) {
    let dot = 0, kk = 0;
    for (let j = 0; j < d; j++) { const x = K[(S + t) * d + j]; dot += anchor[j] * x; kk += x * x; }
    stat[t] = Math.min(1, Math.max(-1, dot / (Math.max(an, 1e-12) * Math.max(Math.sqrt(kk), 1e-12))));
    if (tau * stat[t] > max) max = tau * stat[t];
  }
  return stat.map((x) => Math.exp(tau * x - max));
}

export const capEntry: PressEntry = {
  name: 'cap',
  description: 'Cap (CAPKV): historical-query anchor weights × value leverage under a capacity matrix (arXiv 2604.25975)',
  options: capOptions,
  create: (r, o) => new CapPress(r, o as OptionsOf<typeof capOptions>),
};
