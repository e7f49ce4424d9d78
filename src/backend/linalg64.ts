/**
 * Float64 helpers of the leverage presses (LeverageScore, Compactor, Cap, KeyDiff): the n·d gathers
 * and d·k-sized products around the gram64 / eaLogits64 kernels. A backend may provide them
 * natively (native/press_linalg.c); src/presses/linalg64.ts runs the same loops in TypeScript
 * where it does not. Rows are read from `src` at a stride, so one head of an interleaved
 * [rows][heads·d] tensor is read in place.
 */
export interface Linalg64 {
  /** c [m][n] = op(a)·b with b [k][n]; op(a) = a [m][k], or aᵀ of a stored [k][m] when transA. */
  gemm(c: Float64Array, a: Float64Array, b: Float64Array, m: number, n: number, k: number, transA: boolean): void;
  /**
   * For the n rows src[t·stride …+d]: a copy into k32 [n][d] (when given), the column mean
   * (summed over t in order, / n) into mean [d] and the centered rows into x [n][d].
   */
  centerRows(k32: Float32Array | null, x: Float64Array, mean: Float64Array, src: Float32Array, stride: number, n: number, d: number): void;
  /** x[t][j] = scale[t]·src[t·stride + j]. */
  scaleRows(x: Float64Array, src: Float32Array, stride: number, n: number, d: number, scale: Float64Array): void;
  /**
   * out[i·n + t] = r_t·vecs[i·d …] for i < g and, when `norms`, out[g·n + t] = ‖r_t‖², for the rows
   * r_t = src[index[t]·stride …+d] (index null: row t), t < n.
   */
  rowDots(out: Float64Array, src: Float32Array, stride: number, n: number, d: number, vecs: Float64Array, g: number, index: Int32Array | null, norms: boolean): void;
  /** w [d][d] = BᵀB with B = L⁻¹pᵀ (L [k][k] lower triangular, p [d][k]). */
  inverseForm(w: Float64Array, L: Float64Array, k: number, p: Float64Array, d: number): void;
}

/** One-line errors for arguments the native loops would read or write out of bounds. */
export function checkedLinalg64(impl: Linalg64): Linalg64 {
  const count = (op: string, name: string, v: number) => {
    if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) fail(op, `${name} must be a non-negative integer, got ${v}`);
  };
  const f64 = (op: string, name: string, a: unknown, need: number) => {
    if (!(a instanceof Float64Array)) fail(op, `${name} must be a Float64Array`);
    if (a.length < need) fail(op, `${name} has ${a.length} doubles, needs ${need}`);
  };
  const rows = (op: string, src: unknown, stride: number, n: number, d: number) => {
    count(op, 'stride', stride);
    count(op, 'n', n);
    count(op, 'd', d);
    if (!(src instanceof Float32Array)) fail(op, 'src must be a Float32Array');
    if (n > 0 && stride < d) fail(op, `stride ${stride} is shorter than a row (${d})`);
    const need = n === 0 ? 0 : (n - 1) * stride + d;
    if (src.length < need) fail(op, `src has ${src.length} floats, needs ${need}`);
  };
  return {
    gemm(c, a, b, m, n, k, transA) {
      for (const [name, v] of [['m', m], ['n', n], ['k', k]] as const) count('gemm64', name, v);
      f64('gemm64', 'c', c, m * n);
      f64('gemm64', 'a', a, m * k);
      f64('gemm64', 'b', b, k * n);
      impl.gemm(c, a, b, m, n, k, transA);
    },
    centerRows(k32, x, mean, src, stride, n, d) {
      rows('centerRows', src, stride, n, d);
      if (n === 0) fail('centerRows', 'needs at least one row');
      if (k32 !== null && !(k32 instanceof Float32Array && k32.length >= n * d)) fail('centerRows', `k32 must be a Float32Array of at least ${n * d} floats`);
      f64('centerRows', 'x', x, n * d);
      f64('centerRows', 'mean', mean, d);
      impl.centerRows(k32, x, mean, src, stride, n, d);
    },
    scaleRows(x, src, stride, n, d, scale) {
      rows('scaleRows', src, stride, n, d);
      f64('scaleRows', 'x', x, n * d);
      f64('scaleRows', 'scale', scale, n);
      impl.scaleRows(x, src, stride, n, d, scale);
    },
    rowDots(out, src, stride, n, d, vecs, g, index, norms) {
      count('rowDots', 'g', g);
      f64('rowDots', 'out', out, (norms ? g + 1 : g) * n);
      f64('rowDots', 'vecs', vecs, g * d);
      if (index === null) rows('rowDots', src, stride, n, d);
      else {
        if (!(index instanceof Int32Array) || index.length < n) fail('rowDots', `index must be an Int32Array of at least ${n} rows`);
        let last = -1;
        for (let t = 0; t < n; t++) {
          if (!(index[t] >= 0)) fail('rowDots', `index[${t}] = ${index[t]} is negative`);
          last = Math.max(last, index[t]);
        }
        rows('rowDots', src, stride, last + 1, d);
      }
      impl.rowDots(out, src, stride, n, d, vecs, g, index, norms);
    },
    inverseForm(w, L, k, p, d) {
      count('inverseForm', 'k', k);
      count('inverseForm', 'd', d);
      f64('inverseForm', 'w', w, d * d);
      f64('inverseForm', 'L', L, k * k);
      f64('inverseForm', 'p', p, d * k);
      impl.inverseForm(w, L, k, p, d);
    },
  };
}

function fail(op: string, msg: string): never {
  throw new RangeError(`${op}: ${msg}`);
}
