import type { KvFormat } from '../../cache/format.js';
import type { AttentionArgs, PagedAttentionArgs, PressAttentionArgs } from '../backend.js';

/**
 * Argument checks shared by the native and WebAssembly backends. Their kernels index raw
 * memory, so a short array must become a one-line error here rather than a corrupted heap.
 */

function fail(op: string, msg: string): never {
  throw new RangeError(`${op}: ${msg}`);
}

export function checkCount(op: string, name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) fail(op, `${name} must be a non-negative integer, got ${v}`);
}

export function checkArray(op: string, name: string, a: unknown, need: number): void {
  if (!(a instanceof Float32Array)) fail(op, `${name} must be a Float32Array`);
  if (a.length < need) fail(op, `${name} has ${a.length} floats, needs ${need}`);
}

export function checkMatmul(out: Float32Array, x: Float32Array, w: Float32Array, m: number, n: number, k: number, bias?: Float32Array | null): void {
  checkProduct('matmul', out, x, m, n, k, bias);
  checkArray('matmul', 'w', w, n * k);
}

/** checkMatmul's checks, with the weights as bf16 bits. */
export function checkMatmulBf16(out: Float32Array, x: Float32Array, w: Uint16Array, m: number, n: number, k: number, bias?: Float32Array | null): void {
  checkProduct('matmulBf16', out, x, m, n, k, bias);
  if (!(w instanceof Uint16Array)) fail('matmulBf16', 'w must be a Uint16Array of bf16 bits');
  if (w.length < n * k) fail('matmulBf16', `w has ${w.length} values, needs ${n * k}`);
}

/**
 * [values, bytes] of a block of each ggml type native/quant.c multiplies on (F16, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q8_0, Q2_K … Q6_K; src/model/quant/formats.ts has the layouts). The backends stand
 * alone, so the geometry is restated here rather than imported.
 */
const QUANT_BLOCKS: Record<number, [number, number]> = {
  1: [1, 2], 2: [32, 18], 3: [32, 20], 6: [32, 22], 7: [32, 24], 8: [32, 34], 10: [256, 84], 11: [256, 110], 12: [256, 144], 13: [256, 176], 14: [256, 210],
};

/** checkMatmul's checks, with the weights as n rows of ggml blocks; returns the bytes of a row. */
export function checkMatmulQuant(out: Float32Array, x: Float32Array, w: Uint8Array, ggmlType: number, m: number, n: number, k: number, bias?: Float32Array | null): number {
  checkProduct('matmulQuant', out, x, m, n, k, bias);
  const f = QUANT_BLOCKS[ggmlType];
  if (!f) fail('matmulQuant', `no quantized product for ggml type ${ggmlType}`);
  if (k % f[0] !== 0) fail('matmulQuant', `k = ${k} is not a multiple of the block of ${f[0]} values of ggml type ${ggmlType}`);
  if (!(w instanceof Uint8Array)) fail('matmulQuant', 'w must be a Uint8Array of ggml blocks');
  const rowBytes = (k / f[0]) * f[1];
  if (w.length < n * rowBytes) fail('matmulQuant', `w has ${w.length} bytes, needs ${n * rowBytes}`);
  return rowBytes;
}

function checkProduct(op: string, out: Float32Array, x: Float32Array, m: number, n: number, k: number, bias?: Float32Array | null): void {
  checkCount(op, 'm', m);
  checkCount(op, 'n', n);
  checkCount(op, 'k', k);
  checkArray(op, 'out', out, m * n);
  checkArray(op, 'x', x, m * k);
  if (bias) checkArray(op, 'bias', bias, n);
}

export function checkRmsnorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, dim: number, eps: number): void {
  checkCount('rmsnorm', 'rows', rows);
  checkCount('rmsnorm', 'dim', dim);
  checkArray('rmsnorm', 'out', out, rows * dim);
  checkArray('rmsnorm', 'x', x, rows * dim);
  checkArray('rmsnorm', 'weight', weight, dim);
  if (!(eps >= 0)) fail('rmsnorm', `eps must be ≥ 0, got ${eps}`);
}

export function checkRope(x: Float32Array, rows: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
  checkCount('rope', 'rows', rows);
  checkCount('rope', 'heads', heads);
  checkCount('rope', 'headDim', headDim);
  if (headDim % 2 !== 0) fail('rope', `headDim must be even, got ${headDim}`);
  checkArray('rope', 'x', x, rows * heads * headDim);
  checkArray('rope', 'cos', cos, (rows * headDim) / 2);
  checkArray('rope', 'sin', sin, (rows * headDim) / 2);
}

export function checkSiluMul(gate: Float32Array, up: Float32Array, n: number): void {
  checkCount('siluMul', 'n', n);
  checkArray('siluMul', 'gate', gate, n);
  checkArray('siluMul', 'up', up, n);
}

export function checkAdd(x: Float32Array, y: Float32Array, n: number): void {
  checkCount('add', 'n', n);
  checkArray('add', 'x', x, n);
  checkArray('add', 'y', y, n);
}

/** Returns the longest KV head, which sizes the score scratch. */
export function checkAttention(a: AttentionArgs): number {
  const { rows, numHeads, numKvHeads, headDim, keys, values, lengths } = a;
  checkCount('attention', 'rows', rows);
  checkCount('attention', 'numHeads', numHeads);
  checkCount('attention', 'headDim', headDim);
  checkCount('attention', 'numKvHeads', numKvHeads);
  if (numKvHeads === 0 || numHeads % numKvHeads !== 0) fail('attention', `numHeads (${numHeads}) must be a multiple of numKvHeads (${numKvHeads})`);
  checkArray('attention', 'q', a.q, rows * numHeads * headDim);
  checkArray('attention', 'out', a.out, rows * numHeads * headDim);
  if (!(lengths instanceof Int32Array) || lengths.length < numKvHeads) fail('attention', `lengths must be an Int32Array of ${numKvHeads} entries`);
  if (keys.length < numKvHeads || values.length < numKvHeads) fail('attention', `keys and values need ${numKvHeads} heads`);
  let maxLen = 0;
  for (let g = 0; g < numKvHeads; g++) {
    const len = lengths[g];
    if (len < rows) fail('attention', `KV head ${g} has ${len} entries, fewer than the ${rows} new rows`);
    checkArray('attention', `keys[${g}]`, keys[g], len * headDim);
    checkArray('attention', `values[${g}]`, values[g], len * headDim);
    if (len > maxLen) maxLen = len;
  }
  return maxLen;
}

/** Checks paged attention arguments (shapes, page counts, window) and returns the cache format. */
export function checkPagedAttention(a: PagedAttentionArgs): KvFormat {
  const { rows, numHeads, numKvHeads, headDim, cache } = a;
  checkCount('attention', 'rows', rows);
  checkCount('attention', 'numHeads', numHeads);
  checkCount('attention', 'headDim', headDim);
  checkCount('attention', 'numKvHeads', numKvHeads);
  if (numKvHeads === 0 || numHeads % numKvHeads !== 0) fail('attention', `numHeads (${numHeads}) must be a multiple of numKvHeads (${numKvHeads})`);
  checkArray('attention', 'q', a.q, rows * numHeads * headDim);
  checkArray('attention', 'out', a.out, rows * numHeads * headDim);
  const f = cache.pool.fmt, E = cache.pool.pageEntries;
  if (f.headDim !== headDim) fail('attention', `the cache holds heads of ${f.headDim}, not ${headDim}`);
  if (!(a.queryPositions instanceof Int32Array) || a.queryPositions.length < rows) fail('attention', `queryPositions must be an Int32Array of ${rows} entries`);
  if (a.window !== undefined && !(Number.isInteger(a.window) && a.window >= 1)) fail('attention', `window must be an integer ≥ 1, got ${a.window}`);
  if (cache.pages.length < numKvHeads || cache.lengths.length < numKvHeads) fail('attention', `the cache has ${cache.pages.length} KV heads, needs ${numKvHeads}`);
  for (let g = 0; g < numKvHeads; g++) {
    const len = cache.lengths[g];
    if (len < rows) fail('attention', `KV head ${g} has ${len} entries, fewer than the ${rows} new rows`);
    if (cache.pages[g].length * E < len) fail('attention', `KV head ${g} has ${len} entries in ${cache.pages[g].length} pages of ${E}`);
    // The kernel reads a page's keys, values and positions at offsets its formats give.
    const ch = cache.keyChannels?.[g] ?? null, kf = ch ? cache.pages[g][0]?.keyFmt ?? f : f;
    if (!ch) continue;
    if (kf.dtype !== f.dtype || ch.length > kf.headDim || ch.some((c) => !(c >= 0 && c < headDim))) fail('attention', `KV head ${g}: key channels ${Array.from(ch).join(',')} do not fit its ${kf.headDim}-number keys of ${headDim} channels`);
    for (const p of cache.pages[g]) {
      if (p.keyFmt.rowBytes !== kf.rowBytes || p.fmt.rowBytes !== f.rowBytes || p.u8.byteLength < E * (kf.rowBytes + f.rowBytes) || p.pos.length < E) fail('attention', `KV head ${g}: a page does not hold ${E} entries of its channel-pruned format`);
    }
  }
  if (a.columnSums) {
    const stride = a.columnStride ?? -1;
    let longest = 0;
    for (let g = 0; g < numKvHeads; g++) longest = Math.max(longest, cache.lengths[g]);
    if (!(Number.isInteger(stride) && stride >= longest)) fail('attention', `columnStride must be an integer ≥ the longest head's ${longest} entries, got ${stride}`);
    checkF64('attention', 'columnSums', a.columnSums, numKvHeads * stride);
  }
  return f;
}

function checkF64(op: string, name: string, a: unknown, need: number): void {
  if (!(a instanceof Float64Array)) fail(op, `${name} must be a Float64Array`);
  if (a.length < need) fail(op, `${name} has ${a.length} doubles, needs ${need}`);
}

export function checkGram64(out: Float64Array, x: Float64Array, n: number, d: number): void {
  checkCount('gram64', 'n', n);
  checkCount('gram64', 'd', d);
  checkF64('gram64', 'out', out, d * d);
  checkF64('gram64', 'x', x, n * d);
}

export function checkEaLogits64(
  z: Float64Array, keys: Float32Array, s0: number, m: number, d: number, G: number,
  mus: Float64Array, quad: Float64Array | null, stride: number,
): void {
  const op = 'eaLogits64';
  for (const [name, v] of [['s0', s0], ['m', m], ['d', d], ['G', G], ['stride', stride]] as const) checkCount(op, name, v);
  if (stride < m) fail(op, `stride (${stride}) must be at least m (${m})`);
  checkF64(op, 'z', z, G === 0 || m === 0 ? 0 : (G - 1) * stride + m);
  checkArray(op, 'keys', keys, (s0 + m) * d);
  checkF64(op, 'mus', mus, G * d);
  if (quad !== null) checkF64(op, 'quad', quad, G * d * d);
}

export function checkEaQueryMoments64(
  mean: Float64Array, cov: Float64Array | null, q: Float32Array, qStride: number, start: number, n: number, H: number, d: number,
  cos: Float64Array, sin: Float64Array,
): void {
  const op = 'eaQueryMoments64';
  for (const [name, v] of [['qStride', qStride], ['start', start], ['n', n], ['H', H], ['d', d]] as const) checkCount(op, name, v);
  if (d % 2 !== 0) fail(op, `d must be even, got ${d}`);
  if (qStride < H * d) fail(op, `qStride (${qStride}) must be at least H·d (${H * d})`);
  checkF64(op, 'mean', mean, H * d);
  if (cov !== null) checkF64(op, 'cov', cov, H * d * d);
  checkArray(op, 'q', q, n === 0 ? 0 : (start + n) * qStride);
  checkF64(op, 'cos', cos, n * (d / 2));
  checkF64(op, 'sin', sin, n * (d / 2));
}

export function checkEaScores64(out: Float64Array, z: Float64Array, stride: number, s0: number, m: number, G: number, values: Float32Array | readonly Float32Array[], d: number, epsilon: number): void {
  const op = 'eaScores64';
  for (const [name, v] of [['stride', stride], ['s0', s0], ['m', m], ['G', G], ['d', d]] as const) checkCount(op, name, v);
  if (m > stride) fail(op, `m (${m}) must be at most stride (${stride})`);
  if (!(epsilon >= 0)) fail(op, `epsilon must be ≥ 0, got ${epsilon}`);
  checkF64(op, 'out', out, s0 + m);
  checkF64(op, 'z', z, m === 0 ? 0 : (G - 1) * stride + m);
  if (!Array.isArray(values)) return checkArray(op, 'values', values as Float32Array, (s0 + m) * d);
  // Pages: Float32Arrays of one length, a whole number of rows each, enough for entry s0 + m − 1.
  const pages = values as readonly Float32Array[], len = pages[0]?.length ?? 0, E = d > 0 ? len / d : 0;
  for (const [i, p] of pages.entries()) {
    checkArray(op, `values[${i}]`, p, len);
    if (p.length !== len) fail(op, `value pages must be of one length: page ${i} has ${p.length} floats, page 0 ${len}`);
  }
  if (!(Number.isInteger(E) && E >= 1)) fail(op, `each value page must hold a whole number (≥ 1) of d-float rows (d = ${d}), got ${len} floats`);
  if (pages.length * E < s0 + m) fail(op, `${pages.length} value pages of ${E} rows hold ${pages.length * E} entries, fewer than s0 + m = ${s0 + m}`);
}

export function checkWindowSoftmaxSums(
  acc: Float64Array, q: Float32Array, qStride: number, h0: number, G: number, d: number, first: number, w: number,
  keys: Float32Array, T: number, keyPositions: Int32Array, rowPositions: Int32Array, weights: Float64Array | null,
): void {
  const op = 'windowSoftmaxSums';
  for (const [name, v] of [['qStride', qStride], ['h0', h0], ['G', G], ['d', d], ['first', first], ['w', w], ['T', T]] as const) checkCount(op, name, v);
  if (w > T) fail(op, `window (${w}) longer than the ${T} keys`);
  if (qStride < (h0 + G) * d) fail(op, `qStride (${qStride}) must be at least (h0 + G)·d (${(h0 + G) * d})`);
  checkF64(op, 'acc', acc, G * (T - w));
  checkArray(op, 'q', q, w === 0 ? 0 : (first + w) * qStride);
  checkArray(op, 'keys', keys, T * d);
  if (!(keyPositions instanceof Int32Array) || keyPositions.length < T) fail(op, `keyPositions must be an Int32Array of at least ${T}`);
  if (!(rowPositions instanceof Int32Array) || rowPositions.length < w) fail(op, `rowPositions must be an Int32Array of at least ${w}`);
  if (weights !== null) checkF64(op, 'weights', weights, w);
}

export function checkValueNormsL1(out: Float64Array, values: Float32Array, block: Float32Array, T: number, D: number, hd: number, divisor: number, rows: Int32Array | null = null): void {
  const op = 'valueNormsL1';
  for (const [name, v] of [['T', T], ['D', D], ['hd', hd]] as const) checkCount(op, name, v);
  if (!(divisor > 0)) fail(op, `divisor must be > 0, got ${divisor}`);
  checkF64(op, 'out', out, T);
  let need = T;
  if (rows !== null) {
    if (!(rows instanceof Int32Array) || rows.length < T) fail(op, `rows must be an Int32Array of at least ${T} indices`);
    need = 0;
    for (let t = 0; t < T; t++) {
      if (!(rows[t] >= 0)) fail(op, `rows[${t}] = ${rows[t]} is negative`);
      need = Math.max(need, rows[t] + 1);
    }
  }
  checkArray(op, 'values', values, need * hd);
  checkArray(op, 'block', block, D * hd);
}

/** PressAttentionArgs: every array long enough and every row's key range inside [0, n). */
export function checkPressAttention(a: PressAttentionArgs): void {
  const op = 'pressAttention', { n, headDim: d, rows } = a;
  for (const [name, v] of [['n', n], ['headDim', d], ['rows', rows], ['qStride', a.qStride]] as const) checkCount(op, name, v);
  if (!(a.out instanceof Float64Array) || a.out.length < a.heads.length * n) fail(op, `out must be a Float64Array of ${a.heads.length * n} numbers`);
  checkArray(op, 'keys', a.keys, n * d);
  if (!(a.heads instanceof Int32Array) || !(a.lo instanceof Int32Array) || !(a.hi instanceof Int32Array)) fail(op, 'heads, lo and hi must be Int32Arrays');
  if (a.lo.length < rows || a.hi.length < rows) fail(op, `lo and hi need ${rows} rows`);
  if (a.pad && (!(a.pad instanceof Int32Array) || a.pad.length < rows)) fail(op, `pad must be an Int32Array of ${rows} rows`);
  if (a.rowWeight && (!(a.rowWeight instanceof Float32Array) || a.rowWeight.length < rows)) fail(op, `rowWeight must be a Float32Array of ${rows} rows`);
  if (a.mode !== 'sum' && a.mode !== 'max') fail(op, `mode must be 'sum' or 'max', got ${String(a.mode)}`);
  let last = 0;
  for (const h of a.heads) {
    if (!(h >= 0)) fail(op, `head offset ${h} is negative`);
    last = Math.max(last, h);
  }
  if (rows > 0) checkArray(op, 'q', a.q, (rows - 1) * a.qStride + last + d);
  for (let r = 0; r < rows; r++) {
    if (!(a.lo[r] >= 0 && a.lo[r] <= a.hi[r] && a.hi[r] <= n)) fail(op, `row ${r} sees keys [${a.lo[r]}, ${a.hi[r]}) outside [0, ${n}]`);
  }
}
