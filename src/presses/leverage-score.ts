import type { LayerContext } from '../model/layer-context.js';
import { requirePrefillCache } from './common.js';
import { zScore } from './non-causal-attn.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import { mulberry32 } from './random.js';
import type { PressEntry } from './registry.js';
import { ScorerPress } from './scorer.js';

export const leverageScoreOptions = defineOptions({
  sketchDimension: { type: 'integer', default: 48, min: 1, description: 'columns of the Gaussian sketch' },
  seed: { type: 'integer', default: 0, min: 0, description: 'seed of the Gaussian sketch (one draw per layer and KV head)' },
});

/** The d×k sketch of one (layer, KV head), row-major, already × 1/√k. */
export type Sketch = (layer: number, kvHead: number, d: number, k: number) => Float64Array;

/**
 * LeverageScore (Chari & Van Durme, arXiv 2507.08143; kvpress `LeverageScorePress`): statistical
 * leverage of each pre-RoPE key among the prompt's keys, approximated with a right Gaussian sketch:
 * X = (K − mean K)·Φ, Φ ~ N(0, 1/k) of shape d×k, ℓ_j = x_jᵀ(XᵀX + λI)⁻¹x_j ≥ 0 through a Cholesky
 * factor with jitter λ = 1e-2 (×10 until it factors, 5 tries), z-scored over every head and token.
 * Keeps geometric outliers; prefill only.
 *
 * Deviations: kvpress draws Φ from torch's global generator on every call; here Φ comes from
 * `seed` (mulberry32 + Box–Muller, one draw per layer and head), so runs are reproducible, or from
 * a caller's `sketch` (the golden tests pass the library's stored draws). Float64 throughout
 * (kvpress computes the sketch product and the factorisation in float32).
 */
export class LeverageScorePress extends ScorerPress {
  readonly name: string = 'leverage_score';
  readonly options: OptionsOf<typeof leverageScoreOptions>;
  readonly sketch: Sketch;

  constructor(compressionRatio = 0, options: Partial<OptionsOf<typeof leverageScoreOptions>> = {}, sketch?: Sketch) {
    super(compressionRatio);
    this.options = resolveOptions(leverageScoreOptions, options, 'LeverageScorePress');
    this.sketch = sketch ?? gaussianSketch(this.options.seed);
  }

  score(ctx: LayerContext): Float64Array[] {
    const T = requirePrefillCache(ctx, this.name);
    return zScore(leverageScores(ctx, 0, T, this.options.sketchDimension, this.sketch));
  }
}

/** Φ ~ N(0, 1/k) from a seed: independent of call order, one stream per (layer, head). */
export function gaussianSketch(seed: number): Sketch {
  return (layer, head, d, k) => {
    const next = mulberry32((seed * 1000003 + layer * 7919 + head * 104729) >>> 0), out = new Float64Array(d * k);
    for (let i = 0; i < out.length; i += 2) {
      const u = 1 - next(), v = next(), r = Math.sqrt(-2 * Math.log(u)) / Math.sqrt(k);
      out[i] = r * Math.cos(2 * Math.PI * v);
      if (i + 1 < out.length) out[i + 1] = r * Math.sin(2 * Math.PI * v);
    }
    return out;
  };
}

/** Unnormalised sketched leverage of the pre-RoPE keys of prompt rows [from, to), per KV head. */
export function leverageScores(ctx: LayerContext, from: number, to: number, k: number, sketch: Sketch): Float64Array[] {
  const c = ctx.config, d = c.headDim, Hkv = c.numKvHeads, n = to - from, stride = Hkv * d;
  const keys = ctx.preRopeKeys();
  return Array.from({ length: Hkv }, (_, g) => {
    const phi = sketch(ctx.layer, g, d, k);
    const mean = new Float64Array(d);
    for (let r = from; r < to; r++) for (let j = 0; j < d; j++) mean[j] += keys[r * stride + g * d + j] / n;
    const X = new Float64Array(n * k);
    for (let r = 0; r < n; r++) {
      for (let j = 0; j < d; j++) {
        const x = keys[(from + r) * stride + g * d + j] - mean[j];
        for (let m = 0; m < k; m++) X[r * k + m] += x * phi[j * k + m];
      }
    }
    const Gm = new Float64Array(k * k);
    for (let r = 0; r < n; r++) for (let a = 0; a < k; a++) for (let b = 0; b < k; b++) Gm[a * k + b] += X[r * k + a] * X[r * k + b];
    const L = choleskyWithJitter(Gm, k, 1e-2, 5);
    const out = new Float64Array(n), y = new Float64Array(k);
    for (let r = 0; r < n; r++) {
      // ℓ = xᵀG⁻¹x = ‖L⁻¹x‖² by forward substitution.
      let l = 0;
      for (let a = 0; a < k; a++) {
        let s = X[r * k + a];
        for (let b = 0; b < a; b++) s -= L[a * k + b] * y[b];
        y[a] = s / L[a * k + a];
        l += y[a] * y[a];
      }
      out[r] = Math.max(0, l);
    }
    return out;
  });
}

/** Lower Cholesky factor of G + λI, λ from `jitter` growing ×10 until G + λI is positive definite. */
export function choleskyWithJitter(G: Float64Array, k: number, jitter: number, tries: number): Float64Array {
  let lambda = jitter;
  for (let i = 0; i < tries; i++) {
    const L = cholesky(G, k, lambda);
    if (L) return L;
    lambda = Math.max(1e-8, lambda === 0 ? 1e-2 : 10 * lambda);
  }
  throw new Error(`Cholesky factorisation failed after ${tries} tries (jitter up to ${lambda / 10})`);
}

function cholesky(G: Float64Array, k: number, lambda: number): Float64Array | null {
  const L = new Float64Array(k * k);
  for (let i = 0; i < k; i++) {
    for (let j = 0; j <= i; j++) {
      let s = G[i * k + j] + (i === j ? lambda : 0);
      for (let m = 0; m < j; m++) s -= L[i * k + m] * L[j * k + m];
      if (i === j) {
        if (!(s > 0)) return null;
        L[i * k + i] = Math.sqrt(s);
      } else {
        L[i * k + j] = s / L[j * k + j];
      }
    }
  }
  return L;
}

export const leverageScoreEntry: PressEntry = {
  name: 'leverage_score',
  description: 'LeverageScore: sketched statistical leverage of the pre-RoPE keys, keeps geometric outliers (arXiv 2507.08143; prefill only)',
  options: leverageScoreOptions,
  create: (r, o) => new LeverageScorePress(r, o as OptionsOf<typeof leverageScoreOptions>),
};
