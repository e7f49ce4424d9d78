import type { LayerContext, ModelParts } from '../model/layer-context.js';
import { weightRow } from '../model/weights.js';
import { globalTopK } from './adakv.js';
import { keptCount } from './common.js';
import { scratch } from './linalg64.js';
import { requireScorer, type KeepIndices, type Press } from './press.js';
import { ScorerPress, topK } from './scorer.js';
import { ScorerWrapper } from './wrapper.js';

export interface CriticalOptions {
  /** Added to the inner score before weighting by ‖W_O v‖₁. */
  epsilon?: number;
  /** Share of each head's budget chosen by the inner score alone (stage 1). */
  firstStageRatio?: number;
}

/**
 * CriticalKV (Feng et al., "Identify Critical KV Cache in LLM Inference from an Output
 * Perturbation Perspective", arXiv 2502.03805). An entry matters by its attention *and* by what its
 * value adds to the output, ‖W_O,h v‖₁. Stage 1 keeps the top floor((1 − ratio)·T·firstStageRatio)
 * entries of the inner score; stage 2 ranks the rest by (s + epsilon)·N_j, N_j the mean over the
 * KV group's query heads of ‖W_O,h v_j‖₁ (W_O split into per-head d×D blocks). Stage-1 entries get a
 * score above every other. When the inner press scores in log space the product is taken there,
 * log(exp(s) + epsilon) + log N, so the ranking is the same without underflow. Use an inner press
 * without its own value-norm weighting (e.g. Expected Attention with useVnorm off). The values are
 * the cached entries as stored, decoded per head into float32 (over a float32 cache: the pass's own
 * rows), and only those of stage 2 are multiplied by W_O (projectedValueNorms).
 */
export class CriticalKVPress extends ScorerPress {
  readonly name: string;
  override readonly logScores: boolean;
  readonly epsilon: number;
  readonly firstStageRatio: number;

  constructor(readonly inner: ScorerPress, compressionRatio = inner?.compressionRatio, opts: CriticalOptions = {}) {
    super(compressionRatio);
    requireScorer(inner, 'CriticalKVPress');
    this.name = `critical_${inner.name}`;
    this.logScores = inner.logScores;
    [this.epsilon, this.firstStageRatio] = criticalOptions(opts);
    inner.compressionRatio = compressionRatio;
  }

  // The ratio lives in both: the base class applies it, the inner press may read it while scoring.
  override get compressionRatio(): number {
    return super.compressionRatio;
  }

  override set compressionRatio(r: number) {
    super.compressionRatio = r;
    // The base constructor sets the ratio before `inner` exists; the constructor forwards it then.
    if (this.inner) this.inner.compressionRatio = r;
  }

  validate(model: ModelParts): void {
    (this.inner as Press).validate?.(model);
  }

  score(ctx: LayerContext): Float64Array[] {
    const s = this.inner.score(ctx);
    const first = s.map((x) => topK(x, Math.floor((1 - this.compressionRatio) * x.length * this.firstStageRatio)));
    const N = projectedValueNorms(ctx, first);
    const out = s.map((x, g) => reweight(x, N[g], this.epsilon, this.logScores));
    // The library's marker, finfo(float64).max: above every score, linear or log.
    first.forEach((idx, g) => idx.forEach((t) => (out[g][t] = Number.MAX_VALUE)));
    return out;
  }
}

/**
 * CriticalAdaKV (same paper): AdaKV's head-adaptive budgets with CriticalKV's two stages inside
 * each head. Per-head budgets b_g come from the global top n_kept·heads of the inner scores after
 * AdaKV's safeguard; then each head keeps its top max(safeguard, floor(b_g·firstStageRatio))
 * entries by the inner score and fills the rest of b_g by (s + epsilon)·‖W_O v‖₁.
 * Real eviction, like AdaKVPress (the Python library masks).
 */
export class CriticalAdaKVPress extends ScorerWrapper {
  readonly alphaSafeguard: number;
  readonly epsilon: number;
  readonly firstStageRatio: number;

  constructor(inner: ScorerPress, compressionRatio = inner?.compressionRatio, opts: CriticalOptions & { alphaSafeguard?: number } = {}) {
    const alpha = opts.alphaSafeguard ?? 0.2;
    if (!(alpha >= 0 && alpha <= 1)) throw new RangeError(`alphaSafeguard must be in [0, 1], got ${alpha}`);
    super(inner, 'critical_adakv', compressionRatio);
    this.alphaSafeguard = alpha;
    [this.epsilon, this.firstStageRatio] = criticalOptions(opts);
  }

  protected override select(ctx: LayerContext, s: Float64Array[], ratio: number): KeepIndices {
    const kept = s.map((x) => Math.max(1, keptCount(x.length, ratio)));
    const safe = s.map((x, g) => topK(x, Math.floor(kept[g] * this.alphaSafeguard)));
    const budgets = globalTopK(s, safe, kept.reduce((a, b) => a + b, 0)).map((idx) => idx.length);
    const first = s.map((x, g) => topK(x, Math.max(safe[g].length, Math.floor(budgets[g] * this.firstStageRatio))));
    const N = projectedValueNorms(ctx, first);
    return s.map((x, g) => {
      const w = reweight(x, N[g], this.epsilon, this.inner.logScores);
      for (const t of first[g]) w[t] = Infinity;
      return topK(w, budgets[g]);
    });
  }
}

/**
 * N[g][t] = mean over the query heads h of KV group g of ‖W_O,h v_t‖₁, where W_O,h is the
 * [hidden][headDim] block of the output projection that reads head h (kvpress's `vwl1norm`).
 * The entries `skip[g]` (stage 1, whose final score does not read N) are left at 0: the product
 * is T·hidden·headDim per query head, the press's main cost, and stage 1 is
 * floor((1 − ratio)·T·firstStageRatio) of the T entries (a quarter at ratio 0.5 and the default
 * 0.5). The native kernel reads the other rows in place; elsewhere they are gathered first.
 */
export function projectedValueNorms(ctx: LayerContext, skip: readonly ArrayLike<number>[] | null = null): Float64Array[] {
  const c = ctx.config, hd = c.headDim, D = c.hiddenSize, H = c.numHeads, G = H / c.numKvHeads, wo = ctx.weights.wo;
  let longest = 0;
  for (const n of ctx.cache.lengths) longest = Math.max(longest, n);
  const block = scratch('critical.block', Float32Array, D * hd), out = scratch('critical.out', Float32Array, ctx.backend.valueNormsL1 ? 0 : longest * D);
  const rows = scratch('critical.rows', Float32Array, ctx.backend.valueNormsL1 ? 0 : longest * hd), at = scratch('critical.at', Int32Array, longest), sums = scratch('critical.sums', Float64Array, longest);
  return Array.from(ctx.cache.lengths, (T, g) => {
    const N = new Float64Array(T), V = ctx.cache.headValues(g), skipped = scratch('critical.skipped', Uint8Array, T).fill(0);
    if (skip) for (let i = 0; i < skip[g].length; i++) skipped[skip[g][i]] = 1;
    let m = 0;
    for (let t = 0; t < T; t++) if (!skipped[t]) at[m++] = t;
    const S = sums.subarray(0, m).fill(0), all = m === T, native = ctx.backend.valueNormsL1 !== undefined;
    // The native kernel reads the rows it needs in place; the matmul path gathers them first.
    const X = all || native ? V : rows.subarray(0, m * hd);
    if (!all && !native) gatherRows(X, V, at, m, hd, hd, 0);
    for (let h = g * G; m > 0 && h < (g + 1) * G; h++) {
      if (wo instanceof Float32Array) gatherRows(block, wo, null, D, hd, H * hd, h * hd);
      else for (let i = 0; i < D; i++) weightRow(wo, H * hd, i, h * hd, (h + 1) * hd, block, i * hd);
      if (ctx.backend.valueNormsL1) {
        // The same product and sums in one native call (no m×D buffer).
        ctx.backend.valueNormsL1(S, X, block, m, D, hd, G, all ? null : at.subarray(0, m));
        continue;
      }
      ctx.backend.matmul(out, X, block, m, D, hd);
      for (let t = 0; t < m; t++) {
        let l1 = 0;
        for (let i = 0, o = t * D; i < D; i++) l1 += Math.abs(out[o + i]);
        S[t] += l1 / G;
      }
    }
    for (let i = 0; i < m; i++) N[at[i]] = S[i];
    return N;
  });
}

/**
 * dst[i·d …+d] = src[c0 + r·stride …+d] for r = rows[i] (rows null: r = i), i < n. Element loops in
 * a small function of their own: a subarray per row costs more than its 64 copies.
 */
function gatherRows(dst: Float32Array, src: Float32Array, rows: Int32Array | null, n: number, d: number, stride: number, c0: number): void {
  for (let i = 0; i < n; i++) {
    const o = i * d, from = (rows ? rows[i] : i) * stride + c0;
    for (let j = 0; j < d; j++) dst[o + j] = src[from + j];
  }
}

/** (s + ε)·N, or its logarithm log(exp(s) + ε) + log N when s are log-scores. */
function reweight(s: Float64Array, N: Float64Array, eps: number, log: boolean): Float64Array {
  const out = new Float64Array(s.length);
  if (!log) {
    for (let t = 0; t < s.length; t++) out[t] = (s[t] + eps) * N[t];
    return out;
  }
  const le = Math.log(eps);
  for (let t = 0; t < s.length; t++) {
    const a = Math.max(s[t], le), b = Math.min(s[t], le);
    const lse = b === -Infinity ? a : a + Math.log1p(Math.exp(b - a));
    out[t] = lse + Math.log(N[t]);
  }
  return out;
}

function criticalOptions(opts: CriticalOptions): [number, number] {
  const eps = opts.epsilon ?? 1e-4, r1 = opts.firstStageRatio ?? 0.5;
  if (!(eps >= 0 && Number.isFinite(eps))) throw new RangeError(`epsilon must be a finite number ≥ 0, got ${eps}`);
  if (!(r1 >= 0 && r1 <= 1)) throw new RangeError(`firstStageRatio must be in [0, 1], got ${r1}`);
  return [eps, r1];
}
