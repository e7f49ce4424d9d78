import type { LayerContext } from '../model/layer-context.js';
import { globalMax, groupMean } from './common.js';
import { averagedRope, rotateVector } from './expected-attention.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import type { PressEntry } from './registry.js';
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
 * throughout (kvpress solves the d×d system in float32). Needs more than nSink entries.
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
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / G), K = ctx.cache.headKeys(g), V = ctx.cache.headValues(g), n = ctx.cache.lengths[g] - S;
      const mean = new Float64Array(d);
      for (let r = S; r < ctx.rows; r++) for (let j = 0; j < d; j++) mean[j] += q[r * H * d + h * d + j] / (ctx.rows - S);
      const anchor = rotateVector(mean, rbar);
      const an = Math.hypot(...anchor);
      const stat = new Float64Array(n);
      let max = -Infinity;
      for (let t = 0; t < n; t++) {
        let dot = 0, kk = 0;
        for (let j = 0; j < d; j++) { const x = K[(S + t) * d + j]; dot += anchor[j] * x; kk += x * x; }
        stat[t] = Math.min(1, Math.max(-1, dot / (Math.max(an, 1e-12) * Math.max(Math.sqrt(kk), 1e-12))));
        if (o.tau * stat[t] > max) max = o.tau * stat[t];
      }
      const w = stat.map((x) => Math.exp(o.tau * x - max));
      const A = new Float64Array(d * d);
      for (let j = 0; j < d; j++) A[j * d + j] = 1;
      for (let t = 0; t < n; t++) {
        const a = w[t] + o.epsilon, vo = (S + t) * d;
        for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) A[i * d + j] += a * V[vo + i] * V[vo + j];
      }
      const L = choleskyPD(A, d);
      const s = new Float64Array(n), y = new Float64Array(d);
      for (let t = 0; t < n; t++) {
        let lev = 0;
        for (let i = 0; i < d; i++) {
          let x = V[(S + t) * d + i];
          for (let j = 0; j < i; j++) x -= L[i * d + j] * y[j];
          y[i] = x / L[i * d + i];
          lev += y[i] * y[i];
        }
        s[t] = w[t] * lev;
      }
      perHead.push(s);
    }
    const scores = groupMean(perHead, c.numKvHeads), pad = globalMax(scores) + 1;
    return scores.map((s) => {
      const out = new Float64Array(S + s.length).fill(pad);
      out.set(s, S);
      return out;
    });
  }
}

/** Lower Cholesky factor of a symmetric positive-definite matrix (A = I + Σ a vvᵀ always is). */
function choleskyPD(A: Float64Array, d: number): Float64Array {
  const L = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i * d + j];
      for (let m = 0; m < j; m++) s -= L[i * d + m] * L[j * d + m];
      L[i * d + j] = i === j ? Math.sqrt(s) : s / L[j * d + j];
    }
  }
  return L;
}

export const capEntry: PressEntry = {
  name: 'cap',
  description: 'Cap (CAPKV): historical-query anchor weights × value leverage under a capacity matrix (arXiv 2604.25975)',
  options: capOptions,
  create: (r, o) => new CapPress(r, o as OptionsOf<typeof capOptions>),
};
