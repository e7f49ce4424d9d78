import type { LayerContext } from '../model/layer-context.js';
import { requirePrefillCache } from './common.js';
import { zScore } from './non-causal-attn.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import { mulberry32 } from './random.js';
import type { PressEntry } from './registry.js';
import { linalg64 } from './linalg64.js';
import { cholesky, gram, inverseForm, quadraticForms } from './quadratic-forms.js';
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
 * (kvpress computes the sketch product and the factorisation in float32), in the equivalent
 * order of `leverageScores` below.
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

/**
 * Φ ~ N(0, 1/k) from a seed: independent of call order, one stream per (layer, head). Each draw is
 * kept (d·k doubles per layer and head), so a press reused over many prompts draws it once.
 */
export function gaussianSketch(seed: number): Sketch {
  const drawn = new Map<string, Float64Array>();
  return (layer, head, d, k) => {
    const key = `${layer},${head},${d},${k}`, known = drawn.get(key);
    if (known) return known;
    const next = mulberry32((seed * 1000003 + layer * 7919 + head * 104729) >>> 0), out = new Float64Array(d * k);
    for (let i = 0; i < out.length; i += 2) {
      const u = 1 - next(), v = next(), r = Math.sqrt(-2 * Math.log(u)) / Math.sqrt(k);
      out[i] = r * Math.cos(2 * Math.PI * v);
      if (i + 1 < out.length) out[i + 1] = r * Math.sin(2 * Math.PI * v);
    }
    drawn.set(key, out);
    return out;
  };
}

/**
 * Unnormalised sketched leverage of the pre-RoPE keys of prompt rows [from, to), per KV head.
 * With X = K̃Φ (K̃ the centered keys), XᵀX = Φᵀ(K̃ᵀK̃)Φ and ℓ_j = ‖L⁻¹Φᵀk̃_j‖² = k̃_jᵀWk̃_j for
 * W = Φ(LLᵀ)⁻¹Φᵀ (d×d): one Gram matrix of the keys and one quadratic form per key, both n·d²
 * on the backend's float64 kernels (quadratic-forms.ts), instead of n·d·k + n·k² + n·k²/2 in
 * scalar loops; the gather, the d·k products and the substitution on its float64 helpers
 * (linalg64.ts). The form is taken on the raw float32 keys, with the centering in its linear and
 * constant terms: k̃ᵀWk̃ = kᵀWk − 2(Wμ)·k + μᵀWμ.
 */
export function leverageScores(ctx: LayerContext, from: number, to: number, k: number, sketch: Sketch): Float64Array[] {
  const c = ctx.config, d = c.headDim, Hkv = c.numKvHeads, n = to - from, stride = Hkv * d, la = linalg64(ctx.backend);
  const keys = ctx.preRopeKeys(), K = new Float32Array(n * d), X = new Float64Array(n * d), mean = new Float64Array(d);
  const CP = new Float64Array(d * k), M = new Float64Array(k * k), W = new Float64Array(d * d);
  return Array.from({ length: Hkv }, (_, g) => {
    la.centerRows(K, X, mean, keys.subarray(from * stride + g * d), stride, n, d);
    const C = gram(ctx.backend, X, n, d), phi = sketch(ctx.layer, g, d, k);
    // Φᵀ C Φ, k×k, made exactly symmetric.
    la.gemm(CP, C, phi, d, k, d, false);
    la.gemm(M, phi, CP, k, k, d, true);
    for (let a = 0; a < k; a++) for (let b = a + 1; b < k; b++) M[a * k + b] = M[b * k + a] = (M[a * k + b] + M[b * k + a]) / 2;
    inverseForm(ctx.backend, choleskyWithJitter(M, k, 1e-2, 5), k, phi, d, W);
    const lin = new Float64Array(d);
    let cst = 0;
    for (let i = 0; i < d; i++) {
      let wm = 0;
      for (let j = 0; j < d; j++) wm += W[i * d + j] * mean[j];
      lin[i] = -2 * wm;
      cst += mean[i] * wm;
    }
    const l = quadraticForms(ctx.backend, K, 0, n, d, W, lin, 1);
    for (let r = 0; r < n; r++) l[r] = Math.max(0, l[r] + cst);
    return l;
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

export const leverageScoreEntry: PressEntry = {
  name: 'leverage_score',
  description: 'LeverageScore: sketched statistical leverage of the pre-RoPE keys, keeps geometric outliers (arXiv 2507.08143; prefill only)',
  options: leverageScoreOptions,
  create: (r, o) => new LeverageScorePress(r, o as OptionsOf<typeof leverageScoreOptions>),
};
