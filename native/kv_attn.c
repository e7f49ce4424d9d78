/* Attention read in place from the paged KV cache (src/cache/kv-cache.ts), in every element
 * type: f32, f16, bf16, q8_0, q4_0. Compiled once per ISA (KV_ISA = base, avx2, avx512 for the
 * addon; wasm, included by native/wasm.c). No libc, so the same file builds for wasm32.
 *
 * Work is split as the contiguous kernel's (native/kernels.h attn_tile): a tile is up to KV_TQ
 * query vectors of one KV head (the GQA group's heads × consecutive rows), so every key and
 * value is read once per tile, not once per query head. Keys and values are taken a run of at
 * most KV_CH entries at a time, never crossing a page: f32 runs are read where they lie; the
 * other types are widened into an L1 buffer of KV_CH rows (F16C's vcvtph2ps on AVX2/AVX-512,
 * shifts elsewhere; q8_0/q4_0 codes × their block's scale), which every query of the tile then
 * reads. Nothing is gathered per step and no f32 copy of a head ever exists. */
#include <stddef.h>
#include <stdint.h>

#include "kv_attn.h"
#include "f16.h"

#undef FN
#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(name, KV_ISA)

typedef float v8 __attribute__((vector_size(32)));
typedef uint16_t v8u16 __attribute__((vector_size(16)));
typedef uint32_t v8u32 __attribute__((vector_size(32)));
typedef int32_t v8i32 __attribute__((vector_size(32)));
typedef int8_t v8i8 __attribute__((vector_size(8)));
typedef uint8_t v8u8 __attribute__((vector_size(8)));

#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#ifdef __wasm_simd128__
#include <wasm_simd128.h>
/* Two 4-lane halves as one v8 (the generic 8-lane conversions lower poorly to SIMD128). */
static inline v8 join4(v128_t lo, v128_t hi) {
  v8 x;
  __builtin_memcpy(&x, &lo, 16);
  __builtin_memcpy((char *)&x + 16, &hi, 16);
  return x;
}
static inline v128_t f16x4(v128_t u) {
  const v128_t em = wasm_v128_and(u, wasm_i32x4_splat(0x7fff));
  v128_t r = wasm_f32x4_mul(wasm_i32x4_shl(em, 13), wasm_f32x4_splat(0x1p112f));
  r = wasm_v128_or(r, wasm_v128_and(wasm_i32x4_ge(em, wasm_i32x4_splat(0x7c00)), wasm_i32x4_splat(0x7f800000)));
  return wasm_v128_or(r, wasm_i32x4_shl(wasm_v128_and(u, wasm_i32x4_splat(0x8000)), 16));
}
#endif

static inline v8 ld(const float *p) { v8 x; __builtin_memcpy(&x, p, 32); return x; }
static inline void st(float *p, v8 x) { __builtin_memcpy(p, &x, 32); }
static inline v8 splat(float x) { return (v8){x, x, x, x, x, x, x, x}; }
static inline v8 as_v8(v8u32 u) { v8 f; __builtin_memcpy(&f, &u, 32); return f; }
static inline v8u32 as_u32(v8 f) { v8u32 u; __builtin_memcpy(&u, &f, 32); return u; }

/* f16 → f32 by shifts: the 15 magnitude bits moved to f32's place and scaled by 2^112 give every
 * normal and subnormal exactly; exponent 31 (inf, NaN) is forced to 255. */
static inline v8 f16_shift(v8u16 h) {
  v8u32 u = __builtin_convertvector(h, v8u32), em = u & 0x7fff;
  v8u32 r = as_u32(as_v8(em << 13) * splat(0x1p112f));
  r |= (v8u32)(em >= 0x7c00) & 0x7f800000u;
  return as_v8(r | ((u & 0x8000) << 16));
}

static inline v8 ld_f16(const uint8_t *p) {
#if defined(__wasm_simd128__)
  const v128_t h = wasm_v128_load(p);
  return join4(f16x4(wasm_u32x4_extend_low_u16x8(h)), f16x4(wasm_u32x4_extend_high_u16x8(h)));
#elif defined(__F16C__)
  __m256 f = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
  v8 x;
  __builtin_memcpy(&x, &f, 32);
  return x;
#else
  v8u16 h;
  __builtin_memcpy(&h, p, 16);
  return f16_shift(h);
#endif
}

static inline v8 ld_bf16(const uint8_t *p) {
#if defined(__wasm_simd128__)
  const v128_t h = wasm_v128_load(p);
  return join4(wasm_i32x4_shl(wasm_u32x4_extend_low_u16x8(h), 16), wasm_i32x4_shl(wasm_u32x4_extend_high_u16x8(h), 16));
#elif defined(__AVX2__)
  __m256 f = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
  v8 x;
  __builtin_memcpy(&x, &f, 32);
  return x;
#else
  v8u16 h;
  __builtin_memcpy(&h, p, 16);
  return as_v8(__builtin_convertvector(h, v8u32) << 16);
#endif
}

static inline float bf16_value(uint16_t h) {
  const uint32_t u = (uint32_t)h << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

static inline v8 ld_i8(const uint8_t *p) {
#if defined(__wasm_simd128__)
  const v128_t c = wasm_i16x8_load8x8(p);
  return join4(wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(c)), wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(c)));
#elif defined(__AVX2__)
  __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
  v8 x;
  __builtin_memcpy(&x, &f, 32);
  return x;
#else
  v8i8 c;
  __builtin_memcpy(&c, p, 8);
  return __builtin_convertvector(c, v8);
#endif
}

/* Nibbles of bytes p[0..8): low (high = 0) or high, minus 8, as floats. */
static inline v8 ld_q4(const uint8_t *p, int high) {
#if defined(__wasm_simd128__)
  v128_t c = wasm_u16x8_load8x8(p);
  c = wasm_i16x8_sub(high ? wasm_u16x8_shr(c, 4) : wasm_v128_and(c, wasm_i16x8_splat(15)), wasm_i16x8_splat(8));
  return join4(wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(c)), wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(c)));
#elif defined(__AVX2__)
  __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
  c = high ? _mm256_srli_epi32(c, 4) : _mm256_and_si256(c, _mm256_set1_epi32(15));
  __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(c, _mm256_set1_epi32(8)));
  v8 x;
  __builtin_memcpy(&x, &f, 32);
  return x;
#else
  v8u8 c;
  __builtin_memcpy(&c, p, 8);
  v8i32 n = __builtin_convertvector(high ? c >> 4 : c & 15, v8i32) - 8;
  return __builtin_convertvector(n, v8);
#endif
}

/* e^x for x ≤ 0 (softmax arguments): 2^n·2^f with n = round(x·log₂e), 2^f by its degree-6
 * Taylor polynomial on |f| ≤ ½ (relative error ≈ 1e-7); below −87 it returns ≈ 0. */
static inline v8 v8_exp(v8 x) {
  const v8 magic = splat(12582912.0f);
  v8 y = x * splat(1.44269504088896341f);
  y = as_v8((as_u32(y) & (v8u32)(y > splat(-126.0f))) | (as_u32(splat(-126.0f)) & ~(v8u32)(y > splat(-126.0f))));
  v8 t = y + magic;
  v8i32 n = (v8i32)as_u32(t) - (v8i32)as_u32(magic);
  v8 f = (y - (t - magic)) * splat(0.693147180559945f);
  v8 p = splat(1.0f / 720);
  p = p * f + splat(1.0f / 120);
  p = p * f + splat(1.0f / 24);
  p = p * f + splat(1.0f / 6);
  p = p * f + splat(0.5f);
  p = p * f + splat(1.0f);
  p = p * f + splat(1.0f);
  return as_v8(as_u32(p) + (v8u32)(n << 23));
}

static inline float hsum(v8 x) { return ((x[0] + x[4]) + (x[1] + x[5])) + ((x[2] + x[6]) + (x[3] + x[7])); }

/* The four sums of a[0..4) into z[0..4): a transpose-and-add tree. */
static inline void hsum4(const v8 *a, float *z) {
#if !defined(__clang__) && __GNUC__ < 12 /* no __builtin_shufflevector */
  for (int i = 0; i < 4; i++) z[i] = hsum(a[i]);
#else
  const v8 b01 = __builtin_shufflevector(a[0], a[1], 0, 1, 2, 3, 8, 9, 10, 11) + __builtin_shufflevector(a[0], a[1], 4, 5, 6, 7, 12, 13, 14, 15);
  const v8 b23 = __builtin_shufflevector(a[2], a[3], 0, 1, 2, 3, 8, 9, 10, 11) + __builtin_shufflevector(a[2], a[3], 4, 5, 6, 7, 12, 13, 14, 15);
  const v8 c = __builtin_shufflevector(b01, b23, 0, 1, 4, 5, 8, 9, 12, 13) + __builtin_shufflevector(b01, b23, 2, 3, 6, 7, 10, 11, 14, 15);
  for (int i = 0; i < 4; i++) z[i] = c[2 * i] + c[2 * i + 1];
#endif
}

/* Row t of the next run (pn rows of rb bytes at pf; pf NULL: none) into cache, a row per row of
 * the current run, so that the next run streams in while this one computes. A decode step reads
 * every page once from DRAM (30 layers of a 2048-entry f32 cache are 94 MB); the hardware
 * prefetcher stops at each 4 KB page, and a burst of a whole run's prefetches stalls the core
 * (Zen 3: measured in the hot loop). */
static inline void prefetch_row(const uint8_t *pf, int pn, int t, size_t rb) {
  if (pf && t < pn)
    for (size_t b = 0; b < rb; b += 64) __builtin_prefetch(pf + (size_t)t * rb + b, 0, 3);
}

/* The n rows at `src` (row_bytes apart, keys or values of one page) as f32 rows of hd floats.
 * f32 rows are returned in place; the others are widened into buf. */
static const float *rows_f32(const kv_attn_args *a, const uint8_t *src, int n, float *buf) {
  const int hd = a->head_dim;
  if (a->dtype == KV_F32) return (const float *)(const void *)src;
  if (a->dtype == KV_F16 || a->dtype == KV_BF16) {
    /* Rows of 16-bit numbers are contiguous: one run of n·hd. */
    const int m = n * hd;
    int d = 0;
    if (a->dtype == KV_F16) {
      for (; d + 8 <= m; d += 8) st(buf + d, ld_f16(src + 2 * d));
      for (; d < m; d++) buf[d] = f16_value((uint16_t)(src[2 * d] | src[2 * d + 1] << 8));
    } else {
      for (; d + 8 <= m; d += 8) st(buf + d, ld_bf16(src + 2 * d));
      for (; d < m; d++) buf[d] = bf16_value((uint16_t)(src[2 * d] | src[2 * d + 1] << 8));
    }
    return buf;
  }
  const int B = a->block, half = B / 2;
  for (int t = 0; t < n; t++) {
    const uint8_t *row = src + (size_t)t * a->row_bytes;
    float *o = buf + (size_t)t * hd;
    for (int b0 = 0; b0 < hd; b0 += B, row += a->block_bytes) {
      const float scale = f16_value((uint16_t)(row[0] | row[1] << 8));
      const v8 sv = splat(scale);
      const uint8_t *c = row + 2;
      int j = 0;
      if (a->dtype == KV_Q8_0) {
        for (; j + 8 <= B; j += 8) st(o + b0 + j, ld_i8(c + j) * sv);
        for (; j < B; j++) o[b0 + j] = (float)(int8_t)c[j] * scale;
      } else {
        for (; j + 8 <= half; j += 8) {
          st(o + b0 + j, ld_q4(c + j, 0) * sv);
          st(o + b0 + half + j, ld_q4(c + j, 1) * sv);
        }
        for (; j < half; j++) {
          o[b0 + j] = (float)((c[j] & 15) - 8) * scale;
          o[b0 + half + j] = (float)((c[j] >> 4) - 8) * scale;
        }
      }
    }
  }
  return buf;
}

static inline int32_t position(const kv_attn_args *a, const uint8_t *const *pages, int t) {
  int32_t p;
  __builtin_memcpy(&p, pages[t / a->page_entries] + a->positions_offset + 4 * (size_t)(t % a->page_entries), 4);
  return p;
}

/* The first entry of a head (positions ascending) at a position > from, among [0, n). */
static int first_after(const kv_attn_args *a, const uint8_t *const *pages, int n, int32_t from) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (position(a, pages, mid) <= from) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static inline float f16_scalar(const uint8_t *p) {
  const uint16_t h = (uint16_t)(p[0] | p[1] << 8);
#ifdef __F16C__
  return _cvtsh_ss(h);
#else
  return f16_value(h);
#endif
}

/* Numbers [c, c + 8) of a row stored as dt, widened in registers; for the quantized types, c is
 * inside the block at `row` (a block's codes, before its scale). */
static inline __attribute__((always_inline)) v8 ld_col8(int dt, const uint8_t *row, int c) {
  switch (dt) {
    case KV_F32: return ld((const float *)(const void *)row + c);
    case KV_F16: return ld_f16(row + 2 * c);
    case KV_BF16: return ld_bf16(row + 2 * c);
    case KV_Q8_0: return ld_i8(row + 2 + c);
    default: return c < 16 ? ld_q4(row + 2 + c, 0) : ld_q4(row + 2 + c - 16, 1);
  }
}

/* Numbers per column step: a quantized block (32, one scale) or 8. */
#define KV_STEP(dt) ((dt) >= KV_Q8_0 ? 32 : 8)
#define KV_BLOCK_BYTES(dt) ((dt) == KV_Q8_0 ? 34 : 18)

/* Scores s[r·sld + t0 + t] = scale·q_r·k_t for the n rows at K (row_bytes apart, stored as dt):
 * two keys × R ≤ 4 queries per register tile, each key widened once for every query. */
static inline __attribute__((always_inline)) void score_tile(int dt, int R, const float *const *q, const uint8_t *K, size_t rb, int hd, float sc, int t0, int n, float *s, size_t sld,
                                                             const uint8_t *pf, int pn) {
  int t = 0;
  if (R <= 3 && dt != KV_F32 && dt <= KV_BF16) {
    /* Four keys × up to three queries (12 accumulators): each key widened once for every
     * query, the four sums of a query reduced together. */
    for (; t < n; t += 4) {
      const int m = n - t < 4 ? n - t : 4;
      const uint8_t *k[4];
      for (int i = 0; i < 4; i++) k[i] = K + (size_t)(t + (i < m ? i : 0)) * rb;
      for (int i = 0; i < m; i++) prefetch_row(pf, pn, t + i, rb);
      v8 acc[3][4];
      for (int r = 0; r < R; r++)
        for (int i = 0; i < 4; i++) acc[r][i] = splat(0);
      for (int c = 0; c < hd; c += 8)
        for (int i = 0; i < 4; i++) {
          const v8 x = ld_col8(dt, k[i], c);
          for (int r = 0; r < R; r++) acc[r][i] += ld(q[r] + c) * x;
        }
      for (int r = 0; r < R; r++) {
        float z[4];
        hsum4(acc[r], z);
        for (int i = 0; i < m; i++) s[r * sld + t0 + t + i] = z[i] * sc;
      }
    }
    return;
  }
  for (; t + 2 <= n; t += 2) {
    const uint8_t *k0 = K + (size_t)t * rb, *k1 = k0 + rb;
    prefetch_row(pf, pn, t, rb);
    prefetch_row(pf, pn, t + 1, rb);
    v8 acc[4][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = splat(0);
    for (int c = 0; c < hd; c += KV_STEP(dt)) {
      /* One scale per block, applied to the widened codes in registers. */
      const uint8_t *b0 = dt >= KV_Q8_0 ? k0 + (c >> 5) * KV_BLOCK_BYTES(dt) : k0, *b1 = dt >= KV_Q8_0 ? k1 + (c >> 5) * KV_BLOCK_BYTES(dt) : k1;
      const v8 s0 = splat(dt >= KV_Q8_0 ? f16_scalar(b0) : 1), s1 = splat(dt >= KV_Q8_0 ? f16_scalar(b1) : 1);
      for (int j = 0; j < KV_STEP(dt); j += 8) {
        v8 x0 = ld_col8(dt, b0, dt >= KV_Q8_0 ? j : c + j), x1 = ld_col8(dt, b1, dt >= KV_Q8_0 ? j : c + j);
        if (dt >= KV_Q8_0) {
          x0 *= s0;
          x1 *= s1;
        }
        for (int r = 0; r < R; r++) {
          const v8 qv = ld(q[r] + c + j);
          acc[r][0] += qv * x0;
          acc[r][1] += qv * x1;
        }
      }
    }
    for (int r = 0; r < R; r++) {
      s[r * sld + t0 + t] = hsum(acc[r][0]) * sc;
      s[r * sld + t0 + t + 1] = hsum(acc[r][1]) * sc;
    }
  }
  if (t < n) {
    const uint8_t *k0 = K + (size_t)t * rb;
    v8 acc[4];
    for (int r = 0; r < R; r++) acc[r] = splat(0);
    for (int c = 0; c < hd; c += KV_STEP(dt)) {
      const uint8_t *b0 = dt >= KV_Q8_0 ? k0 + (c >> 5) * KV_BLOCK_BYTES(dt) : k0;
      const v8 s0 = splat(dt >= KV_Q8_0 ? f16_scalar(b0) : 1);
      for (int j = 0; j < KV_STEP(dt); j += 8) {
        v8 x0 = ld_col8(dt, b0, dt >= KV_Q8_0 ? j : c + j);
        if (dt >= KV_Q8_0) x0 *= s0;
        for (int r = 0; r < R; r++) acc[r] += ld(q[r] + c + j) * x0;
      }
    }
    for (int r = 0; r < R; r++) s[r * sld + t0 + t] = hsum(acc[r]) * sc;
  }
}

/* o_r += Σ_t p_r[t]·v_t for the n rows at V (row_bytes apart, stored as dt): R ≤ 4 queries × 16
 * columns per register tile, each value widened once for every query. */
static inline __attribute__((always_inline)) void value_tile(int dt, int R, float *const *o, const uint8_t *V, size_t rb, int hd, int t0, int n, const float *s, size_t sld,
                                                             const uint8_t *pf, int pn) {
  for (int c = 0; c < hd; c += 16) {
    v8 acc[4][2];
    for (int r = 0; r < R; r++) {
      acc[r][0] = ld(o[r] + c);
      acc[r][1] = ld(o[r] + c + 8);
    }
    for (int t = 0; t < n; t++) {
      const uint8_t *vr = V + (size_t)t * rb;
      if (c == 0) prefetch_row(pf, pn, t, rb);
      v8 v0, v1;
      if (dt >= KV_Q8_0) {
        const uint8_t *b = vr + (c >> 5) * KV_BLOCK_BYTES(dt);
        const v8 sv = splat(f16_scalar(b));
        v0 = ld_col8(dt, b, c & 31) * sv;
        v1 = ld_col8(dt, b, (c & 31) + 8) * sv;
      } else {
        v0 = ld_col8(dt, vr, c);
        v1 = ld_col8(dt, vr, c + 8);
      }
      for (int r = 0; r < R; r++) {
        const v8 pv = splat(s[r * sld + t0 + t]);
        acc[r][0] += pv * v0;
        acc[r][1] += pv * v1;
      }
    }
    for (int r = 0; r < R; r++) {
      st(o[r] + c, acc[r][0]);
      st(o[r] + c + 8, acc[r][1]);
    }
  }
}

/* One run of n entries from page bytes `src` (keys or values) for the nr queries of a tile, in
 * groups of four queries; dt, R constant in each instance. */
#define KV_BY_R(call)                          \
  switch (R) {                                 \
    case 1: call(1); break;                    \
    case 2: call(2); break;                    \
    case 3: call(3); break;                    \
    default: call(4); break;                   \
  }

static inline __attribute__((always_inline)) void run_dt(int dt, int values, const float *const *q, float *const *o, int nr, const uint8_t *src, size_t rb, int hd, float sc, int t0, int n, float *s, size_t sld,
                                                         const uint8_t *pf, int pn) {
  for (int r0 = 0; r0 < nr; r0 += 4) {
    const int R = nr - r0 < 4 ? nr - r0 : 4;
#define KV_SCORE(k) score_tile(dt, k, q + r0, src, rb, hd, sc, t0, n, s + r0 * sld, sld, r0 ? 0 : pf, pn)
#define KV_VALUE(k) value_tile(dt, k, o + r0, src, rb, hd, t0, n, s + r0 * sld, sld, r0 ? 0 : pf, pn)
    if (values) { KV_BY_R(KV_VALUE) } else { KV_BY_R(KV_SCORE) }
#undef KV_SCORE
#undef KV_VALUE
  }
}

/* The eight sums of a[0..8) as one vector: a transpose-and-add tree, a fifth of the work of
 * eight hsums. */
static inline v8 hsum8(const v8 *a) {
#if !defined(__clang__) && __GNUC__ < 12 /* no __builtin_shufflevector */
  v8 d;
  for (int i = 0; i < 8; i++) d[i] = hsum(a[i]);
  return d;
#else
  v8 b[4];
  for (int i = 0; i < 4; i++)
    b[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(a[2 * i], a[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15);
  const v8 c0 = __builtin_shufflevector(b[0], b[1], 0, 1, 4, 5, 8, 9, 12, 13) + __builtin_shufflevector(b[0], b[1], 2, 3, 6, 7, 10, 11, 14, 15);
  const v8 c1 = __builtin_shufflevector(b[2], b[3], 0, 1, 4, 5, 8, 9, 12, 13) + __builtin_shufflevector(b[2], b[3], 2, 3, 6, 7, 10, 11, 14, 15);
  return __builtin_shufflevector(c0, c1, 0, 2, 4, 6, 8, 10, 12, 14) + __builtin_shufflevector(c0, c1, 1, 3, 5, 7, 9, 11, 13, 15);
#endif
}

/* Decode's scores (a tile of at most four queries): s[r·sld + t0 + t] = sc·q_r·k_t for the n f32
 * rows at K (stride floats apart), eight keys per query at a time, summed into one vector of eight
 * scores. The keys stay in L1 across the queries; the sums need no per-key reduction. */
static void score_few(int nr, const float *const *q, const float *K, size_t stride, int hd, float sc, int t0, int n, float *s, size_t sld,
                      const uint8_t *pf, int pn, size_t prb) {
  for (int r = 0; r < nr; r++) {
    for (int t = 0; t < n; t += 8) {
      const int m = n - t < 8 ? n - t : 8;
      if (r == 0)
        for (int i = 0; i < m; i++) prefetch_row(pf, pn, t + i, prb);
      const float *k[8];
      for (int i = 0; i < 8; i++) k[i] = K + (size_t)(t + (i < m ? i : 0)) * stride;
      v8 acc[8];
      for (int i = 0; i < 8; i++) acc[i] = splat(0);
      for (int c = 0; c < hd; c += 8) {
        const v8 qv = ld(q[r] + c);
        for (int i = 0; i < 8; i++) acc[i] += qv * ld(k[i] + c);
      }
      const v8 z = hsum8(acc) * splat(sc);
      if (m == 8) st(s + r * sld + t0 + t, z);
      else
        for (int i = 0; i < m; i++) s[r * sld + t0 + t + i] = z[i];
    }
  }
}

/* Decode's value sums: o_r += Σ_t p_r[t]·v_t for the n f32 rows at V (stride floats apart), a
 * query at a time over whole rows (64 columns in eight registers). The first query reads the
 * run from memory row after row, in address order; the others find it in L1. */
static void value_few(int nr, float *const *o, const float *V, size_t stride, int hd, int t0, int n, const float *s, size_t sld,
                      const uint8_t *pf, int pn, size_t prb) {
  for (int r = 0; r < nr; r++) {
    const float *p = s + r * sld + t0;
    int c0 = 0;
    for (; c0 + 64 <= hd; c0 += 64) {
      v8 acc[8];
      for (int j = 0; j < 8; j++) acc[j] = ld(o[r] + c0 + 8 * j);
      for (int t = 0; t < n; t++) {
        if (r == 0 && c0 == 0) prefetch_row(pf, pn, t, prb);
        const v8 pv = splat(p[t]);
        const float *row = V + (size_t)t * stride + c0;
        for (int j = 0; j < 8; j++) acc[j] += pv * ld(row + 8 * j);
      }
      for (int j = 0; j < 8; j++) st(o[r] + c0 + 8 * j, acc[j]);
    }
    for (int c = c0; c < hd; c += 8) {
      v8 acc = ld(o[r] + c);
      for (int t = 0; t < n; t++) {
        if (r == 0 && c0 == 0 && c == 0) prefetch_row(pf, pn, t, prb);
        acc += splat(p[t]) * ld(V + (size_t)t * stride + c);
      }
      st(o[r] + c, acc);
    }
  }
}

/* Prefill's scores: s[r·sld + t0 + t] = sc·q_r·k_t for a tile of many queries, from the run's
 * keys transposed into kt[d·KV_CH + t] (t < n, zero up to the next 16). R queries × 16 keys per
 * register tile (12 accumulators at R = 6), each score one multiply-add chain over d in order:
 * no horizontal sums, which cost the two-keys-by-four-queries tile more than its products. */
static inline __attribute__((always_inline)) void score_packed_rows(int R, const float *const *q, const float *kt, int hd, float sc, int t0, int n,
                                                                    float *s, size_t sld) {
  for (int tb = 0; tb < n; tb += 16) {
    v8 acc[6][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = splat(0);
    for (int d = 0; d < hd; d++) {
      const v8 k0 = ld(kt + (size_t)d * KV_CH + tb), k1 = ld(kt + (size_t)d * KV_CH + tb + 8);
      for (int r = 0; r < R; r++) {
        const v8 qv = splat(q[r][d]);
        acc[r][0] += qv * k0;
        acc[r][1] += qv * k1;
      }
    }
    const int m = n - tb < 16 ? n - tb : 16;
    for (int r = 0; r < R; r++) {
      float *out = s + r * sld + t0 + tb;
      const v8 a0 = acc[r][0] * splat(sc), a1 = acc[r][1] * splat(sc);
      if (m == 16) {
        st(out, a0);
        st(out + 8, a1);
      } else
        for (int j = 0; j < m; j++) out[j] = j < 8 ? a0[j] : a1[j - 8];
    }
  }
}

/* kt[(d0 + j)·KV_CH + t0 + i] = rows[(t0 + i)·stride + d0 + j] for i, j < 8: an 8×8 transpose in
 * registers (unpack pairs, then quads, then halves). */
static inline void transpose8(float *kt, const float *rows, size_t stride, int t0, int d0) {
  v8 r[8], u[8];
  for (int i = 0; i < 8; i++) r[i] = ld(rows + (size_t)(t0 + i) * stride + d0);
#if !defined(__clang__) && __GNUC__ < 12 /* no __builtin_shufflevector */
  for (int j = 0; j < 8; j++)
    for (int i = 0; i < 8; i++) u[j][i] = r[i][j];
#else
  v8 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    r[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    r[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    r[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int j = 0; j < 4; j++) {
    u[j] = __builtin_shufflevector(r[j], r[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    u[j + 4] = __builtin_shufflevector(r[j], r[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
#endif
  for (int j = 0; j < 8; j++) st(kt + (size_t)(d0 + j) * KV_CH + t0, u[j]);
}

static void score_packed(int nr, const float *const *q, const float *rows, size_t stride, int hd, float sc, int t0, int n, float *s, size_t sld,
                         float *kt) {
  const int padded = (n + 15) / 16 * 16, n8 = hd % 8 ? 0 : n / 8 * 8;
  for (int t = 0; t < n8; t += 8)
    for (int d = 0; d < hd; d += 8) transpose8(kt, rows, stride, t, d);
  for (int t = n8; t < n; t++)
    for (int d = 0; d < hd; d++) kt[(size_t)d * KV_CH + t] = rows[(size_t)t * stride + d];
  for (int t = n; t < padded; t++)
    for (int d = 0; d < hd; d++) kt[(size_t)d * KV_CH + t] = 0;
  for (int r0 = 0; r0 < nr; r0 += 6) {
    const int R = nr - r0 < 6 ? nr - r0 : 6;
    const float *const *qr = q + r0;
    float *sr = s + r0 * sld;
    switch (R) {
      case 1: score_packed_rows(1, qr, kt, hd, sc, t0, n, sr, sld); break;
      case 2: score_packed_rows(2, qr, kt, hd, sc, t0, n, sr, sld); break;
      case 3: score_packed_rows(3, qr, kt, hd, sc, t0, n, sr, sld); break;
      case 4: score_packed_rows(4, qr, kt, hd, sc, t0, n, sr, sld); break;
      case 5: score_packed_rows(5, qr, kt, hd, sc, t0, n, sr, sld); break;
      default: score_packed_rows(6, qr, kt, hd, sc, t0, n, sr, sld); break;
    }
  }
}

/* Head dimensions up to which prefill's scores take score_packed: the transposed keys of a run
 * of another type than f32 (whose widened rows fill buf) sit on the stack, KV_CH·hd floats. */
#define KV_PACKED_HD 128

/* Scores (values = 0) or value sums (values = 1) over one run of n entries of a page. */
static void run(const kv_attn_args *a, int values, const float *const *q, float *const *o, int nr, const uint8_t *src, int t0, int n, float *s, size_t sld, float *buf,
                const uint8_t *pf, int pn) {
  const int hd = a->head_dim;
  const size_t rb = (size_t)a->row_bytes;
  const float sc = a->scale;
  /* In registers where the layout allows (head_dim a multiple of 16; quantized blocks of 32) and
   * at most one group of four queries reads the run (decode); a bigger tile widens each row once
   * into buf for all its groups. */
  if (nr <= 4 && hd % 8 == 0 && a->dtype == KV_F32) {
    /* Decode on f32 rows: whole rows a query at a time, read where they lie. (16-bit rows stay
     * on the register tiles below, which widen each number once for all the queries: widening
     * into buf first measured 10 % slower at depth 2048.) */
    const float *rows = (const float *)(const void *)src;
    if (values) value_few(nr, o, rows, rb / 4, hd, t0, n, s, sld, pf, pn, rb);
    else score_few(nr, q, rows, rb / 4, hd, sc, t0, n, s, sld, pf, pn, rb);
    return;
  }
  if (!values && nr > 4 && hd <= KV_PACKED_HD) {
    /* Prefill: f32 rows are read where they lie and transposed into buf; the others are widened
     * into buf first, then transposed onto the stack (at most KV_CH·KV_PACKED_HD floats). */
    if (a->dtype == KV_F32) {
      score_packed(nr, q, (const float *)(const void *)src, rb / 4, hd, sc, t0, n, s, sld, buf);
    } else {
      float kt[KV_CH * hd];
      score_packed(nr, q, rows_f32(a, src, n, buf), (size_t)hd, hd, sc, t0, n, s, sld, kt);
    }
    return;
  }
  const int direct = hd % 16 == 0 && (a->dtype == KV_F32 || (nr <= 4 && (a->dtype <= KV_BF16 || a->block == 32)));
  if (!direct) {
    const float *rows = rows_f32(a, src, n, buf);
    if (hd % 16 == 0) {
      run_dt(KV_F32, values, q, o, nr, (const uint8_t *)rows, 4 * (size_t)hd, hd, sc, t0, n, s, sld, 0, 0);
      return;
    }
    /* Narrow heads (stories260K's 8): plain loops. */
    for (int r = 0; r < nr; r++)
      for (int t = 0; t < n; t++) {
        const float *x = rows + (size_t)t * hd;
        if (values) {
          const float p = s[r * sld + t0 + t];
          for (int d = 0; d < hd; d++) o[r][d] += p * x[d];
        } else {
          float z = 0;
          for (int d = 0; d < hd; d++) z += q[r][d] * x[d];
          s[r * sld + t0 + t] = z * sc;
        }
      }
    return;
  }
  switch (a->dtype) {
    case KV_F32: run_dt(KV_F32, values, q, o, nr, src, rb, hd, sc, t0, n, s, sld, pf, pn); break;
    case KV_F16: run_dt(KV_F16, values, q, o, nr, src, rb, hd, sc, t0, n, s, sld, pf, pn); break;
    case KV_BF16: run_dt(KV_BF16, values, q, o, nr, src, rb, hd, sc, t0, n, s, sld, pf, pn); break;
    case KV_Q8_0: run_dt(KV_Q8_0, values, q, o, nr, src, rb, hd, sc, t0, n, s, sld, pf, pn); break;
    default: run_dt(KV_Q4_0, values, q, o, nr, src, rb, hd, sc, t0, n, s, sld, pf, pn); break;
  }
}

/* The larger of each lane pair (b where a > b is false, NaN included). */
static inline v8 vmax8(v8 b, v8 a) { return as_v8((as_u32(a) & (v8u32)(a > b)) | (as_u32(b) & ~(v8u32)(a > b))); }

/* Softmax of s_r over [lo, hi) in place; entries of [from, to) outside it become 0. */
static void softmax_range(float *s, int from, int lo, int hi, int to) {
  float mx = -3.0e38f;
  int t = lo;
  if (hi - lo >= 8) {
    /* Four running maxima: one would chain every compare-and-blend on the last (the blend keeps
     * NaN out, as the scalar loop; the maximum is exact, so the split changes no bit). */
    v8 m[4] = {ld(s + lo), ld(s + lo), ld(s + lo), ld(s + lo)};
    for (t = lo + 8; t + 32 <= hi; t += 32)
      for (int i = 0; i < 4; i++) m[i] = vmax8(m[i], ld(s + t + 8 * i));
    for (; t + 8 <= hi; t += 8) m[0] = vmax8(m[0], ld(s + t));
    const v8 m8 = vmax8(vmax8(m[0], m[1]), vmax8(m[2], m[3]));
    for (int i = 0; i < 8; i++) mx = m8[i] > mx ? m8[i] : mx;
  }
  for (; t < hi; t++) mx = s[t] > mx ? s[t] : mx;
  v8 sum = {0};
  for (t = lo; t + 8 <= hi; t += 8) {
    const v8 e = v8_exp(ld(s + t) - splat(mx));
    st(s + t, e);
    sum += e;
  }
  float tot = hsum(sum);
  for (; t < hi; t++) tot += s[t] = v8_exp(splat(s[t] - mx))[0];
  const float inv = 1.0f / tot;
  for (t = lo; t < hi; t++) s[t] *= inv;
  for (t = from; t < lo; t++) s[t] = 0;
  for (t = hi; t < to; t++) s[t] = 0;
}

/* col[t] += Σ_k p[k·sld + t] for t in [lo, hi): m ≤ 4 consecutive rows of probabilities (zero
 * outside each row's own range) summed in float32, then added in float64, while the rows are
 * still in L1. Groups of four cut the float64 traffic fourfold; folding all 32 rows of a tile at
 * once instead reads rows 16 KiB apart that share cache sets (+6 % of a 4096-token prefill). Only
 * for the passes that asked for column sums; the attention itself is untouched. */
static void add_rows(double *col, const float *p, size_t sld, int m, int lo, int hi) {
  typedef double v4d __attribute__((vector_size(32)));
  typedef float v4f __attribute__((vector_size(16)));
  int t = lo;
  for (; t + 8 <= hi; t += 8) {
    v8 c = ld(p + t);
    for (int k = 1; k < m; k++) c += ld(p + (size_t)k * sld + t);
    v4f x0, x1;
    __builtin_memcpy(&x0, &c, 16);
    __builtin_memcpy(&x1, (const char *)&c + 16, 16);
    v4d c0, c1;
    __builtin_memcpy(&c0, col + t, 32);
    __builtin_memcpy(&c1, col + t + 4, 32);
    c0 += __builtin_convertvector(x0, v4d);
    c1 += __builtin_convertvector(x1, v4d);
    __builtin_memcpy(col + t, &c0, 32);
    __builtin_memcpy(col + t + 4, &c1, 32);
  }
  for (; t < hi; t++) {
    float c = p[t];
    for (int k = 1; k < m; k++) c += p[(size_t)k * sld + t];
    col[t] += c;
  }
}

static inline int run_entries(int t, int E, int to) {
  const int n0 = (t / E + 1) * E < to ? (t / E + 1) * E - t : to - t;
  return n0 < KV_CH ? n0 : KV_CH;
}

void FN(kv_attn_tile)(const kv_attn_args *a, int g, int p0, int nr, float *s, size_t sld, float *buf) {
  /* A channel-pruned head (ThinK): its pages hold narrower key rows, so its values and positions
   * sit earlier, and its scores dot the queries' kept channels (gathered once) with those rows. */
  const kv_key_layout *kl = a->key_layouts ? a->key_layouts[g] : NULL;
  kv_attn_args pa, ka;
  const kv_attn_args *k = a;
  if (kl) {
    pa = *a;
    pa.values_offset = (size_t)a->page_entries * (size_t)kl->row_bytes;
    pa.positions_offset = pa.values_offset + (size_t)a->page_entries * (size_t)a->row_bytes;
    a = &pa;
    ka = pa;
    ka.head_dim = kl->dim;
    ka.block = kl->block;
    ka.block_bytes = kl->block_bytes;
    ka.row_bytes = kl->row_bytes;
    k = &ka;
  }
  const int group = a->num_heads / a->num_kv_heads, hd = a->head_dim, E = a->page_entries;
  const uint8_t *const *pages = a->pages[g];
  const int len = a->lengths[g];
  const float *q[KV_TQ];
  float *o[KV_TQ];
  int lo[KV_TQ] = {0}, vis[KV_TQ] = {0};
  for (int r = 0; r < nr; r++) {
    const int p = p0 + r, i = p / group, h = g * group + p % group;
    const size_t off = (size_t)i * a->num_heads * hd + (size_t)h * hd;
    q[r] = a->q + off;
    o[r] = a->out + off;
    vis[r] = len - a->rows + i + 1;
    lo[r] = a->window > 0 ? first_after(a, pages, vis[r], a->query_positions[i] - a->window) : 0;
    for (int d = 0; d < hd; d++) o[r][d] = 0;
  }
  /* Rows ascend through the tile, so the first query starts earliest and the last ends last. */
  const int from = lo[0], to = vis[nr - 1];
  const size_t rb = (size_t)a->row_bytes, krb = (size_t)k->row_bytes;
  float qc[kl ? nr * kl->dim : 1];
  const float *kq[KV_TQ];
  for (int r = 0; r < nr; r++) {
    kq[r] = q[r];
    if (!kl) continue;
    float *c = qc + (size_t)r * kl->dim;
    for (int j = 0; j < kl->dim; j++) c[j] = j < kl->n_kept ? q[r][kl->channels[j]] : 0.0f;
    kq[r] = c;
  }
  for (int t = from; t < to;) {
    const int n0 = (t / E + 1) * E < to ? (t / E + 1) * E - t : to - t, n = n0 < KV_CH ? n0 : KV_CH;
    /* The next run of keys, or after the last the first run of values (when their rows are as long). */
    const int u = t + n, more = u < to;
    const uint8_t *pf = more ? pages[u / E] + (size_t)(u % E) * krb : pages[from / E] + a->values_offset + (size_t)(from % E) * rb;
    run(k, 0, kq, o, nr, pages[t / E] + (size_t)(t % E) * krb, t, n, s, sld, buf, pf, more ? run_entries(u, E, to) : krb == rb ? run_entries(from, E, to) : 0);
    t += n;
  }
  for (int r = 0; r < nr; r++) {
    softmax_range(s + r * sld, from, lo[r], vis[r], to);
    /* Rows ascend through the tile, so a group's ranges lie within [lo of its first, vis of its last). */
    if (a->col_sums && (r % 4 == 3 || r == nr - 1))
      add_rows(a->col_sums + (size_t)g * a->col_stride, s + (r & ~3) * sld, sld, r - (r & ~3) + 1, lo[r & ~3], vis[r]);
  }
  for (int t = from; t < to;) {
    const int n0 = (t / E + 1) * E < to ? (t / E + 1) * E - t : to - t, n = n0 < KV_CH ? n0 : KV_CH;
    const int u = t + n, more = u < to;
    run(a, 1, q, o, nr, pages[t / E] + a->values_offset + (size_t)(t % E) * rb, t, n, s, sld, buf,
        more ? pages[u / E] + a->values_offset + (size_t)(u % E) * rb : 0, more ? run_entries(u, E, to) : 0);
    t += n;
  }
}
