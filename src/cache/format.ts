/**
 * Element types of the KV cache and their row encodings. A row is one entry's key (or value) of
 * one KV head: headDim numbers.
 *
 * - f32: 4 bytes per number.
 * - f16: IEEE binary16, rounded to nearest even (relative error ≤ 2⁻¹¹ in the normal range).
 * - bf16: the upper half of the f32, rounded to nearest even (relative error ≤ 2⁻⁸).
 * - q8_0 (ggml's layout): blocks of 32 numbers along headDim, each one f16 scale d then 32 int8
 *   q with x ≈ q·d, d ≥ max|x|/127 so every |x − q·d| ≤ d/2. 34 bytes per 32 numbers.
 * - q4_0 (ggml's layout): blocks of 32, one f16 scale d = m/−8 (m the number of largest
 *   magnitude, with its sign) then 16 bytes of 4-bit codes c, x ≈ (c − 8)·d, c clamped to
 *   [0, 15]: |x − (c − 8)·d| ≤ |d|/2 except for numbers of the other sign than m past 7.5·|d|,
 *   which clamp to 7·|d| (error ≤ |d|). 18 bytes per 32 numbers.
 *
 * When headDim is not a multiple of 32 (stories260K: 8), q8_0 and q4_0 use one block per row
 * (block = headDim), so they stay available on every model; the scale then costs 2 bytes per
 * headDim numbers instead of per 32.
 */
export const KV_DTYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const;
export type KvDtype = (typeof KV_DTYPES)[number];
/** What `--kv-dtype` / `kvDtype` accept: a type, or 'auto' (see autoKvDtype). */
export type KvDtypeOption = KvDtype | 'auto';

/** Number format of a checkpoint's weights, as far as the KV cache's default cares. */
export type CheckpointPrecision = 'f32' | 'f16' | 'bf16' | 'quantized';

/**
 * The cache type `auto` picks: the checkpoint's own precision for 16-bit checkpoints, f16 for
 * quantized ones, f32 for f32 checkpoints (so stories260K keeps a float32 cache unless asked).
 */
export function autoKvDtype(precision: CheckpointPrecision): KvDtype {
  return precision === 'quantized' ? 'f16' : precision;
}

/** Resolves a user's choice (undefined = auto) against the checkpoint's precision. */
export function resolveKvDtype(option: string | undefined, precision: CheckpointPrecision): KvDtype {
  if (option === undefined || option === 'auto') return autoKvDtype(precision);
  if (!(KV_DTYPES as readonly string[]).includes(option)) throw new Error(`unknown KV cache type ${JSON.stringify(option)}; expected one of ${KV_DTYPES.join(', ')}, auto`);
  return option as KvDtype;
}

export interface KvFormat {
  readonly dtype: KvDtype;
  readonly headDim: number;
  /** Numbers per quantization block (q8_0, q4_0), 0 for the float types. */
  readonly block: number;
  /** Bytes of one block (scale + codes), 0 for the float types. */
  readonly blockBytes: number;
  /** Bytes of one row (one entry's key or value of one head); always even. */
  readonly rowBytes: number;
}

export function kvFormat(dtype: KvDtype, headDim: number): KvFormat {
  if (!(KV_DTYPES as readonly string[]).includes(dtype)) throw new Error(`unknown KV cache type ${JSON.stringify(dtype)}; expected one of ${KV_DTYPES.join(', ')}`);
  if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2 !== 0) throw new Error(`KV cache: headDim ${headDim} must be an even integer ≥ 2`);
  if (dtype === 'f32') return { dtype, headDim, block: 0, blockBytes: 0, rowBytes: 4 * headDim };
  if (dtype === 'f16' || dtype === 'bf16') return { dtype, headDim, block: 0, blockBytes: 0, rowBytes: 2 * headDim };
  const block = headDim % 32 === 0 ? 32 : headDim;
  const codes = dtype === 'q8_0' ? block : block / 2;
  const blockBytes = 2 + codes + (codes % 2);
  return { dtype, headDim, block, blockBytes, rowBytes: (headDim / block) * blockBytes };
}

// ---- f16 / bf16 conversions ----

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** f16 bits of x, rounded to nearest even; overflow → ±inf, NaN stays NaN. */
export function f16Bits(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal f16 (or zero): shift the implicit-one mantissa right, round to nearest even.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1))) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

/** f16 bits → f32 value, every one of the 65536 precomputed. */
export const F16_TO_F32 = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1, e = (h >>> 10) & 0x1f, m = h & 0x3ff;
    t[h] = e === 0 ? s * m * 2 ** -24 : e === 0x1f ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
})();

/** bf16 bits of x, rounded to nearest even (NaN stays a quiet NaN). */
export function bf16BitsOf(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0];
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x0040;
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

export function bf16Value(bits: number): number {
  u32buf[0] = bits << 16;
  return f32buf[0];
}

/** The smallest f16 value ≥ x (x ≥ 0 finite): a scale that never lets a code overflow. */
function f16Ceil(x: number): number {
  let h = f16Bits(x);
  if (F16_TO_F32[h] < x) h++;
  return h;
}

// ---- row encoders and decoders over a page's views ----

/** The typed views of one page's bytes (see KvPage). */
export interface RowViews {
  u8: Uint8Array;
  u16: Uint16Array;
  i8: Int8Array;
  f32: Float32Array;
}

/** Encodes src[so … so+headDim) into the row at byte offset `at` of `p`. */
export function encodeRow(f: KvFormat, src: Float32Array, so: number, p: RowViews, at: number): void {
  const hd = f.headDim;
  switch (f.dtype) {
    case 'f32':
      p.f32.set(src.subarray(so, so + hd), at >>> 2);
      return;
    case 'f16': {
      const o = at >>> 1;
      for (let d = 0; d < hd; d++) p.u16[o + d] = f16Bits(src[so + d]);
      return;
    }
    case 'bf16': {
      const o = at >>> 1;
      for (let d = 0; d < hd; d++) p.u16[o + d] = bf16BitsOf(src[so + d]);
      return;
    }
    case 'q8_0':
      for (let b0 = 0, bo = at; b0 < hd; b0 += f.block, bo += f.blockBytes) {
        let amax = 0;
        for (let d = 0; d < f.block; d++) amax = Math.max(amax, Math.abs(src[so + b0 + d]));
        const h = f16Ceil(amax / 127), scale = F16_TO_F32[h], inv = scale > 0 ? 1 / scale : 0;
        p.u16[bo >>> 1] = h;
        for (let d = 0; d < f.block; d++) p.i8[bo + 2 + d] = Math.max(-127, Math.min(127, Math.round(src[so + b0 + d] * inv)));
      }
      return;
    case 'q4_0':
      for (let b0 = 0, bo = at; b0 < hd; b0 += f.block, bo += f.blockBytes) {
        let m = 0;
        for (let d = 0; d < f.block; d++) if (Math.abs(src[so + b0 + d]) > Math.abs(m)) m = src[so + b0 + d];
        const h = f16Bits(m / -8), scale = F16_TO_F32[h], inv = scale !== 0 ? 1 / scale : 0;
        p.u16[bo >>> 1] = h;
        const half = f.block / 2;
        for (let d = 0; d < half; d++) {
          const lo = Math.max(0, Math.min(15, Math.round(src[so + b0 + d] * inv) + 8));
          const hi = Math.max(0, Math.min(15, Math.round(src[so + b0 + half + d] * inv) + 8));
          p.u8[bo + 2 + d] = lo | (hi << 4);
        }
      }
      return;
  }
}

/** Decodes the row at byte offset `at` of `p` into dst[o … o+headDim). */
export function decodeRow(f: KvFormat, p: RowViews, at: number, dst: Float32Array, o: number): void {
  const hd = f.headDim;
  switch (f.dtype) {
    case 'f32':
      dst.set(p.f32.subarray(at >>> 2, (at >>> 2) + hd), o);
      return;
    case 'f16': {
      const s = at >>> 1;
      for (let d = 0; d < hd; d++) dst[o + d] = F16_TO_F32[p.u16[s + d]];
      return;
    }
    case 'bf16': {
      const s = at >>> 1;
      for (let d = 0; d < hd; d++) dst[o + d] = BF16_TO_F32[p.u16[s + d]];
      return;
    }
    case 'q8_0':
      for (let b0 = 0, bo = at; b0 < hd; b0 += f.block, bo += f.blockBytes) {
        const scale = F16_TO_F32[p.u16[bo >>> 1]];
        for (let d = 0; d < f.block; d++) dst[o + b0 + d] = p.i8[bo + 2 + d] * scale;
      }
      return;
    case 'q4_0':
      for (let b0 = 0, bo = at; b0 < hd; b0 += f.block, bo += f.blockBytes) {
        const scale = F16_TO_F32[p.u16[bo >>> 1]], half = f.block / 2;
        for (let d = 0; d < half; d++) {
          const c = p.u8[bo + 2 + d];
          dst[o + b0 + d] = ((c & 15) - 8) * scale;
          dst[o + b0 + half + d] = ((c >>> 4) - 8) * scale;
        }
      }
      return;
  }
}

/** bf16 bits → f32 value, every one of the 65536 precomputed. */
export const BF16_TO_F32 = (() => {
  const bits = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) bits[h] = h << 16;
  return new Float32Array(bits.buffer);
})();
