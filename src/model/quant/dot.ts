/**
 * Reference quantized matrix-vector products, as ggml computes them: the activation row is
 * quantized to 8-bit blocks (Q8_0 for Q4_0/Q5_0/Q8_0 weights, Q8_1 — which also carries the
 * block's scaled sum — for Q4_1/Q5_1, Q8_K with per-16 sums for the K-quants), each weight block
 * is multiplied with its activation block in integers, and the integer sums are scaled by the
 * two blocks' float scales (minus the weight mins times the activation sums).
 *
 * Pure TypeScript, written for clarity: the specification the native kernels are tested
 * against. Every function allocates nothing it returns except the quantized activations.
 */
import { blockFormat, f16Table, ggmlTypeName, GGML_TYPE, kScaleMin } from './formats.js';

const fr = Math.fround;

/** A float rounded to IEEE half precision (nearest, ties to even), as a number. */
export function roundToF16(x: number): number {
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  f[0] = x;
  const b = u[0], sign = (b >>> 16) & 0x8000, exp = (b >>> 23) & 0xff, mant = b & 0x7fffff;
  let h: number;
  if (exp === 0xff) h = 0x7c00 | (mant ? 0x200 : 0);
  else if (exp - 112 >= 0x1f) h = 0x7c00;
  else if (exp - 112 > 0) {
    h = ((exp - 112) << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  } else if (exp - 112 >= -10) {
    const full = mant | 0x800000, shift = 14 - (exp - 112);
    h = full >>> shift;
    const rem = full & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
  } else h = 0;
  return f16Table()[sign | h];
}

/** C's roundf: halves away from zero. */
const roundAway = (v: number) => (v < 0 ? -Math.round(-v) : Math.round(v));

/** Round to nearest, ties to even (ggml's nearest_int on a float). */
function roundEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Activations quantized in blocks: value i ≈ d[i / blockElements] · qs[i]. */
export interface Q8Row {
  type: 'q8_0' | 'q8_1' | 'q8_K';
  blockElements: number;
  d: Float32Array;
  qs: Int8Array;
  /** q8_1: d·Σqs per block (f16-rounded); q8_K: Σqs per 16 values; q8_0: empty. */
  sums: Float32Array;
}

/** Q8_0 / Q8_1: blocks of 32, d = max|x|/127 stored as f16, q = round(x/d). */
function quantize32(x: Float32Array, withSums: boolean): Q8Row {
  const nb = x.length / 32;
  const d = new Float32Array(nb), qs = new Int8Array(x.length), sums = new Float32Array(withSums ? nb : 0);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[32 * b + j]));
    const db = fr(amax / 127), id = db ? fr(1 / db) : 0;
    let sum = 0;
    for (let j = 0; j < 32; j++) sum += qs[32 * b + j] = roundAway(fr(x[32 * b + j] * id));
    d[b] = roundToF16(db);
    if (withSums) sums[b] = roundToF16(fr(sum * db));
  }
  return { type: withSums ? 'q8_1' : 'q8_0', blockElements: 32, d, qs, sums };
}

/** Q8_K: blocks of 256, scale from the value of largest magnitude (sign kept), f32 d, sums per 16. */
function quantizeK(x: Float32Array): Q8Row {
  const nb = x.length / 256;
  const d = new Float32Array(nb), qs = new Int8Array(x.length), sums = new Float32Array(x.length / 16);
  for (let b = 0; b < nb; b++) {
    let amax = 0, max = 0;
    for (let j = 0; j < 256; j++) {
      const v = x[256 * b + j];
      if (Math.abs(v) > amax) { amax = Math.abs(v); max = v; }
    }
    if (amax === 0) continue;
    const iscale = fr(-127 / max);
    for (let j = 0; j < 256; j++) qs[256 * b + j] = Math.min(127, roundEven(fr(iscale * x[256 * b + j])));
    for (let j = 0; j < 16; j++) {
      let s = 0;
      for (let l = 0; l < 16; l++) s += qs[256 * b + 16 * j + l];
      sums[16 * b + j] = s;
    }
    d[b] = fr(1 / iscale);
  }
  return { type: 'q8_K', blockElements: 256, d, qs, sums };
}

/** The activation format ggml pairs with each weight type. */
export function activationFormat(weightType: number): Q8Row['type'] {
  switch (weightType) {
    case GGML_TYPE.Q4_0: case GGML_TYPE.Q5_0: case GGML_TYPE.Q8_0: return 'q8_0';
    case GGML_TYPE.Q4_1: case GGML_TYPE.Q5_1: return 'q8_1';
    case GGML_TYPE.Q2_K: case GGML_TYPE.Q3_K: case GGML_TYPE.Q4_K: case GGML_TYPE.Q5_K: case GGML_TYPE.Q6_K: return 'q8_K';
    default: throw new Error(`no quantized dot product for ggml type ${ggmlTypeName(weightType)}`);
  }
}

/** Quantizes an activation row for products with weights of `weightType`. */
export function quantizeActivations(weightType: number, x: Float32Array): Q8Row {
  const t = activationFormat(weightType);
  const block = t === 'q8_K' ? 256 : 32;
  if (x.length % block !== 0) throw new Error(`quantizeActivations: ${x.length} values are not whole blocks of ${block}`);
  return t === 'q8_K' ? quantizeK(x) : quantize32(x, t === 'q8_1');
}

/**
 * The dot product of one weight row (whole blocks of `type` starting at byte `o` of `w`) with
 * the quantized activations `a` (from quantizeActivations(type, ·)).
 */
export function vecDot(type: number, w: Uint8Array, o: number, a: Q8Row): number {
  const fmt = blockFormat(type)!;
  if (activationFormat(type) !== a.type) throw new Error(`vecDot: ${ggmlTypeName(type)} weights need ${activationFormat(type)} activations, got ${a.type}`);
  const h = f16Table(), nb = a.qs.length / fmt.blockElements;
  const half = (at: number) => h[w[at] | (w[at + 1] << 8)];
  const y = a.qs;
  let sum = 0;
  for (let b = 0; b < nb; b++, o += fmt.blockBytes) {
    const yo = b * fmt.blockElements;
    switch (type) {
      case GGML_TYPE.Q8_0: {
        let s = 0;
        for (let j = 0; j < 32; j++) s += ((w[o + 2 + j] << 24) >> 24) * y[yo + j];
        sum += fr(s * fr(half(o) * a.d[b]));
        break;
      }
      case GGML_TYPE.Q4_0: case GGML_TYPE.Q5_0: {
        const five = type === GGML_TYPE.Q5_0, qs = o + (five ? 6 : 2);
        const qh = five ? (w[o + 2] | (w[o + 3] << 8) | (w[o + 4] << 16) | (w[o + 5] << 24)) >>> 0 : 0;
        const off = five ? 16 : 8;
        let s = 0;
        for (let j = 0; j < 16; j++) {
          const lo = (w[qs + j] & 15) | (((qh >>> j) & 1) << 4), hi = (w[qs + j] >> 4) | (((qh >>> (j + 16)) & 1) << 4);
          s += (lo - off) * y[yo + j] + (hi - off) * y[yo + j + 16];
        }
        sum += fr(s * fr(half(o) * a.d[b]));
        break;
      }
      case GGML_TYPE.Q4_1: case GGML_TYPE.Q5_1: {
        const five = type === GGML_TYPE.Q5_1, qs = o + (five ? 8 : 4);
        const qh = five ? (w[o + 4] | (w[o + 5] << 8) | (w[o + 6] << 16) | (w[o + 7] << 24)) >>> 0 : 0;
        let s = 0;
        for (let j = 0; j < 16; j++) {
          const lo = (w[qs + j] & 15) | (((qh >>> j) & 1) << 4), hi = (w[qs + j] >> 4) | (((qh >>> (j + 16)) & 1) << 4);
          s += lo * y[yo + j] + hi * y[yo + j + 16];
        }
        // x = d·q + m, so Σx·y = d·dy·Σq·qy + m·(dy·Σqy), the second factor being Q8_1's sum.
        sum += fr(fr(fr(half(o) * a.d[b]) * s) + fr(half(o + 2) * a.sums[b]));
        break;
      }
      case GGML_TYPE.Q2_K: {
        let isum = 0, mins = 0;
        for (let j = 0; j < 16; j++) {
          const sc = w[o + j];
          mins += (sc >> 4) * a.sums[16 * b + j];
          // Sub-block j: 16 values of quant byte group (j >> 3)·32 + (j & 1)·16, shift 2·((j >> 1) & 3).
          const q = o + 16 + 32 * (j >> 3) + 16 * (j & 1), shift = 2 * ((j >> 1) & 3);
          let s = 0;
          for (let l = 0; l < 16; l++) s += ((w[q + l] >> shift) & 3) * y[yo + 16 * j + l];
          isum += (sc & 15) * s;
        }
        const yd = a.d[b];
        sum += fr(fr(fr(yd * half(o + 80)) * isum) - fr(fr(yd * half(o + 82)) * mins));
        break;
      }
      case GGML_TYPE.Q3_K: {
        let isum = 0;
        for (let j = 0; j < 16; j++) {
          const low = j < 8 ? (w[o + 96 + j] & 15) : (w[o + 96 + j - 8] >> 4);
          const sc = (low | (((w[o + 104 + (j & 3)] >> (2 * (j >> 2))) & 3) << 4)) - 32;
          const q = o + 32 + 32 * (j >> 3) + 16 * (j & 1), shift = 2 * ((j >> 1) & 3), m = 1 << ((j >> 1) & 3 | ((j >> 3) << 2));
          let s = 0;
          for (let l = 0; l < 16; l++) {
            const i = 16 * (j & 1) + l;
            s += (((w[q + l] >> shift) & 3) - (w[o + i] & m ? 0 : 4)) * y[yo + 16 * j + l];
          }
          isum += sc * s;
        }
        sum += fr(fr(half(o + 108) * a.d[b]) * isum);
        break;
      }
      case GGML_TYPE.Q4_K: case GGML_TYPE.Q5_K: {
        const five = type === GGML_TYPE.Q5_K, qs = o + (five ? 48 : 16);
        let isum = 0, mins = 0;
        for (let j = 0; j < 8; j++) {
          const [sc, mn] = kScaleMin(w, o + 4, j);
          mins += mn * (a.sums[16 * b + 2 * j] + a.sums[16 * b + 2 * j + 1]);
          const q = qs + 32 * (j >> 1), shift = 4 * (j & 1), hbit = 1 << j;
          let s = 0;
          for (let l = 0; l < 32; l++) {
            const v = ((w[q + l] >> shift) & 15) + (five && w[o + 16 + l] & hbit ? 16 : 0);
            s += v * y[yo + 32 * j + l];
          }
          isum += sc * s;
        }
        const yd = a.d[b];
        sum += fr(fr(fr(yd * half(o)) * isum) - fr(fr(yd * half(o + 2)) * mins));
        break;
      }
      case GGML_TYPE.Q6_K: {
        let isum = 0;
        for (let j = 0; j < 16; j++) {
          // Sub-block j: half n = j >> 3, quarter k = (j >> 1) & 3 (which nibble/bit pair), 16 of 32.
          const n = j >> 3, k = (j >> 1) & 3, l0 = 16 * (j & 1);
          const ql = o + 64 * n + (k & 1) * 32, qh = o + 128 + 32 * n, shift = 4 * (k >> 1);
          const sc = (w[o + 192 + 8 * n + 2 * k + (j & 1)] << 24) >> 24;
          let s = 0;
          for (let l = l0; l < l0 + 16; l++) {
            const v = (((w[ql + l] >> shift) & 15) | (((w[qh + l] >> (2 * k)) & 3) << 4)) - 32;
            s += v * y[yo + 128 * n + 32 * k + l];
          }
          isum += sc * s;
        }
        sum += fr(fr(half(o + 208) * a.d[b]) * isum);
        break;
      }
      default:
        throw new Error(`no quantized dot product for ggml type ${ggmlTypeName(type)}`);
    }
  }
  return sum;
}

/**
 * out[r] = row r of the quantized matrix `w` ([rows][cols] as blocks of `type`) · x, with x
 * quantized once to the type's activation format.
 */
export function matvecQuantized(out: Float32Array, type: number, w: Uint8Array, rows: number, cols: number, x: Float32Array): void {
  const fmt = blockFormat(type);
  if (!fmt || cols % fmt.blockElements !== 0) throw new Error(`matvecQuantized: ${cols} columns are not whole ${ggmlTypeName(type)} blocks`);
  const rowBytes = (cols / fmt.blockElements) * fmt.blockBytes;
  if (w.length !== rows * rowBytes || x.length !== cols) throw new Error('matvecQuantized: array sizes do not match rows × cols');
  const a = quantizeActivations(type, x);
  for (let r = 0; r < rows; r++) out[r] = vecDot(type, w, r * rowBytes, a);
}
