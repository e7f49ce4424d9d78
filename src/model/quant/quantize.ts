/**
 * Quantizers from f32 rows to ggml blocks, for weights built in code (the benchmark's random
 * shapes at `--weights q8_0|q4_k`, tests). Round-to-nearest with one pass over each block: the
 * layouts are ggml's (formats.ts reads them back), the choice of scales is ours.
 */
import { blockFormat, GGML_TYPE, ggmlTypeName } from './formats.js';
import { roundToF16 } from './dot.js';

/** f32 → IEEE half bits (nearest even), for block scales. */
export function f16Bits(x: number): number {
  const f = new Float32Array([roundToF16(x)]), u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000, exp = (u >>> 23) & 0xff, mant = u & 0x7fffff;
  if (exp === 0) return sign;
  if (exp - 112 <= 0) return sign | ((mant | 0x800000) >>> (126 - exp)); // subnormal half: exact after roundToF16
  return sign | ((exp - 112) << 10) | (mant >>> 13);
}

function putF16(out: Uint8Array, at: number, x: number): number {
  const h = f16Bits(x);
  out[at] = h & 255;
  out[at + 1] = h >> 8;
  return roundToF16(x);
}

/** The formats these quantizers write. */
export const QUANTIZABLE = [GGML_TYPE.F16, GGML_TYPE.Q8_0, GGML_TYPE.Q4_0, GGML_TYPE.Q5_0, GGML_TYPE.Q4_K] as const;

/** `x` ([rows][cols] f32) as rows of `type` blocks. */
export function quantizeMatrix(type: number, x: Float32Array, rows: number, cols: number): Uint8Array {
  const fmt = blockFormat(type);
  if (!fmt || !(QUANTIZABLE as readonly number[]).includes(type)) throw new Error(`cannot quantize to ggml type ${ggmlTypeName(type)} (supported: ${QUANTIZABLE.map(ggmlTypeName).join(', ')})`);
  if (cols % fmt.blockElements !== 0) throw new Error(`cannot quantize rows of ${cols} values to ${fmt.name}: not a multiple of its block of ${fmt.blockElements}`);
  if (x.length !== rows * cols) throw new Error(`quantizeMatrix: ${x.length} values are not ${rows} × ${cols}`);
  const blocks = (rows * cols) / fmt.blockElements, out = new Uint8Array(blocks * fmt.blockBytes);
  for (let b = 0; b < blocks; b++) {
    const src = x.subarray(b * fmt.blockElements, (b + 1) * fmt.blockElements), o = b * fmt.blockBytes;
    if (type === GGML_TYPE.F16) putF16(out, o, src[0]);
    else if (type === GGML_TYPE.Q8_0) q8_0(src, out, o);
    else if (type === GGML_TYPE.Q4_0) q4_0(src, out, o);
    else if (type === GGML_TYPE.Q5_0) q5_0(src, out, o);
    else q4_K(src, out, o);
  }
  return out;
}

const amaxOf = (x: Float32Array) => x.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

/** Q8_0: d = max|x| / 127, q = round(x / d). */
function q8_0(x: Float32Array, out: Uint8Array, o: number): void {
  const d = putF16(out, o, amaxOf(x) / 127), id = d ? 1 / d : 0;
  for (let j = 0; j < 32; j++) out[o + 2 + j] = clamp(Math.round(x[j] * id), -128, 127) & 255;
}

/** Q4_0 / Q5_0: signed levels −2^(b−1) … 2^(b−1) − 1, the value of largest magnitude on the end level. */
function signedScale(x: Float32Array, half: number): number {
  let max = 0;
  for (const v of x) if (Math.abs(v) > Math.abs(max)) max = v;
  return max / -half;
}

function q4_0(x: Float32Array, out: Uint8Array, o: number): void {
  const dh = putF16(out, o, signedScale(x, 8));
  const r = Array.from(x, (v) => clamp(Math.round(dh ? v / dh : 0) + 8, 0, 15));
  for (let j = 0; j < 16; j++) out[o + 2 + j] = r[j] | (r[j + 16] << 4);
}

function q5_0(x: Float32Array, out: Uint8Array, o: number): void {
  const dh = putF16(out, o, signedScale(x, 16));
  const r = Array.from(x, (v) => clamp(Math.round(dh ? v / dh : 0) + 16, 0, 31));
  let qh = 0;
  for (let j = 0; j < 32; j++) if (r[j] & 16) qh |= 1 << j;
  out[o + 2] = qh & 255; out[o + 3] = (qh >>> 8) & 255; out[o + 4] = (qh >>> 16) & 255; out[o + 5] = (qh >>> 24) & 255;
  for (let j = 0; j < 16; j++) out[o + 6 + j] = (r[j] & 15) | ((r[j + 16] & 15) << 4);
}

/**
 * Q4_K: per sub-block of 32 an affine range [−m, m + 15·s] (m ≥ 0), the eight scales and mins
 * quantized to 6 bits against the super-block's f16 d and dmin, values rounded with the
 * quantized scales.
 */
function q4_K(x: Float32Array, out: Uint8Array, o: number): void {
  const sc = new Array<number>(8), mn = new Array<number>(8);
  for (let j = 0; j < 8; j++) {
    let lo = 0, hi = -Infinity;
    for (let l = 0; l < 32; l++) { lo = Math.min(lo, x[32 * j + l]); hi = Math.max(hi, x[32 * j + l]); }
    sc[j] = (hi - lo) / 15;
    mn[j] = -lo;
  }
  const d = putF16(out, o, Math.max(...sc) / 63), dmin = putF16(out, o + 2, Math.max(...mn) / 63);
  const qs = sc.map((s) => clamp(Math.round(d ? s / d : 0), 0, 63)), qm = mn.map((m) => clamp(Math.round(dmin ? m / dmin : 0), 0, 63));
  const s = o + 4;
  for (let j = 0; j < 4; j++) {
    out[s + j] = qs[j] | ((qs[j + 4] >> 4) << 6);
    out[s + j + 4] = qm[j] | ((qm[j + 4] >> 4) << 6);
    out[s + j + 8] = (qs[j + 4] & 15) | ((qm[j + 4] & 15) << 4);
  }
  for (let j = 0; j < 8; j++) {
    const D = Math.fround(d * qs[j]), M = Math.fround(dmin * qm[j]);
    const q = o + 16 + 32 * (j >> 1), shift = 4 * (j & 1);
    for (let l = 0; l < 32; l++) {
      const v = clamp(Math.round(D ? (x[32 * j + l] + M) / D : 0), 0, 15);
      out[q + l] |= v << shift;
    }
  }
}
