/**
 * ggml's weight formats: type ids, block geometry and dequantization to f32.
 *
 * Every quantized format stores a row as consecutive blocks of `blockElements` values. Legacy
 * formats (Q4_0 … Q8_0) use blocks of 32 with one f16 scale (and min); K-quants use super-blocks
 * of 256 split into sub-blocks whose scales are themselves quantized. Arithmetic follows ggml's
 * float32 order of operations (Math.fround after each step), so the values are bit-identical.
 */

export interface BlockFormat {
  name: string;
  blockElements: number;
  blockBytes: number;
}

/** ggml type ids (ggml.h's enum ggml_type), names for error messages. */
const TYPE_NAMES: Record<number, string> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 8: 'Q8_0', 9: 'Q8_1',
  10: 'Q2_K', 11: 'Q3_K', 12: 'Q4_K', 13: 'Q5_K', 14: 'Q6_K', 15: 'Q8_K',
  16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S', 20: 'IQ4_NL', 21: 'IQ3_S', 22: 'IQ2_S', 23: 'IQ4_XS',
  24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64', 29: 'IQ1_M', 30: 'BF16', 34: 'TQ1_0', 35: 'TQ2_0', 39: 'MXFP4',
};

export const GGML_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q8_1: 9, Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14, Q8_K: 15, BF16: 30 } as const;

/** The formats whose weights we read. */
const FORMATS = new Map<number, BlockFormat>([
  [0, { name: 'F32', blockElements: 1, blockBytes: 4 }],
  [1, { name: 'F16', blockElements: 1, blockBytes: 2 }],
  [30, { name: 'BF16', blockElements: 1, blockBytes: 2 }],
  [2, { name: 'Q4_0', blockElements: 32, blockBytes: 18 }],
  [3, { name: 'Q4_1', blockElements: 32, blockBytes: 20 }],
  [6, { name: 'Q5_0', blockElements: 32, blockBytes: 22 }],
  [7, { name: 'Q5_1', blockElements: 32, blockBytes: 24 }],
  [8, { name: 'Q8_0', blockElements: 32, blockBytes: 34 }],
  [10, { name: 'Q2_K', blockElements: 256, blockBytes: 84 }],
  [11, { name: 'Q3_K', blockElements: 256, blockBytes: 110 }],
  [12, { name: 'Q4_K', blockElements: 256, blockBytes: 144 }],
  [13, { name: 'Q5_K', blockElements: 256, blockBytes: 176 }],
  [14, { name: 'Q6_K', blockElements: 256, blockBytes: 210 }],
]);

export function ggmlTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `unknown type ${type}`;
}

/** Geometry of a readable type, or null for a type we do not support. */
export function blockFormat(type: number): BlockFormat | null {
  return FORMATS.get(type) ?? null;
}

let f16Cache: Float32Array | null = null;

/** All 65536 IEEE half values as f32. */
export function f16Table(): Float32Array {
  if (f16Cache) return f16Cache;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp === 0) t[h] = sign * mant * 2 ** -24;
    else if (exp === 0x1f) t[h] = mant ? NaN : sign * Infinity;
    else t[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  return (f16Cache = t);
}

const fr = Math.fround;

/** Dequantizes `src` (whole blocks of `type`) into `out` (f32, elements in ggml order). */
export function dequantize(type: number, src: Uint8Array, out: Float32Array): void {
  const fmt = blockFormat(type);
  if (!fmt) throw new Error(`cannot dequantize ggml type ${ggmlTypeName(type)}`);
  const blocks = out.length / fmt.blockElements;
  if (!Number.isInteger(blocks) || src.length !== blocks * fmt.blockBytes) {
    throw new Error(`dequantize ${fmt.name}: ${src.length} bytes do not hold ${out.length} values`);
  }
  const h = f16Table();
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  const half = (o: number) => h[view.getUint16(o, true)];
  switch (type) {
    case 0:
      out.set(new Float32Array(src.buffer.slice(src.byteOffset, src.byteOffset + src.byteLength)));
      return;
    case 1:
      for (let i = 0; i < out.length; i++) out[i] = h[view.getUint16(2 * i, true)];
      return;
    case 30: {
      const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
      for (let i = 0; i < out.length; i++) bits[i] = view.getUint16(2 * i, true) << 16;
      return;
    }
  }
  for (let b = 0; b < blocks; b++) {
    const o = b * fmt.blockBytes, y = b * fmt.blockElements;
    switch (type) {
      case 2: dequantQ4_0(src, o, half(o), out, y); break;
      case 3: dequantQ4_1(src, o, half(o), half(o + 2), out, y); break;
      case 6: dequantQ5_0(src, o, half(o), view.getUint32(o + 2, true), out, y); break;
      case 7: dequantQ5_1(src, o, half(o), half(o + 2), view.getUint32(o + 4, true), out, y); break;
      case 8: dequantQ8_0(src, o, half(o), out, y); break;
      case 10: dequantQ2_K(src, o, half(o + 80), half(o + 82), out, y); break;
      case 11: dequantQ3_K(src, o, half(o + 108), out, y); break;
      case 12: dequantQ4_K(src, o, half(o), half(o + 2), out, y); break;
      case 13: dequantQ5_K(src, o, half(o), half(o + 2), out, y); break;
      case 14: dequantQ6_K(src, o, half(o + 208), out, y); break;
    }
  }
}

// Legacy 32-element blocks: element j of the first half sits in the low nibble of qs[j], element
// j + 16 in the high nibble; Q5 formats add a fifth bit from a 32-bit mask.

/** Q4_0: f16 d, 16 bytes of nibbles; x = (q − 8)·d. */
function dequantQ4_0(s: Uint8Array, o: number, d: number, y: Float32Array, at: number): void {
  for (let j = 0; j < 16; j++) {
    const q = s[o + 2 + j];
    y[at + j] = fr(((q & 15) - 8) * d);
    y[at + j + 16] = fr(((q >> 4) - 8) * d);
  }
}

/** Q4_1: f16 d, f16 m, nibbles; x = q·d + m. */
function dequantQ4_1(s: Uint8Array, o: number, d: number, m: number, y: Float32Array, at: number): void {
  for (let j = 0; j < 16; j++) {
    const q = s[o + 4 + j];
    y[at + j] = fr(fr((q & 15) * d) + m);
    y[at + j + 16] = fr(fr((q >> 4) * d) + m);
  }
}

/** Q5_0: f16 d, u32 high bits, nibbles; x = (q − 16)·d. */
function dequantQ5_0(s: Uint8Array, o: number, d: number, qh: number, y: Float32Array, at: number): void {
  for (let j = 0; j < 16; j++) {
    const q = s[o + 6 + j];
    const h0 = ((qh >>> j) & 1) << 4, h1 = ((qh >>> (j + 16)) & 1) << 4;
    y[at + j] = fr(((q & 15 | h0) - 16) * d);
    y[at + j + 16] = fr(((q >> 4 | h1) - 16) * d);
  }
}

/** Q5_1: f16 d, f16 m, u32 high bits, nibbles; x = q·d + m. */
function dequantQ5_1(s: Uint8Array, o: number, d: number, m: number, qh: number, y: Float32Array, at: number): void {
  for (let j = 0; j < 16; j++) {
    const q = s[o + 8 + j];
    const h0 = ((qh >>> j) & 1) << 4, h1 = ((qh >>> (j + 16)) & 1) << 4;
    y[at + j] = fr(fr((q & 15 | h0) * d) + m);
    y[at + j + 16] = fr(fr((q >> 4 | h1) * d) + m);
  }
}

/** Q8_0: f16 d, 32 int8; x = q·d. */
function dequantQ8_0(s: Uint8Array, o: number, d: number, y: Float32Array, at: number): void {
  for (let j = 0; j < 32; j++) y[at + j] = fr(((s[o + 2 + j] << 24) >> 24) * d);
}

/**
 * Q2_K: 16 bytes of (scale | min << 4) per 16 values, 64 bytes of 2-bit quants, f16 d, f16 dmin.
 * Each 128-value half reads 32 quant bytes four times (shift 0, 2, 4, 6), 16 bytes per sub-block.
 */
function dequantQ2_K(s: Uint8Array, o: number, d: number, dmin: number, y: Float32Array, at: number): void {
  let is = 0;
  for (let n = 0; n < 2; n++) {
    const q = o + 16 + 32 * n;
    for (let shift = 0; shift < 8; shift += 2) {
      for (let half = 0; half < 2; half++) {
        const sc = s[o + is++];
        const dl = fr(d * (sc & 15)), ml = fr(dmin * (sc >> 4));
        for (let l = 0; l < 16; l++) y[at++] = fr(fr(dl * ((s[q + 16 * half + l] >> shift) & 3)) - ml);
      }
    }
  }
}

/** The sixteen 6-bit scales of a Q3_K block (12 packed bytes), as signed values (−32 … 31). */
function q3kScales(s: Uint8Array, o: number, out: Int8Array): void {
  for (let j = 0; j < 16; j++) {
    const low = j < 8 ? (s[o + j] & 15) : (s[o + j - 8] >> 4);
    const high = (s[o + 8 + (j & 3)] >> (2 * (j >> 2))) & 3;
    out[j] = (low | (high << 4)) - 32;
  }
}

const q3Scales = new Int8Array(16);

/**
 * Q3_K: 32 bytes high-bit mask, 64 bytes 2-bit quants, 12 bytes of 6-bit scales, f16 d.
 * x = d·scale·(q − 4·(1 − hbit)).
 */
function dequantQ3_K(s: Uint8Array, o: number, d: number, y: Float32Array, at: number): void {
  q3kScales(s, o + 96, q3Scales);
  let is = 0, m = 1;
  for (let n = 0; n < 2; n++) {
    const q = o + 32 + 32 * n;
    for (let shift = 0; shift < 8; shift += 2) {
      for (let half = 0; half < 2; half++) {
        const dl = fr(d * q3Scales[is++]);
        for (let l = 0; l < 16; l++) {
          const i = 16 * half + l;
          const v = ((s[q + i] >> shift) & 3) - (s[o + i] & m ? 0 : 4);
          y[at++] = fr(dl * v);
        }
      }
      m <<= 1;
    }
  }
}

/** Scale and min (6 bits each) of sub-block j of a Q4_K/Q5_K block's 12 packed bytes. */
export function kScaleMin(s: Uint8Array, o: number, j: number): [number, number] {
  if (j < 4) return [s[o + j] & 63, s[o + j + 4] & 63];
  return [(s[o + j + 4] & 15) | ((s[o + j - 4] >> 6) << 4), (s[o + j + 4] >> 4) | ((s[o + j] >> 6) << 4)];
}

/** Q4_K: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles; x = d·sc·q − dmin·m. */
function dequantQ4_K(s: Uint8Array, o: number, d: number, dmin: number, y: Float32Array, at: number): void {
  for (let j = 0; j < 4; j++) {
    const q = o + 16 + 32 * j;
    const [sc1, m1] = kScaleMin(s, o + 4, 2 * j), [sc2, m2] = kScaleMin(s, o + 4, 2 * j + 1);
    const d1 = fr(d * sc1), dm1 = fr(dmin * m1), d2 = fr(d * sc2), dm2 = fr(dmin * m2);
    for (let l = 0; l < 32; l++) y[at + l] = fr(fr(d1 * (s[q + l] & 15)) - dm1);
    for (let l = 0; l < 32; l++) y[at + 32 + l] = fr(fr(d2 * (s[q + l] >> 4)) - dm2);
    at += 64;
  }
}

/** Q5_K: as Q4_K plus 32 bytes of fifth bits (bit 2j for the low nibbles of pair j, 2j+1 high). */
function dequantQ5_K(s: Uint8Array, o: number, d: number, dmin: number, y: Float32Array, at: number): void {
  for (let j = 0; j < 4; j++) {
    const q = o + 48 + 32 * j;
    const [sc1, m1] = kScaleMin(s, o + 4, 2 * j), [sc2, m2] = kScaleMin(s, o + 4, 2 * j + 1);
    const d1 = fr(d * sc1), dm1 = fr(dmin * m1), d2 = fr(d * sc2), dm2 = fr(dmin * m2);
    const u1 = 1 << (2 * j), u2 = 2 << (2 * j);
    for (let l = 0; l < 32; l++) y[at + l] = fr(fr(d1 * ((s[q + l] & 15) + (s[o + 16 + l] & u1 ? 16 : 0))) - dm1);
    for (let l = 0; l < 32; l++) y[at + 32 + l] = fr(fr(d2 * ((s[q + l] >> 4) + (s[o + 16 + l] & u2 ? 16 : 0))) - dm2);
    at += 64;
  }
}

/** Q6_K: 128 bytes low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, f16 d; x = d·sc·(q − 32). */
function dequantQ6_K(s: Uint8Array, o: number, d: number, y: Float32Array, at: number): void {
  for (let n = 0; n < 2; n++) {
    const ql = o + 64 * n, qh = o + 128 + 32 * n, sc = o + 192 + 8 * n;
    for (let l = 0; l < 32; l++) {
      const is = l >> 4, h = s[qh + l];
      const q1 = ((s[ql + l] & 15) | ((h & 3) << 4)) - 32;
      const q2 = ((s[ql + l + 32] & 15) | (((h >> 2) & 3) << 4)) - 32;
      const q3 = ((s[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
      const q4 = ((s[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
      y[at + l] = fr(fr(d * ((s[sc + is] << 24) >> 24)) * q1);
      y[at + l + 32] = fr(fr(d * ((s[sc + is + 2] << 24) >> 24)) * q2);
      y[at + l + 64] = fr(fr(d * ((s[sc + is + 4] << 24) >> 24)) * q3);
      y[at + l + 96] = fr(fr(d * ((s[sc + is + 6] << 24) >> 24)) * q4);
    }
    at += 128;
  }
}
