import type { Backend } from '../backend/backend.js';
import type { Linalg64 } from '../backend/linalg64.js';

/** The backend's float64 helpers of the leverage presses, or these TypeScript loops (wasm, js). */
export function linalg64(backend: Backend): Linalg64 {
  return backend.linalg64 ?? jsLinalg64;
}

/** The loops of native/press_linalg.c, in the same order. */
export const jsLinalg64: Linalg64 = {
  gemm(c, a, b, m, n, k, transA) {
    c.fill(0, 0, m * n);
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < k; p++) {
        const aip = transA ? a[p * m + i] : a[i * k + p];
        for (let j = 0, ci = i * n, bp = p * n; j < n; j++) c[ci + j] += aip * b[bp + j];
      }
    }
  },
  centerRows(k32, x, mean, src, stride, n, d) {
    mean.fill(0, 0, d);
    for (let t = 0; t < n; t++) {
      const r = t * stride;
      if (k32) k32.set(src.subarray(r, r + d), t * d);
      for (let j = 0; j < d; j++) mean[j] += src[r + j];
    }
    for (let j = 0; j < d; j++) mean[j] /= n;
    for (let t = 0; t < n; t++) for (let j = 0, r = t * stride, o = t * d; j < d; j++) x[o + j] = src[r + j] - mean[j];
  },
  scaleRows(x, src, stride, n, d, scale) {
    for (let t = 0; t < n; t++) for (let j = 0, r = t * stride, o = t * d; j < d; j++) x[o + j] = scale[t] * src[r + j];
  },
  rowDots(out, src, stride, n, d, vecs, g, index, norms) {
    for (let t = 0; t < n; t++) {
      const r = (index ? index[t] : t) * stride;
      if (norms) {
        let ss = 0;
        for (let j = 0; j < d; j++) ss += src[r + j] * src[r + j];
        out[g * n + t] = ss;
      }
      for (let i = 0; i < g; i++) {
        let s = 0;
        for (let j = 0; j < d; j++) s += src[r + j] * vecs[i * d + j];
        out[i * n + t] = s;
      }
    }
  },
  inverseForm(w, L, k, p, d) {
    const B = new Float64Array(d * k); // row i: L⁻¹ p_i
    for (let i = 0; i < d; i++) {
      for (let a = 0; a < k; a++) {
        let s = p[i * k + a];
        for (let c = 0; c < a; c++) s -= L[a * k + c] * B[i * k + c];
        B[i * k + a] = s / L[a * k + a];
      }
    }
    for (let i = 0; i < d; i++) {
      for (let j = i; j < d; j++) {
        let s = 0;
        for (let a = 0; a < k; a++) s += B[i * k + a] * B[j * k + a];
        w[i * d + j] = w[j * d + i] = s;
      }
    }
  },
};

const scratchArrays = new Map<string, Float64Array | Float32Array | Int32Array | Uint8Array>();

/**
 * A grow-only buffer of at least n elements kept under `name` for the next call (its first n
 * elements, not cleared): the leverage, non-causal and CriticalKV presses need megabytes of working
 * rows per layer, and allocating them afresh every layer made V8 collect garbage inside the press
 * whenever other presses ran in the same pass (the bench's press table: compactor measured 3 % of
 * the prefill above the sum of its two parts). One JS thread; no caller holds a buffer across a call
 * of another that uses the same name.
 */
export function scratch<A extends Float64Array | Float32Array | Int32Array | Uint8Array>(name: string, make: new (n: number) => A, n: number): A {
  let a = scratchArrays.get(name) as A | undefined;
  if (!a || a.length < n || !(a instanceof make)) {
    a = new make(Math.max(n, a && a instanceof make ? 2 * a.length : 0));
    scratchArrays.set(name, a);
  }
  return a.subarray(0, n) as A;
}
