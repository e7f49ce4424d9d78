import type { Backend } from '../backend/backend.js';
import type { LayerContext } from '../model/layer-context.js';

/**
 * The numeric building blocks of Expected Attention (expected-attention.ts): the averaged RoPE
 * R̄ and its action on vectors and covariances, the pre-RoPE query moments, and the logits
 * μ̄·k + kᵀΣ̄k of the cached keys, in float64 (the references for the native backend's kernels)
 * or in float32 GEMM blocks reduced in float64 (precision 'mixed').
 */

/** How the two O(T·d²) products are evaluated (see EaPrecision in expected-attention.ts). */
export type Precision = 'float64' | 'mixed';

/** Per query head: mean [d] and covariance [d·d] (row-major) of pre-RoPE queries, float64. */
export interface QueryMoments {
  mean: Float64Array[];
  cov: Float64Array[] | null;
}

/**
 * Per frequency i < d/2, the mean over positions p ∈ [start, start + n) of cos(pθ_i) and
 * sin(pθ_i): the diagonal blocks [[c̄, −s̄], [s̄, c̄]] of R̄ = mean_p R_p. Closed form
 * mean cos = sin(nθ/2)/(n sin(θ/2))·cos((start + (n−1)/2)θ), same with sin; θ = 0 gives 1.
 */
export function averagedRope(invFreq: Float64Array, start: number, n: number): { cos: Float64Array; sin: Float64Array } {
  const half = invFreq.length;
  const cos = new Float64Array(half), sin = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    const theta = invFreq[i];
    const sh = Math.sin(theta / 2);
    const amp = sh === 0 ? 1 : Math.sin((n * theta) / 2) / (n * sh);
    const phase = (start + (n - 1) / 2) * theta;
    cos[i] = amp * Math.cos(phase);
    sin[i] = amp * Math.sin(phase);
  }
  return { cos, sin };
}

/** R̄x for one head vector (half-split pairs (i, i + d/2)), into `out`. */
export function rotateVector(x: Float64Array, rbar: { cos: Float64Array; sin: Float64Array }, out = new Float64Array(x.length)): Float64Array {
  const half = rbar.cos.length;
  for (let i = 0; i < half; i++) {
    const c = rbar.cos[i], s = rbar.sin[i], a = x[i], b = x[i + half];
    out[i] = c * a - s * b;
    out[i + half] = s * a + c * b;
  }
  return out;
}

/** R̄ΣR̄ᵀ for a d×d row-major Σ: the block operator on rows, then on columns. Returns a new matrix. */
export function rotateCovariance(cov: Float64Array, rbar: { cos: Float64Array; sin: Float64Array }): Float64Array {
  const half = rbar.cos.length, d = 2 * half;
  const m = cov.slice();
  for (let i = 0; i < half; i++) {
    const c = rbar.cos[i], s = rbar.sin[i], ri = i * d, rj = (i + half) * d;
    for (let j = 0; j < d; j++) {
      const a = m[ri + j], b = m[rj + j];
      m[ri + j] = c * a - s * b;
      m[rj + j] = s * a + c * b;
    }
  }
  for (let r = 0; r < d; r++) {
    const o = r * d;
    for (let j = 0; j < half; j++) {
      const c = rbar.cos[j], s = rbar.sin[j], a = m[o + j], b = m[o + j + half];
      m[o + j] = c * a - s * b;
      m[o + j + half] = s * a + c * b;
    }
  }
  return m;
}

/**
 * Mean and population covariance (float64) of the pre-RoPE queries of rows [start, rows) of the
 * pass, per query head. The pre-RoPE queries are this pass's post-RoPE queries rotated back by
 * their own positions. Heads are done one after the other through `scratch`, which holds at least
 * (rows − start)·headDim values.
 */
export function queryMoments(ctx: LayerContext, start: number, withCovariance: boolean, scratch?: Float64Array, precision: Precision = 'float64'): QueryMoments {
  const c = ctx.config, d = c.headDim, half = d >> 1, H = c.numHeads, n = ctx.rows - start, qStride = H * d;
  const q = ctx.queries;
  const { cos: cs, sin: sn } = angleTables(ctx.rope.invFreq, ctx.positions.subarray(start, ctx.rows));
  if (precision === 'float64' && ctx.backend.eaQueryMoments64) {
    const M = new Float64Array(H * d), S = withCovariance ? new Float64Array(H * d * d) : null;
    ctx.backend.eaQueryMoments64(M, S, q, qStride, start, n, H, d, cs, sn);
    return {
      mean: Array.from({ length: H }, (_, h) => M.subarray(h * d, (h + 1) * d)),
      cov: S && Array.from({ length: H }, (_, h) => S.subarray(h * d * d, (h + 1) * d * d)),
    };
  }
  const X = scratch && scratch.length >= n * d ? scratch : new Float64Array(n * d); // [t][d], one head
  const mean: Float64Array[] = [], cov: Float64Array[] = [];
  for (let h = 0; h < H; h++) {
    const mu = new Float64Array(d);
    for (let t = 0; t < n; t++) {
      const o = (start + t) * qStride + h * d, xo = t * d, co = t * half;
      for (let i = 0; i < half; i++) {
        const a = q[o + i], b = q[o + i + half], cc = cs[co + i], ss = sn[co + i];
        const x = cc * a + ss * b, y = cc * b - ss * a;
        X[xo + i] = x;
        X[xo + i + half] = y;
        mu[i] += x;
        mu[i + half] += y;
      }
    }
    for (let i = 0; i < d; i++) mu[i] /= n;
    mean.push(mu);
    if (!withCovariance) continue;
    for (let t = 0; t < n; t++) for (let i = 0, o = t * d; i < d; i++) X[o + i] -= mu[i];
    cov.push(precision === 'mixed' ? blockedGram(ctx.backend, X, 0, n, d) : float64Gram(ctx.backend, X, n, d));
  }
  return { mean, cov: withCovariance ? cov : null };
}

/** cos/sin tables [t][d/2] of the last positions angleTables computed, per RoPE. */
const lastAngles = new WeakMap<Float64Array, { positions: Int32Array; cos: Float64Array; sin: Float64Array }>();

/**
 * cos(p·θ_i) and sin(p·θ_i) of every position p of `positions` and frequency θ_i of `invFreq`, as
 * [t][d/2] float64 tables. Every layer of a pass asks for the same positions, so the tables of the
 * last call per RoPE are kept and reused when the positions are equal.
 */
function angleTables(invFreq: Float64Array, positions: Int32Array): { cos: Float64Array; sin: Float64Array } {
  const n = positions.length, last = lastAngles.get(invFreq);
  if (last && last.positions.length === n) {
    let same = true;
    for (let t = 0; t < n && same; t++) same = last.positions[t] === positions[t];
    if (same) return last;
  }
  const half = invFreq.length, cos = new Float64Array(n * half), sin = new Float64Array(n * half);
  for (let t = 0; t < n; t++) {
    const p = positions[t];
    for (let i = 0; i < half; i++) {
      const a = p * invFreq[i];
      cos[t * half + i] = Math.cos(a);
      sin[t * half + i] = Math.sin(a);
    }
  }
  const tables = { positions: positions.slice(), cos, sin };
  lastAngles.set(invFreq, tables);
  return tables;
}

/** centeredGram of the first n rows of X, by the backend's float64 kernel where it has one. */
function float64Gram(backend: Backend, X: Float64Array, n: number, d: number): Float64Array {
  if (!backend.gram64) return centeredGram(X, 0, n, d);
  const S = new Float64Array(d * d);
  backend.gram64(S, X, n, d);
  for (let i = 0; i < d * d; i++) S[i] /= n;
  return S;
}

/**
 * (1/n)·Σ_t x_t x_tᵀ of n centered rows of X starting at `base`; upper triangle eight rows at a
 * time. The reference for backends' gram64, and the loop where they have none.
 */
export function centeredGram(X: Float64Array, base: number, n: number, d: number): Float64Array {
  const S = new Float64Array(d * d);
  let t = 0;
  for (; t + 8 <= n; t += 8) {
    const x0 = base + t * d, x1 = x0 + d, x2 = x1 + d, x3 = x2 + d, x4 = x3 + d, x5 = x4 + d, x6 = x5 + d, x7 = x6 + d;
    for (let i = 0; i < d; i++) {
      const a0 = X[x0 + i], a1 = X[x1 + i], a2 = X[x2 + i], a3 = X[x3 + i], a4 = X[x4 + i], a5 = X[x5 + i], a6 = X[x6 + i], a7 = X[x7 + i];
      for (let j = i, row = i * d; j < d; j++) {
        S[row + j] += a0 * X[x0 + j] + a1 * X[x1 + j] + a2 * X[x2 + j] + a3 * X[x3 + j] + a4 * X[x4 + j] + a5 * X[x5 + j] + a6 * X[x6 + j] + a7 * X[x7 + j];
      }
    }
  }
  for (; t < n; t++) {
    const x0 = base + t * d;
    for (let i = 0; i < d; i++) {
      const a0 = X[x0 + i], row = i * d;
      for (let j = i; j < d; j++) S[row + j] += a0 * X[x0 + j];
    }
  }
  for (let i = 0; i < d; i++) {
    for (let j = i; j < d; j++) {
      const v = S[i * d + j] / n;
      S[i * d + j] = v;
      S[j * d + i] = v;
    }
  }
  return S;
}

/** Tokens per float32 GEMM block of the mixed-precision covariance. */
const GRAM_BLOCK = 64;

/**
 * centeredGram with the backend's float32 GEMM: each block of up to 64 rows gives XbᵀXb in
 * float32, and the blocks are summed in float64.
 */
function blockedGram(backend: Backend, X: Float64Array, base: number, n: number, d: number): Float64Array {
  const S = new Float64Array(d * d), xt = new Float32Array(d * GRAM_BLOCK), out = new Float32Array(d * d);
  for (let t0 = 0; t0 < n; t0 += GRAM_BLOCK) {
    const k = Math.min(GRAM_BLOCK, n - t0);
    for (let t = 0; t < k; t++) for (let i = 0, o = base + (t0 + t) * d; i < d; i++) xt[i * k + t] = X[o + i];
    backend.matmul(out, xt, xt, d, d, k);
    for (let i = 0; i < d * d; i++) S[i] += out[i];
  }
  for (let i = 0; i < d; i++) {
    for (let j = i; j < d; j++) {
      const v = (S[i * d + j] + S[j * d + i]) / (2 * n);
      S[i * d + j] = v;
      S[j * d + i] = v;
    }
  }
  return S;
}

/** Upper triangle of a symmetric d×d matrix, scaled, off-diagonals doubled from (Σ_ij + Σ_ji)/2; lower triangle 0. */
export function upperTriangle(S: Float64Array, d: number, scale: number, out: Float64Array, offset: number): void {
  for (let i = 0; i < d; i++) {
    out[offset + i * d + i] = S[i * d + i] * scale;
    for (let j = i + 1; j < d; j++) out[offset + i * d + j] = (S[i * d + j] + S[j * d + i]) * scale;
  }
}

/**
 * z[k·stride + t] = μ̄_k·key + keyᵀΣ̄_k key for the m keys from entry s0 on and the G heads of a group,
 * as Σ_i key_i·(μ̄_i + Σ_{j≥i} U_ij key_j) with U the upper triangle. Eight keys at a time, stored
 * interleaved, so that each loaded coefficient serves eight keys (z is written up to the next
 * multiple of eight past m, within stride). The reference for backends' eaLogits64, and the loop
 * where they have none.
 */
export function logits(K: Float32Array, s0: number, m: number, d: number, G: number, mus: Float64Array, quad: Float64Array | null, z: Float64Array, stride: number): void {
  const kb = new Float64Array(8 * d); // kb[i·8 + b]: component i of key b of the block
  for (let t = 0; t < m; t += 8) {
    const nb = Math.min(8, m - t);
    kb.fill(0);
    for (let b = 0; b < nb; b++) for (let i = 0, src = (s0 + t + b) * d; i < d; i++) kb[i * 8 + b] = K[src + i];
    for (let k = 0; k < G; k++) {
      let l0 = 0, l1 = 0, l2 = 0, l3 = 0, l4 = 0, l5 = 0, l6 = 0, l7 = 0;
      for (let i = 0; i < d; i++) {
        const mu = mus[k * d + i];
        let r0 = mu, r1 = mu, r2 = mu, r3 = mu, r4 = mu, r5 = mu, r6 = mu, r7 = mu;
        if (quad) {
          for (let j = i, row = (k * d + i) * d; j < d; j++) {
            const w = quad[row + j], o = j * 8;
            r0 += w * kb[o]; r1 += w * kb[o + 1]; r2 += w * kb[o + 2]; r3 += w * kb[o + 3];
            r4 += w * kb[o + 4]; r5 += w * kb[o + 5]; r6 += w * kb[o + 6]; r7 += w * kb[o + 7];
          }
        }
        const o = i * 8;
        l0 += kb[o] * r0; l1 += kb[o + 1] * r1; l2 += kb[o + 2] * r2; l3 += kb[o + 3] * r3;
        l4 += kb[o + 4] * r4; l5 += kb[o + 5] * r5; l6 += kb[o + 6] * r6; l7 += kb[o + 7] * r7;
      }
      const zo = k * stride + t;
      z[zo] = l0; z[zo + 1] = l1; z[zo + 2] = l2; z[zo + 3] = l3;
      z[zo + 4] = l4; z[zo + 5] = l5; z[zo + 6] = l6; z[zo + 7] = l7;
    }
  }
}

/**
 * Adds keyᵀΣ̄_k key to z for the mixed precision: Y = keys·Ũᵀ by the backend's float32 GEMM, Ũ
 * the G stacked symmetric matrices rebuilt from their upper triangles, then Σ_i key_i·Y_i in
 * float64 per key and head.
 */
export function addQuadraticGemm(backend: Backend, K: Float32Array, s0: number, m: number, d: number, G: number, quad: Float64Array, z: Float64Array, stride: number): void {
  if (m === 0) return;
  const w = new Float32Array(G * d * d);
  for (let k = 0; k < G; k++) {
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < d; j++) {
        // quad holds the scaled upper triangle with doubled off-diagonals: halve them back.
        const u = i === j ? quad[(k * d + i) * d + i] : 0.5 * quad[(k * d + Math.min(i, j)) * d + Math.max(i, j)];
        w[(k * d + i) * d + j] = u;
      }
    }
  }
  const keys = K.subarray(s0 * d, (s0 + m) * d), y = new Float32Array(m * G * d);
  backend.matmul(y, keys, w, m, G * d, d);
  for (let t = 0; t < m; t++) {
    for (let k = 0; k < G; k++) {
      let s = 0;
      for (let i = 0, yo = (t * G + k) * d, ko = t * d; i < d; i++) s += keys[ko + i] * y[yo + i];
      z[k * stride + t] += s;
    }
  }
}

export function logSumExp(x: Float64Array, offset: number, n: number): number {
  let mx = -Infinity;
  for (let i = 0; i < n; i++) mx = Math.max(mx, x[offset + i]);
  if (mx === -Infinity || mx === Infinity) return mx;
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(x[offset + i] - mx);
  return mx + Math.log(s);
}

/** log(e^a + e^b) without overflow or needless underflow. */
export function logAddExp(a: number, b: number): number {
  if (a === -Infinity) return b;
  if (b === -Infinity) return a;
  const mx = Math.max(a, b);
  return mx + Math.log1p(Math.exp(-Math.abs(a - b)));
}
