import type { Backend } from '../backend/backend.js';
import { centeredGram, logits, upperTriangle } from './expected-attention-kernels.js';
import { linalg64 } from './linalg64.js';

/**
 * Float64 building blocks of the leverage presses (LeverageScore, Compactor, Cap): their n × d²
 * loops — a Gram matrix and one quadratic form per entry — run on the backend's float64 kernels
 * (gram64, eaLogits64: native) where it has them, on Expected Attention's reference loops where not.
 */

/** XᵀX (d×d, symmetric) of the n rows of X [n][d]. */
export function gram(backend: Backend, X: Float64Array, n: number, d: number): Float64Array {
  if (backend.gram64) {
    const S = new Float64Array(d * d);
    backend.gram64(S, X, n, d);
    return S;
  }
  const S = centeredGram(X, 0, n, d);
  for (let i = 0; i < d * d; i++) S[i] *= n;
  return S;
}

/**
 * out[k·n + t] = x_tᵀ W_k x_t + lin_k·x_t for the n rows x_t of X (float32 [rows][d], from row s0)
 * and G symmetric d×d matrices W (float64, [G][d][d]) with linear terms lin ([G][d]).
 */
export function quadraticForms(backend: Backend, X: Float32Array, s0: number, n: number, d: number, W: Float64Array, lin: Float64Array, G: number): Float64Array {
  // eaLogits64's form: Σ_i x_i·(lin_i + Σ_{j≥i} U_ij x_j), U the upper triangle with doubled off-diagonals.
  const U = new Float64Array(G * d * d);
  for (let k = 0; k < G; k++) upperTriangle(W.subarray(k * d * d, (k + 1) * d * d), d, 1, U, k * d * d);
  const stride = Math.ceil(n / 8) * 8, z = new Float64Array(G * stride);
  if (backend.eaLogits64) backend.eaLogits64(z, X, s0, n, d, G, lin, U, stride);
  else logits(X, s0, n, d, G, lin, U, z, stride);
  const out = new Float64Array(G * n);
  for (let k = 0; k < G; k++) out.set(z.subarray(k * stride, k * stride + n), k * n);
  return out;
}

/** Lower Cholesky factor L of a symmetric positive-definite d×d matrix (null if it is not). */
export function cholesky(A: Float64Array, d: number, lambda = 0): Float64Array | null {
  const L = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i * d + j] + (i === j ? lambda : 0);
      for (let m = 0; m < j; m++) s -= L[i * d + m] * L[j * d + m];
      if (i === j) {
        if (!(s > 0)) return null;
        L[i * d + i] = Math.sqrt(s);
      } else {
        L[i * d + j] = s / L[j * d + j];
      }
    }
  }
  return L;
}

/**
 * BᵀB with B = L⁻¹Pᵀ (L k×k lower triangular, P [d][k]): the d×d matrix of the form
 * x ↦ ‖L⁻¹Pᵀx‖², by forward substitution on each of P's d rows (linalg64.ts).
 */
export function inverseForm(backend: Backend, L: Float64Array, k: number, P: Float64Array, d: number, W = new Float64Array(d * d)): Float64Array {
  linalg64(backend).inverseForm(W, L, k, P, d);
  return W;
}
