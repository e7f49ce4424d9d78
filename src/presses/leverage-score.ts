import type { LayerContext } from '../model/layer-context.js';
import type { Rope } from '../model/rope.js';
import { requirePrefillCache } from './common.js';
import { zScore } from './non-causal-attn.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import { mulberry32 } from './random.js';
import type { PressEntry } from './registry.js';
import { linalg64, scratch } from './linalg64.js';
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
 * order of `leverageScores` below. The keys are the pass's pre-RoPE keys: over a float32 cache its
 * own cached rows rotated back, otherwise projected from the hidden states (`preRopeHeadKeys`).
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
  const c = ctx.config, d = c.headDim, Hkv = c.numKvHeads, n = to - from, la = linalg64(ctx.backend);
  const keysOf = preRopeHeadKeys(ctx), X = scratch('leverage.X', Float64Array, n * d), mean = new Float64Array(d);
  let K: Float32Array | null = null;
  const CP = new Float64Array(d * k), M = new Float64Array(k * k), W = new Float64Array(d * d), lin = new Float64Array(d);
  return Array.from({ length: Hkv }, (_, g) => {
    const { keys, stride } = keysOf(g), dense = stride === d;
    // Rows already [n][d] are read in place by the forms; strided ones are gathered into K.
    if (!dense) K ??= new Float32Array(n * d);
    la.centerRows(dense ? null : K, X, mean, keys.subarray(from * stride), stride, n, d);
    const C = gram(ctx.backend, X, n, d), phi = sketch(ctx.layer, g, d, k);
    // Φᵀ C Φ, k×k, made exactly symmetric.
    la.gemm(CP, C, phi, d, k, d, false);
    la.gemm(M, phi, CP, k, k, d, true);
    for (let a = 0; a < k; a++) for (let b = a + 1; b < k; b++) M[a * k + b] = M[b * k + a] = (M[a * k + b] + M[b * k + a]) / 2;
    inverseForm(ctx.backend, choleskyWithJitter(M, k, 1e-2, 5), k, phi, d, W);
    let cst = 0;
    for (let i = 0; i < d; i++) {
      let wm = 0;
      for (let j = 0; j < d; j++) wm += W[i * d + j] * mean[j];
      lin[i] = -2 * wm;
      cst += mean[i] * wm;
    }
    const l = dense ? quadraticForms(ctx.backend, keys, from, n, d, W, lin, 1) : quadraticForms(ctx.backend, K!, 0, n, d, W, lin, 1);
    for (let r = 0; r < n; r++) l[r] = Math.max(0, l[r] + cst);
    return l;
  });
}

/**
 * The pre-RoPE keys of every row of this pass, per KV head: rows of `keys` at `stride`, valid
 * until the next call for another head. In a prefill over a float32 cache (the cache then holds
 * exactly this pass's float32 post-RoPE rows) they are those rows rotated back: RoPE is a
 * rotation by the angles of the pass's own cos/sin tables, so the inverse is the same rotation
 * with −sin (n·d work, ≤ 3 float32 roundings from the projection's keys, where the rotation's
 * cos² + sin² = 1 holds to 2⁻²⁴), instead of the rows × hidden × kvDim projection again (2 % of
 * a 4096-token prefill on the small shape). Elsewhere (a decoding pass, a quantized or
 * channel-pruned cache, whose stored keys are no longer the pass's rows) the keys are projected
 * from the hidden states (LayerContext.preRopeKeys), as kvpress does.
 */
export function preRopeHeadKeys(ctx: LayerContext): (g: number) => { keys: Float32Array; stride: number } {
  const c = ctx.config, d = c.headDim, Hkv = c.numKvHeads, n = ctx.rows, cache = ctx.cache;
  const fromCache = ctx.isPrefill && cache.dtype === 'f32' && d % 2 === 0
    && Array.from(cache.lengths.subarray(0, Hkv)).every((len, g) => len === n && cache.keyChannels[g] === null);
  if (!fromCache) {
    const keys = ctx.preRopeKeys();
    return (g) => ({ keys: keys.subarray(g * d), stride: Hkv * d });
  }
  const { cos, sin } = inverseRopeTables(ctx.rope, ctx.positions, n);
  return (g) => {
    const keys = cache.headKeys(g);
    ctx.backend.rope(keys, n, 1, d, cos, sin);
    return { keys, stride: d };
  };
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

/** The last inverse tables of each RoPE (every layer of a pass has the same positions). */
const inverseTables = new WeakMap<Rope, { positions: Int32Array; cos: Float32Array; sin: Float32Array }>();

/**
 * cos and −sin [n][headDim/2] of `positions` as the forward pass's RoPE tables hold them (float32),
 * computed once per pass rather than once per layer (n·headDim/2 cos and sin each: 0.13 s of
 * Math.cos/Math.sin over 30 layers at T = 4096, head_dim 64).
 */
function inverseRopeTables(rope: Rope, positions: Int32Array, n: number): { cos: Float32Array; sin: Float32Array } {
  const known = inverseTables.get(rope);
  if (known && known.positions.length === n && known.positions.every((p, i) => p === positions[i])) return known;
  const half = rope.half, cos = new Float32Array(n * half), sin = new Float32Array(n * half);
  rope.tables(positions, n, cos, sin);
  for (let i = 0; i < sin.length; i++) sin[i] = -sin[i];
  const made = { positions: positions.slice(0, n), cos, sin };
  inverseTables.set(rope, made);
  return made;
}

export const leverageScoreEntry: PressEntry = {
  name: 'leverage_score',
  description: 'LeverageScore: sketched statistical leverage of the pre-RoPE keys, keeps geometric outliers (arXiv 2507.08143; prefill only)',
  options: leverageScoreOptions,
  create: (r, o) => new LeverageScorePress(r, o as OptionsOf<typeof leverageScoreOptions>),
};
