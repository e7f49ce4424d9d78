import type { ModelConfig } from '../model/config.js';
import type { Compressor, LayerContext } from '../model/layer-context.js';
import type { Model } from '../model/model.js';
import type { LayerQueryStats, QueryStats } from './stats-format.js';

/**
 * Offline query statistics (format in stats-format.ts): run the model over calibration samples
 * and keep, per layer and query head, the mean and sample covariance of the pre-RoPE queries
 * (ExpectedAttentionStatsPress) and the Q-Filters direction of the post-RoPE queries (QFilterPress).
 * The first `nSink` tokens of every sample are left out, as kvpress's collection does. Only the
 * passes' own float32 queries are read, never the cache, so its element type does not enter the
 * statistics except through the attention outputs that feed the later layers.
 */
export interface CalibrationOptions {
  /** Leading tokens of each sample left out (default 4). */
  nSink?: number;
  /** Called after each sample with (samples done, total). */
  onSample?: (done: number, total: number) => void;
}

/**
 * Runs `samples` (token ids, BOS included by the caller; each within the model's context) and
 * returns the statistics. Throws when fewer than two query vectors remain after the sinks.
 */
export function calibrate(model: Model, samples: readonly (readonly number[])[], opts: CalibrationOptions = {}): QueryStats {
  const acc = new QueryStatsAccumulator(model.config, opts.nSink ?? 4);
  samples.forEach((tokens, i) => {
    model.forward(tokens, model.newCache(), { press: acc, logits: 'none' });
    opts.onSample?.(i + 1, samples.length);
  });
  return acc.finish(model.source);
}

/**
 * A compressor that evicts nothing and accumulates, during each prefill, float64 moments of the
 * queries of every layer and query head. Sample moments are merged exactly (Chan et al.'s pairwise
 * update), so the result does not depend on how the text was cut into samples.
 */
export class QueryStatsAccumulator implements Compressor {
  private readonly layers: LayerAccumulator[];

  constructor(readonly config: ModelConfig, readonly nSink = 4) {
    if (!Number.isInteger(nSink) || nSink < 0) throw new RangeError(`nSink must be an integer ≥ 0, got ${nSink}`);
    this.layers = Array.from({ length: config.numLayers }, () => new LayerAccumulator(config.numHeads, config.headDim));
  }

  compress(ctx: LayerContext): null {
    if (!ctx.isPrefill || ctx.rows <= this.nSink) return null;
    this.layers[ctx.layer].add(ctx.preRopeQueries(), ctx.queries, this.nSink, ctx.rows);
    return null;
  }

  /** Query vectors per head accumulated so far. */
  get tokens(): number {
    return this.layers[0].n;
  }

  finish(model: string): QueryStats {
    const n = this.tokens;
    if (n < 2) throw new Error(`calibration needs at least 2 tokens beyond the first ${this.nSink} of each sample, got ${n}; give more text`);
    return {
      model, numHeads: this.config.numHeads, headDim: this.config.headDim, nSink: this.nSink, tokens: n,
      layers: this.layers.map((l) => l.finish()),
    };
  }
}

class LayerAccumulator {
  n = 0;
  private readonly mean: Float64Array[];
  private readonly m2: Float64Array[];
  private readonly second: Float64Array[];
  private readonly sum: Float64Array[];

  constructor(private readonly H: number, private readonly d: number) {
    const make = (size: number) => Array.from({ length: H }, () => new Float64Array(size));
    this.mean = make(d);
    this.m2 = make(d * d);
    this.second = make(d * d);
    this.sum = make(d);
  }

  /** Rows [from, rows) of pre-RoPE and post-RoPE queries [rows][H·d]. */
  add(pre: Float32Array, post: Float32Array, from: number, rows: number): void {
    const { H, d } = this, nb = rows - from, stride = H * d;
    const x = new Float64Array(nb * d);
    for (let h = 0; h < H; h++) {
      // Pre-RoPE: the sample's mean and centered Gram matrix, merged into the running ones.
      const mb = new Float64Array(d);
      for (let t = 0; t < nb; t++) {
        const o = (from + t) * stride + h * d;
        for (let i = 0; i < d; i++) mb[i] += x[t * d + i] = pre[o + i];
      }
      for (let i = 0; i < d; i++) mb[i] /= nb;
      for (let t = 0; t < nb; t++) for (let i = 0; i < d; i++) x[t * d + i] -= mb[i];
      const gb = gram(x, nb, d);
      const na = this.n, n = na + nb, mu = this.mean[h], M2 = this.m2[h];
      const delta = new Float64Array(d);
      for (let i = 0; i < d; i++) delta[i] = mb[i] - mu[i];
      const w = (na * nb) / n;
      for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) M2[i * d + j] += gb[i * d + j] + delta[i] * delta[j] * w;
      for (let i = 0; i < d; i++) mu[i] += (delta[i] * nb) / n;

      // Post-RoPE: uncentered second moment and sum, for the principal direction and its sign.
      for (let t = 0; t < nb; t++) {
        const o = (from + t) * stride + h * d;
        for (let i = 0; i < d; i++) {
          x[t * d + i] = post[o + i];
          this.sum[h][i] += post[o + i];
        }
      }
      const sb = gram(x, nb, d), S = this.second[h];
      for (let i = 0; i < d * d; i++) S[i] += sb[i];
    }
    this.n += nb;
  }

  finish(): LayerQueryStats {
    const { H, d, n } = this;
    const mean = new Float32Array(H * d), cov = new Float32Array(H * d * d), qfilter = new Float32Array(H * d);
    for (let h = 0; h < H; h++) {
      mean.set(this.mean[h], h * d);
      for (let i = 0; i < d * d; i++) cov[h * d * d + i] = this.m2[h][i] / (n - 1);
      const u = topEigenvector(this.second[h], d);
      // Q-Filters orientation: u such that the queries project positively; the file stores −u.
      let proj = 0;
      for (let i = 0; i < d; i++) proj += u[i] * this.sum[h][i];
      const sign = proj >= 0 ? -1 : 1;
      for (let i = 0; i < d; i++) qfilter[h * d + i] = sign * u[i];
    }
    return { mean, cov, qfilter };
  }
}

/** xᵀx of n rows of x [n][d], float64. */
function gram(x: Float64Array, n: number, d: number): Float64Array {
  const S = new Float64Array(d * d);
  for (let t = 0; t < n; t++) {
    const o = t * d;
    for (let i = 0; i < d; i++) {
      const a = x[o + i], row = i * d;
      for (let j = i; j < d; j++) S[row + j] += a * x[o + j];
    }
  }
  for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) S[i * d + j] = S[j * d + i];
  return S;
}

/**
 * Unit eigenvector of the largest eigenvalue of a symmetric d×d matrix (the top right singular
 * vector of Q when S = QᵀQ), by cyclic Jacobi rotations in float64 — exact to rounding, with no
 * convergence trouble when the top eigenvalues are close. Its sign is arbitrary.
 */
export function topEigenvector(S: Float64Array, d: number): Float64Array {
  const a = Float64Array.from(S), v = new Float64Array(d * d);
  for (let i = 0; i < d; i++) v[i * d + i] = 1;
  let scale = 0;
  for (let i = 0; i < d * d; i++) scale += a[i] * a[i];
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < d; p++) for (let q = p + 1; q < d; q++) off += a[p * d + q] * a[p * d + q];
    if (off <= 1e-30 * scale) break;
    for (let p = 0; p < d; p++) {
      for (let q = p + 1; q < d; q++) {
        const apq = a[p * d + q];
        if (apq === 0) continue;
        const theta = (a[q * d + q] - a[p * d + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1), s = t * c;
        for (let k = 0; k < d; k++) {
          const akp = a[k * d + p], akq = a[k * d + q];
          a[k * d + p] = c * akp - s * akq;
          a[k * d + q] = s * akp + c * akq;
        }
        for (let k = 0; k < d; k++) {
          const apk = a[p * d + k], aqk = a[q * d + k];
          a[p * d + k] = c * apk - s * aqk;
          a[q * d + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < d; k++) {
          const vkp = v[k * d + p], vkq = v[k * d + q];
          v[k * d + p] = c * vkp - s * vkq;
          v[k * d + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  let best = 0;
  for (let i = 1; i < d; i++) if (a[i * d + i] > a[best * d + best]) best = i;
  const u = new Float64Array(d);
  let norm = 0;
  for (let k = 0; k < d; k++) norm += (u[k] = v[k * d + best]) ** 2;
  norm = Math.sqrt(norm);
  for (let k = 0; k < d; k++) u[k] /= norm;
  return u;
}
