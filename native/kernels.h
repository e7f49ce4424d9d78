/*
 * The hot loops, written once over GCC/Clang vector extensions. Each including translation
 * unit defines VW (floats per vector) and FN(name) (a per-ISA name suffix) and is compiled
 * with its own target flags: AVX-512 (VW 16), AVX2+FMA (VW 8), baseline (VW 4: SSE2, NEON),
 * and wasm32 SIMD128 (VW 4). No libc (only compiler builtins), so the same file builds for wasm.
 */
#include <stddef.h>
#include <stdint.h>

#include "attn_args.h"

#if VW >= 8 /* the AVX2 (VW 8) and AVX-512 (VW 16) builds, x86 only */
#include <immintrin.h>
#endif

#if !defined(VW) || !defined(FN)
#error "define VW and FN before including kernels.h"
#endif

typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4), __may_alias__));

/* Register tile of the packed products: TR query rows × KB = 2·VW keys (16 accumulators on
 * AVX-512's 32 registers, 12 on the 16 registers of AVX2/SSE/wasm). */
#define KB (2 * VW)
#if VW == 16
#define TR 8
#else
#define TR 6
#endif

static inline vf LD(const float *p) { return *(const vfu *)p; }
static inline void ST(float *p, vf v) { *(vfu *)p = v; }
static inline vf SPLAT(float x) { return x - (vf){0}; /* x − 0 is exact, so this folds to a broadcast */ }
static inline vf VMAX(vf a, vf b) { vi m = a > b; return (vf)(((vi)a & m) | ((vi)b & ~m)); }
static inline vf VMIN(vf a, vf b) { vi m = a < b; return (vf)(((vi)a & m) | ((vi)b & ~m)); }

static inline float HSUM(vf v) {
  /* Halve the width with plain copies (any GCC/Clang lowers them to extracts). */
#if VW == 16
  typedef float h8 __attribute__((vector_size(32)));
  h8 l8, u8;
  __builtin_memcpy(&l8, &v, 32);
  __builtin_memcpy(&u8, (const char *)&v + 32, 32);
  l8 += u8;
#elif VW == 8
  typedef float h8 __attribute__((vector_size(32)));
  h8 l8 = v;
#endif
#if VW >= 8
  typedef float h4 __attribute__((vector_size(16)));
  h4 b, u4;
  __builtin_memcpy(&b, &l8, 16);
  __builtin_memcpy(&u4, (const char *)&l8 + 16, 16);
  b += u4;
#else
  vf b = v;
#endif
  return (b[0] + b[2]) + (b[1] + b[3]);
}

/* The four sums of a0..a3 in s[0..3]: a transpose-and-add tree, about a third of the work of
 * four HSUMs (decode's dot products are one per key). */
static inline void HSUM4(vf a0, vf a1, vf a2, vf a3, float *s) {
#if !defined(__clang__) && __GNUC__ < 12 /* no __builtin_shufflevector */
  s[0] = HSUM(a0);
  s[1] = HSUM(a1);
  s[2] = HSUM(a2);
  s[3] = HSUM(a3);
#elif VW == 16
  vf b01 = __builtin_shufflevector(a0, a1, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           __builtin_shufflevector(a0, a1, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  vf b23 = __builtin_shufflevector(a2, a3, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           __builtin_shufflevector(a2, a3, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  vf c = __builtin_shufflevector(b01, b23, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
         __builtin_shufflevector(b01, b23, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  vf d = c + __builtin_shufflevector(c, c, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  s[0] = d[0] + d[1];
  s[1] = d[4] + d[5];
  s[2] = d[8] + d[9];
  s[3] = d[12] + d[13];
#elif VW == 8
  vf b01 = __builtin_shufflevector(a0, a1, 0, 1, 2, 3, 8, 9, 10, 11) + __builtin_shufflevector(a0, a1, 4, 5, 6, 7, 12, 13, 14, 15);
  vf b23 = __builtin_shufflevector(a2, a3, 0, 1, 2, 3, 8, 9, 10, 11) + __builtin_shufflevector(a2, a3, 4, 5, 6, 7, 12, 13, 14, 15);
  vf c = __builtin_shufflevector(b01, b23, 0, 1, 4, 5, 8, 9, 12, 13) + __builtin_shufflevector(b01, b23, 2, 3, 6, 7, 10, 11, 14, 15);
  s[0] = c[0] + c[1];
  s[1] = c[2] + c[3];
  s[2] = c[4] + c[5];
  s[3] = c[6] + c[7];
#else
  vf b01 = __builtin_shufflevector(a0, a1, 0, 1, 4, 5) + __builtin_shufflevector(a0, a1, 2, 3, 6, 7);
  vf b23 = __builtin_shufflevector(a2, a3, 0, 1, 4, 5) + __builtin_shufflevector(a2, a3, 2, 3, 6, 7);
  vf c = __builtin_shufflevector(b01, b23, 0, 2, 4, 6) + __builtin_shufflevector(b01, b23, 1, 3, 5, 7);
  __builtin_memcpy(s, &c, 16);
#endif
}

static inline float HMAX(vf v) {
  float m = v[0];
  for (int i = 1; i < VW; i++) m = v[i] > m ? v[i] : m;
  return m;
}

/* e^x to ~2 ulp on [-87.3, 88.3] (inputs are clamped there): Cephes' polynomial on the
 * reduced argument, the power of two built in the exponent bits. */
static inline vf VEXP(vf x) {
  const vf magic = SPLAT(12582912.0f); /* 1.5·2^23: adding it rounds to an integer */
  x = VMIN(VMAX(x, SPLAT(-87.3f)), SPLAT(88.3f));
  vf t = x * 1.44269504088896341f + magic;
  vf n = t - magic;
  vi e = ((vi)t - (vi)magic + 127) << 23;
  vf r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  vf p = SPLAT(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  vf y = p * r * r + r + 1.0f;
  return y * (vf)e;
}

static inline float SEXP(float x) {
  vf v = VEXP(SPLAT(x));
  return v[0];
}

/* ---- element-wise and row-wise ops ---- */

void FN(rmsnorm)(float *out, const float *x, const float *w, int rows, int dim, float eps) {
  for (int r = 0; r < rows; r++) {
    const float *xr = x + (size_t)r * dim;
    float *o = out + (size_t)r * dim;
    vf a0 = SPLAT(0), a1 = SPLAT(0);
    int i = 0;
    for (; i + 2 * VW <= dim; i += 2 * VW) {
      vf u = LD(xr + i), v = LD(xr + i + VW);
      a0 += u * u;
      a1 += v * v;
    }
    for (; i + VW <= dim; i += VW) { vf u = LD(xr + i); a0 += u * u; }
    float ss = HSUM(a0 + a1);
    for (; i < dim; i++) ss += xr[i] * xr[i];
    float inv = 1.0f / __builtin_sqrtf(ss / (float)dim + eps);
    i = 0;
    for (; i + VW <= dim; i += VW) ST(o + i, LD(w + i) * (LD(xr + i) * inv));
    for (; i < dim; i++) o[i] = w[i] * (xr[i] * inv);
  }
}

void FN(rope)(float *x, int rows, int heads, int hd, const float *cos, const float *sin) {
  int half = hd >> 1;
  for (int r = 0; r < rows; r++) {
    const float *c = cos + (size_t)r * half, *s = sin + (size_t)r * half;
    for (int h = 0; h < heads; h++) {
      float *a = x + ((size_t)r * heads + h) * hd, *b = a + half;
      int j = 0;
      for (; j + VW <= half; j += VW) {
        vf av = LD(a + j), bv = LD(b + j), cv = LD(c + j), sv = LD(s + j);
        ST(a + j, av * cv - bv * sv);
        ST(b + j, bv * cv + av * sv);
      }
      for (; j < half; j++) {
        float av = a[j], bv = b[j];
        a[j] = av * c[j] - bv * s[j];
        b[j] = bv * c[j] + av * s[j];
      }
    }
  }
}

void FN(silu_mul)(float *g, const float *u, size_t n) {
  size_t i = 0;
  for (; i + VW <= n; i += VW) {
    vf v = LD(g + i);
    ST(g + i, v / (1.0f + VEXP(-v)) * LD(u + i));
  }
  for (; i < n; i++) g[i] = g[i] / (1.0f + SEXP(-g[i])) * u[i];
}

/* ---- products against rows of a matrix (x·Wᵀ, q·Kᵀ) ---- */

/* out[j] = x·w[j] (+ bias[j]) for j in [j0, j1): the m = 1 product, bound by the bandwidth
 * that streams w from DRAM. As gemv_bf16 (below): a pass streams GEMV_ROWS rows and prefetches
 * the rows GEMV_AHEAD further on into L2, because rows of a few KB end before the hardware
 * prefetcher ramps up on them (16 rows without prefetch read 15-20 GB/s in decode on Zen 5).
 * Every row is summed the same way whichever pass takes it, so any split of the rows gives the
 * same bits. */
#define GEMV_ROWS 4
#define GEMV_AHEAD 32
static inline float gemv_row_tail(float acc, const float *x, const float *wr, int p, int k) {
  for (; p < k; p++) acc += x[p] * wr[p];
  return acc;
}

static inline __attribute__((always_inline)) void gemv_rows(float *o, const float *x, const float *w, int nr, int k,
                                                            const float *bias, const float *pf) {
  vf acc[GEMV_ROWS];
  for (int r = 0; r < nr; r++) acc[r] = SPLAT(0);
  int p = 0;
  for (; p + VW <= k; p += VW) {
    vf xv = LD(x + p);
    for (int r = 0; r < nr; r++) {
      if (pf) __builtin_prefetch(pf + (size_t)r * k + p, 0, 1);
      acc[r] += xv * LD(w + (size_t)r * k + p);
    }
  }
  for (int r = 0; r < nr; r++) {
    float v = gemv_row_tail(HSUM(acc[r]), x, w + (size_t)r * k, p, k);
    o[r] = bias ? v + bias[r] : v;
  }
}

/* Rows of fewer bytes than this are streamed one at a time, in address order; longer ones
 * GEMV_ROWS at a time with software prefetch. Zen 3, AVX2, 1 thread, 256 MB of rows: one at a
 * time read f32 rows of 576 at 20.5 GB/s (4-row passes: 18) and bf16 rows of 576 at 21 (4-row
 * passes: 13.5), bf16 rows of 896 at 15 (12); from 3 KB on the 4-row passes read faster (f32
 * rows of 896: 19.3 against 17; of 1536: 22 against 20; bf16 rows of 1536: 17 against 15). */
#define GEMV_SEQ_BYTES 3072

/* x·w for one f32 row read front to back; the hardware prefetcher alone keeps up with a single
 * stream (software prefetch measured 10 % slower here). */
static inline float gemv_dot(const float *x, const float *w, int k) {
  vf a0 = SPLAT(0), a1 = SPLAT(0);
  int p = 0;
  for (; p + 2 * VW <= k; p += 2 * VW) {
    a0 += LD(x + p) * LD(w + p);
    a1 += LD(x + p + VW) * LD(w + p + VW);
  }
  for (; p + VW <= k; p += VW) a0 += LD(x + p) * LD(w + p);
  return gemv_row_tail(HSUM(a0 + a1), x, w, p, k);
}

void FN(gemv)(float *out, const float *x, const float *w, int j0, int j1, int k, const float *bias) {
  if ((size_t)k * sizeof(float) < GEMV_SEQ_BYTES) {
    for (int j = j0; j < j1; j++) {
      const float v = gemv_dot(x, w + (size_t)j * k, k);
      out[j] = bias ? v + bias[j] : v;
    }
    return;
  }
  int j = j0;
  for (; j + GEMV_ROWS <= j1; j += GEMV_ROWS) {
    const float *wb = w + (size_t)j * k;
    const float *ahead = j + GEMV_AHEAD + GEMV_ROWS <= j1 ? wb + (size_t)GEMV_AHEAD * k : 0;
    gemv_rows(out + j, x, wb, GEMV_ROWS, k, bias ? bias + j : 0, ahead);
  }
  for (; j < j1; j++) gemv_rows(out + j, x, w + (size_t)j * k, 1, k, bias ? bias + j : 0, 0);
}

/* ---- products against bf16 weights (decode steps of a model keeping a bf16 copy) ---- */

/* A bf16 is the upper half of an f32's bits, so widening is exact. One vector load of 32-bit
 * lanes holds 2·VW weights: the odd ones are already in place in the upper halves (mask the
 * lower), the even ones need a shift left by 16 (little-endian lane layout, as on x86, ARM and
 * wasm). Multiplying them by the even and odd entries of x takes 2 integer ops per 2·VW weights
 * (a zero-extending widen took 5 with GCC 12) and each step reads a whole cache line per row at
 * AVX-512 width, as the f32 gemv does. The weights are the only bf16 operand: activations and
 * sums stay f32. */
typedef uint32_t vu __attribute__((vector_size(VW * 4)));

static inline float BF16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

/* x[p..p+2·VW) split into its even and odd entries. */
static inline void DEINTERLEAVE(const float *x, vf *even, vf *odd) {
#if !defined(__clang__) && __GNUC__ < 12 /* no __builtin_shufflevector */
  for (int i = 0; i < VW; i++) {
    (*even)[i] = x[2 * i];
    (*odd)[i] = x[2 * i + 1];
  }
#else
  vf a = LD(x), b = LD(x + VW);
#if VW == 16
  *even = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  *odd = __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
#elif VW == 8
  *even = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
  *odd = __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
#else
  *even = __builtin_shufflevector(a, b, 0, 2, 4, 6);
  *odd = __builtin_shufflevector(a, b, 1, 3, 5, 7);
#endif
#endif
}

/* A pass of gemv_bf16 streams GEMV_BF16_ROWS weight rows and prefetches the rows
 * GEMV_BF16_AHEAD further on into L2. Rows of a few KB end before the hardware prefetcher ramps
 * up on them, which held a 16-row pass without prefetch to 11-13 GB/s on bf16 rows of the
 * benchmark shapes (k = 576…4864, Zen 5, one thread). With software prefetch, fewer streams do
 * better: 4 rows, 32 ahead read 24-28 GB/s (16 rows: 20-25; AVX2 builds alike). */
#define GEMV_BF16_ROWS 4
#define GEMV_BF16_AHEAD 32

/* o[r] = x·w[r] (+ bias[r]) for the `nr` bf16 rows at w (nr ≤ GEMV_BF16_ROWS, a constant once
 * inlined, so that the accumulators stay in registers), prefetching the same columns of the
 * rows at pf (NULL: none). Each row is summed the same way for any nr, so the bits do not
 * depend on how the rows were grouped. */
static inline __attribute__((always_inline)) void gemv_bf16_rows(float *o, const float *x, const uint16_t *w, int nr, int k,
                                                                 const float *bias, const uint16_t *pf) {
  const vu hi = (vu){0} + 0xffff0000u;
  vf acc[GEMV_BF16_ROWS];
  for (int r = 0; r < nr; r++) acc[r] = SPLAT(0);
  int p = 0;
  for (; p + 2 * VW <= k; p += 2 * VW) {
    vf xe, xo;
    DEINTERLEAVE(x + p, &xe, &xo);
    for (int r = 0; r < nr; r++) {
      vu u;
      __builtin_memcpy(&u, w + (size_t)r * k + p, sizeof u);
      if (pf) __builtin_prefetch(pf + (size_t)r * k + p, 0, 1);
      acc[r] += xe * (vf)(u << 16);
      acc[r] += xo * (vf)(u & hi);
    }
  }
  for (int r = 0; r < nr; r++) {
    const uint16_t *wr = w + (size_t)r * k;
    float v = HSUM(acc[r]);
    for (int q = p; q < k; q++) v += x[q] * BF16(wr[q]);
    o[r] = bias ? v + bias[r] : v;
  }
}

/* VW bf16 at p widened exactly to f32: zero-extended to 32-bit lanes and shifted into the upper
 * half (one vpmovzxwd and one shift on AVX2/AVX-512; GCC 12 splits the generic conversion into
 * five instructions there). */
static inline vf WIDEN_BF16(const uint16_t *p) {
#if VW == 16 && defined(__AVX512F__) /* (the AVX-512 emulation build has no SIMDe vpmovzxwd: generic path) */
  __m512i u = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16);
  vf f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
#elif VW == 8
  __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16);
  vf f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
#else
  typedef uint16_t vh __attribute__((vector_size(VW * 2)));
  vh h;
  __builtin_memcpy(&h, p, sizeof h);
  return (vf)(__builtin_convertvector(h, vu) << 16);
#endif
}

/* Bytes ahead of the read position that a bf16 row streamed on its own prefetches (one prefetch
 * per 64 bytes read): 4 KB read bf16 rows of 576 at 21 GB/s, none at 18 (Zen 3). */
#define GEMV_BF16_PF_BYTES 4096

/* x·w for one bf16 row read front to back, 64 bytes a step. */
static inline float gemv_bf16_dot(const float *x, const uint16_t *w, int k) {
  vf a0 = SPLAT(0), a1 = SPLAT(0);
  int p = 0;
  for (; p + 2 * VW <= k; p += 2 * VW) {
    const vf x0 = LD(x + p), x1 = LD(x + p + VW);
    if ((p & 31) == 0) __builtin_prefetch(w + p + GEMV_BF16_PF_BYTES / 2, 0, 3);
    a0 += x0 * WIDEN_BF16(w + p);
    a1 += x1 * WIDEN_BF16(w + p + VW);
  }
  for (; p + VW <= k; p += VW) a0 += LD(x + p) * WIDEN_BF16(w + p);
  float v = HSUM(a0 + a1);
  for (; p < k; p++) v += x[p] * BF16(w[p]);
  return v;
}

/* out[i][j] = x[i]·w[j] (+ bias[j]) for i < m and j in [j0, j1), out and x row-major with
 * strides n and k, w[n][k] bf16 bits: the m = 1 product of decode steps at half the bytes of
 * gemv's f32 weights. Each row (or pass of rows) serves every row of x while it sits in cache. */
void FN(gemv_bf16)(float *out, const float *x, const uint16_t *w, int m, int n, int j0, int j1, int k, const float *bias) {
  if ((size_t)k * sizeof(uint16_t) < GEMV_SEQ_BYTES) {
    for (int j = j0; j < j1; j++)
      for (int i = 0; i < m; i++) {
        const float v = gemv_bf16_dot(x + (size_t)i * k, w + (size_t)j * k, k);
        out[(size_t)i * n + j] = bias ? v + bias[j] : v;
      }
    return;
  }
  int j = j0;
  for (; j + GEMV_BF16_ROWS <= j1; j += GEMV_BF16_ROWS) {
    const uint16_t *wb = w + (size_t)j * k;
    const uint16_t *ahead = j + GEMV_BF16_AHEAD + GEMV_BF16_ROWS <= j1 ? wb + (size_t)GEMV_BF16_AHEAD * k : 0;
    for (int i = 0; i < m; i++)
      gemv_bf16_rows(out + (size_t)i * n + j, x + (size_t)i * k, wb, GEMV_BF16_ROWS, k, bias ? bias + j : 0, i == 0 ? ahead : 0);
  }
  for (; j < j1; j++)
    for (int i = 0; i < m; i++)
      gemv_bf16_rows(out + (size_t)i * n + j, x + (size_t)i * k, w + (size_t)j * k, 1, k, bias ? bias + j : 0, 0);
}

/* Packs rows [j0, j0+nb) of b[·][k] (nb ≤ KB) transposed into panel[k][KB], zero-padded, so
 * that the micro-kernel reads KB consecutive columns per step. */
void FN(pack_panel)(float *panel, const float *b, size_t ldb, int j0, int nb, int k) {
  if (nb < KB) __builtin_memset(panel, 0, sizeof(float) * (size_t)k * KB);
  for (int j = 0; j < nb; j++) {
    const float *src = b + (size_t)(j0 + j) * ldb;
    for (int p = 0; p < k; p++) panel[(size_t)p * KB + j] = src[p];
  }
}

/* c[r][0..KB) = a[r]·panel for r < nr (nr ≤ TR); rows past nr repeat a[0] and are dropped. */
void FN(micro)(float *c, size_t ldc, const float *const *a, int nr, const float *panel, int k) {
  const float *ar[TR];
  for (int r = 0; r < TR; r++) ar[r] = a[r < nr ? r : 0];
  vf acc[TR][2];
  for (int r = 0; r < TR; r++) acc[r][0] = acc[r][1] = SPLAT(0);
  for (int p = 0; p < k; p++) {
    vf b0 = LD(panel + (size_t)p * KB), b1 = LD(panel + (size_t)p * KB + VW);
    for (int r = 0; r < TR; r++) {
      vf av = SPLAT(ar[r][p]);
      acc[r][0] += av * b0;
      acc[r][1] += av * b1;
    }
  }
  for (int r = 0; r < nr; r++) {
    ST(c + r * ldc, acc[r][0]);
    ST(c + r * ldc + VW, acc[r][1]);
  }
}

/* ---- attention over a per-KV-head cache ---- */


/* Query rows of KV head g in the order p = i·group + hh (token-major), so that one tile holds
 * rows with nearly the same causal horizon. */
static inline int attn_row(const attn_args *a, int g, int p, const float **q, float **o) {
  int group = a->num_heads / a->num_kv_heads;
  int i = p / group, h = g * group + p % group;
  size_t off = (size_t)i * a->num_heads * a->head_dim + (size_t)h * a->head_dim;
  *q = a->q + off;
  *o = a->out + off;
  return a->lengths[g] - a->rows + i + 1;
}

/* Bytes of the packed keys of KV head g (KB-padded panels of [headDim][KB]). */
static inline size_t attn_packed_floats(int len, int hd) { return (size_t)((len + KB - 1) / KB) * KB * hd; }

void FN(attn_pack)(const attn_args *a, int g, float *kt) {
  int len = a->lengths[g], hd = a->head_dim;
  for (int t0 = 0; t0 < len; t0 += KB) {
    int nb = len - t0 < KB ? len - t0 : KB;
    FN(pack_panel)(kt + (size_t)t0 * hd, a->keys[g], hd, t0, nb, hd);
  }
}

/* Rows [p0, p0+nr) of KV head g (nr ≤ TR). kt: packed keys of g, or NULL to take dot products
 * straight from the cache (cheaper when too few rows share the keys to repay the packing).
 * s: TR·sld floats of scratch, sld ≥ the padded horizon. */
void FN(attn_tile)(const attn_args *a, int g, int p0, int nr, const float *kt, float *s, size_t sld) {
  int hd = a->head_dim;
  const float *K = a->keys[g], *V = a->values[g];
  const float *qr[TR];
  float *orow[TR];
  int vis[TR] = {0};
  for (int r = 0; r < nr; r++) vis[r] = attn_row(a, g, p0 + r, &qr[r], &orow[r]);
  int horizon = vis[nr - 1];

  if (kt) {
    for (int t0 = 0; t0 < horizon; t0 += KB) FN(micro)(s + t0, sld, qr, nr, kt + (size_t)t0 * hd, hd);
  } else {
    int t = 0;
    for (; t + 4 <= horizon; t += 4) {
      const float *k0 = K + (size_t)t * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
      for (int r = 0; r < nr; r++) {
        const float *qv = qr[r];
        vf a0 = SPLAT(0), a1 = SPLAT(0), a2 = SPLAT(0), a3 = SPLAT(0);
        int d = 0;
        for (; d + VW <= hd; d += VW) {
          vf x = LD(qv + d);
          a0 += x * LD(k0 + d);
          a1 += x * LD(k1 + d);
          a2 += x * LD(k2 + d);
          a3 += x * LD(k3 + d);
        }
        float *sr = s + r * sld + t;
        HSUM4(a0, a1, a2, a3, sr);
        for (; d < hd; d++) {
          sr[0] += qv[d] * k0[d];
          sr[1] += qv[d] * k1[d];
          sr[2] += qv[d] * k2[d];
          sr[3] += qv[d] * k3[d];
        }
      }
    }
    for (; t < horizon; t++) {
      const float *kr = K + (size_t)t * hd;
      for (int r = 0; r < nr; r++) {
        vf acc = SPLAT(0);
        int d = 0;
        for (; d + VW <= hd; d += VW) acc += LD(qr[r] + d) * LD(kr + d);
        float dot = HSUM(acc);
        for (; d < hd; d++) dot += qr[r][d] * kr[d];
        s[r * sld + t] = dot;
      }
    }
  }

  /* Softmax of each row over its visible keys; masked keys get probability 0 so the value
   * product below can run every row of the tile to the same horizon. */
  for (int r = 0; r < nr; r++) {
    float *sr = s + r * sld;
    int n = vis[r], t = 0;
    vf mx = SPLAT(-3.0e38f);
    for (; t + VW <= n; t += VW) { vf v = LD(sr + t) * a->scale; ST(sr + t, v); mx = VMAX(mx, v); }
    float m = HMAX(mx);
    for (; t < n; t++) { sr[t] *= a->scale; m = sr[t] > m ? sr[t] : m; }
    vf sum = SPLAT(0);
    for (t = 0; t + VW <= n; t += VW) { vf e = VEXP(LD(sr + t) - m); ST(sr + t, e); sum += e; }
    float tot = HSUM(sum);
    for (; t < n; t++) { float e = SEXP(sr[t] - m); sr[t] = e; tot += e; }
    float inv = 1.0f / tot;
    for (t = 0; t + VW <= n; t += VW) ST(sr + t, LD(sr + t) * inv);
    for (; t < n; t++) sr[t] *= inv;
    for (; t < horizon; t++) sr[t] = 0;
  }

  /* out[r] = Σ_t p[r][t]·V[t]: 4 rows × 2 vectors of columns per register tile. */
  for (int r0 = 0; r0 < nr; r0 += 4) {
    int rn = nr - r0 < 4 ? nr - r0 : 4;
    const float *pr[4];
    for (int r = 0; r < 4; r++) pr[r] = s + (size_t)(r0 + (r < rn ? r : 0)) * sld;
    int c = 0;
    for (; c + 2 * VW <= hd; c += 2 * VW) {
      vf acc[4][2];
      for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = SPLAT(0);
      for (int t = 0; t < horizon; t++) {
        const float *vr = V + (size_t)t * hd + c;
        vf v0 = LD(vr), v1 = LD(vr + VW);
        for (int r = 0; r < 4; r++) { vf pv = SPLAT(pr[r][t]); acc[r][0] += pv * v0; acc[r][1] += pv * v1; }
      }
      for (int r = 0; r < rn; r++) { ST(orow[r0 + r] + c, acc[r][0]); ST(orow[r0 + r] + c + VW, acc[r][1]); }
    }
    for (; c + VW <= hd; c += VW) {
      vf acc[4];
      for (int r = 0; r < 4; r++) acc[r] = SPLAT(0);
      for (int t = 0; t < horizon; t++) {
        vf v0 = LD(V + (size_t)t * hd + c);
        for (int r = 0; r < 4; r++) acc[r] += SPLAT(pr[r][t]) * v0;
      }
      for (int r = 0; r < rn; r++) ST(orow[r0 + r] + c, acc[r]);
    }
    for (; c < hd; c++) {
      float acc[4] = {0, 0, 0, 0};
      for (int t = 0; t < horizon; t++) {
        float v0 = V[(size_t)t * hd + c];
        for (int r = 0; r < 4; r++) acc[r] += pr[r][t] * v0;
      }
      for (int r = 0; r < rn; r++) orow[r0 + r][c] = acc[r];
    }
  }
}

/* A tight loop of independent multiply-adds: the arithmetic peak one thread can reach.
 * 12 chains cover the FMA latency × pipes of current x86 cores. */
float FN(fma_probe)(long iters) {
  vf acc[12];
  for (int j = 0; j < 12; j++) acc[j] = SPLAT(1.0f + j * 1e-3f);
  vf m = SPLAT(0.999999f), c = SPLAT(1e-7f);
  for (long i = 0; i < iters; i++) {
    for (int j = 0; j < 12; j++) acc[j] = acc[j] * m + c;
  }
  vf s = SPLAT(0);
  for (int j = 0; j < 12; j++) s += acc[j];
  return HSUM(s);
}

/* Tile geometry of this build, for callers that size scratch space. */
int FN(tile_rows)(void) { return TR; }
int FN(key_block)(void) { return KB; }

#if !defined(__wasm__)
/* ---- float64 products of Expected Attention's scoring (native builds only; wasm.c leaves them out) ----
 * The same vector width in doubles: VD lanes. Every output is one chain of multiply-adds in a
 * fixed order, so any split of the outputs over threads gives the same bits. */
#define VD (VW / 2)
typedef double vd __attribute__((vector_size(VW * 4)));
typedef double vdu __attribute__((vector_size(VW * 4), aligned(8), __may_alias__));

static inline vd LDD(const double *p) { return *(const vdu *)p; }
static inline void STD(double *p, vd v) { *(vdu *)p = v; }
static inline vd SPLATD(double x) { return x - (vd){0}; }

/* Register tile rows of both kernels: 8 × 2 accumulators on AVX-512's 32 registers, 4 × 2 else. */
#if VW == 16
#define DR 8
#else
#define DR 4
#endif

/* Adds Σ_{t0 ≤ t < t1} X[t][i + r]·X[t][j] to out[i + r][j] for r < NR and every j from the
 * vector boundary at or below i up to d (the few j < i land in the lower triangle, which the
 * caller overwrites by mirroring). */
static inline __attribute__((always_inline)) void gram_tile(double *out, const double *X, int t0, int t1, int d, int i, int NR) {
  int j = i / VD * VD;
  for (; j + 2 * VD <= d; j += 2 * VD) {
    vd a0[DR], a1[DR];
    for (int r = 0; r < NR; r++) {
      a0[r] = LDD(out + (size_t)(i + r) * d + j);
      a1[r] = LDD(out + (size_t)(i + r) * d + j + VD);
    }
    for (int t = t0; t < t1; t++) {
      const double *x = X + (size_t)t * d;
      vd u = LDD(x + j), v = LDD(x + j + VD);
      for (int r = 0; r < NR; r++) {
        vd s = SPLATD(x[i + r]);
        a0[r] += s * u;
        a1[r] += s * v;
      }
    }
    for (int r = 0; r < NR; r++) {
      STD(out + (size_t)(i + r) * d + j, a0[r]);
      STD(out + (size_t)(i + r) * d + j + VD, a1[r]);
    }
  }
  for (; j + VD <= d; j += VD) {
    vd a0[DR];
    for (int r = 0; r < NR; r++) a0[r] = LDD(out + (size_t)(i + r) * d + j);
    for (int t = t0; t < t1; t++) {
      const double *x = X + (size_t)t * d;
      vd u = LDD(x + j);
      for (int r = 0; r < NR; r++) a0[r] += SPLATD(x[i + r]) * u;
    }
    for (int r = 0; r < NR; r++) STD(out + (size_t)(i + r) * d + j, a0[r]);
  }
  for (; j < d; j++) {
    for (int r = 0; r < NR; r++) {
      double a = out[(size_t)(i + r) * d + j];
      for (int t = t0; t < t1; t++) a += X[(size_t)t * d + i + r] * X[(size_t)t * d + j];
      out[(size_t)(i + r) * d + j] = a;
    }
  }
}

/* Rows of X per pass: a pass's rows stay in L1/L2 while every tile of the caller's share reads them. */
#define GRAM_ROWS 64

/* XᵀX for X [n][d], upper triangle (j ≥ i) of the row tiles q ≡ part (mod parts), tile q
 * holding rows [q·DR, q·DR + DR); out must start zeroed. Interleaving the tiles balances the
 * triangle over the parts. */
void FN(gram64)(double *out, const double *X, int n, int d, int part, int parts) {
  for (int t0 = 0; t0 < n; t0 += GRAM_ROWS) {
    int t1 = t0 + GRAM_ROWS < n ? t0 + GRAM_ROWS : n;
    for (int i = part * DR; i < d; i += parts * DR) {
      if (i + DR <= d) gram_tile(out, X, t0, t1, d, i, DR);
      else
        for (int r = i; r < d; r++) gram_tile(out, X, t0, t1, d, r, 1);
    }
  }
}

/* Keys per block of ea_logits64: two vectors of doubles, one key per lane. */
#define EB (2 * VD)

/* Rows [i, i + NR) of Σ_i kb_i·(μ_i + Σ_{j ≥ i} U_ij kb_j), added into l0/l1 in order of i. */
static inline __attribute__((always_inline)) void ea_rows(const double *U, const double *mu, const double *kb, int d, int i, int NR, vd *l0, vd *l1) {
  vd r0[DR], r1[DR];
  for (int r = 0; r < NR; r++) r0[r] = r1[r] = SPLATD(mu[i + r]);
  for (int j = i; j < i + NR; j++) { /* the triangle inside the tile: row i + r from column i + r on */
    vd u = LDD(kb + (size_t)j * EB), v = LDD(kb + (size_t)j * EB + VD);
    for (int r = 0; r <= j - i; r++) {
      vd w = SPLATD(U[(size_t)(i + r) * d + j]);
      r0[r] += w * u;
      r1[r] += w * v;
    }
  }
  for (int j = i + NR; j < d; j++) {
    vd u = LDD(kb + (size_t)j * EB), v = LDD(kb + (size_t)j * EB + VD);
    for (int r = 0; r < NR; r++) {
      vd w = SPLATD(U[(size_t)(i + r) * d + j]);
      r0[r] += w * u;
      r1[r] += w * v;
    }
  }
  for (int r = 0; r < NR; r++) {
    *l0 += LDD(kb + (size_t)(i + r) * EB) * r0[r];
    *l1 += LDD(kb + (size_t)(i + r) * EB + VD) * r1[r];
  }
}

#if VD == 4 && defined(__AVX2__)
/* A whole block of EB keys (rows d floats apart, d a multiple of 4) widened and interleaved,
 * kb[i·EB + b] = key b's component i: four components of four keys at a time, transposed in
 * registers (one element at a time, this took an eighth of ea_logits64's time). */
static inline void widen_keys(double *kb, const float *src, int d) {
  for (int i = 0; i < d; i += 4)
    for (int b = 0; b < EB; b += 4) {
      const __m256d a0 = _mm256_cvtps_pd(_mm_loadu_ps(src + (size_t)b * d + i)), a1 = _mm256_cvtps_pd(_mm_loadu_ps(src + (size_t)(b + 1) * d + i));
      const __m256d a2 = _mm256_cvtps_pd(_mm_loadu_ps(src + (size_t)(b + 2) * d + i)), a3 = _mm256_cvtps_pd(_mm_loadu_ps(src + (size_t)(b + 3) * d + i));
      const __m256d t0 = _mm256_unpacklo_pd(a0, a1), t1 = _mm256_unpackhi_pd(a0, a1), t2 = _mm256_unpacklo_pd(a2, a3), t3 = _mm256_unpackhi_pd(a2, a3);
      _mm256_storeu_pd(kb + (size_t)i * EB + b, _mm256_permute2f128_pd(t0, t2, 0x20));
      _mm256_storeu_pd(kb + (size_t)(i + 1) * EB + b, _mm256_permute2f128_pd(t1, t3, 0x20));
      _mm256_storeu_pd(kb + (size_t)(i + 2) * EB + b, _mm256_permute2f128_pd(t0, t2, 0x31));
      _mm256_storeu_pd(kb + (size_t)(i + 3) * EB + b, _mm256_permute2f128_pd(t1, t3, 0x31));
    }
}
#endif

/* Expected Attention logits of keys [t0, t1) of the m keys from entry s0 (t0 a multiple of
 * EB): z[k·stride + t] = Σ_i key_i·(mus[k·d + i] + Σ_{j ≥ i} quad[k·d·d + i·d + j]·key_j) for
 * the G heads k, the quadratic part left out when quad is NULL. kb: d·EB doubles of scratch,
 * the block's keys widened and interleaved (kb[i·EB + b] = component i of key b). */
void FN(ea_logits64)(double *z, const float *keys, int s0, int m, int d, int G, const double *mus, const double *quad,
                     size_t stride, int t0, int t1, double *kb) {
  for (int t = t0; t < t1; t += EB) {
    const int nb = m - t < EB ? m - t : EB;
    const float *src = keys + (size_t)(s0 + t) * d;
#if VD == 4 && defined(__AVX2__)
    if (nb == EB && d % 4 == 0) widen_keys(kb, src, d);
    else
#endif
      for (int i = 0; i < d; i++)
        for (int b = 0; b < EB; b++) kb[(size_t)i * EB + b] = b < nb ? (double)src[(size_t)b * d + i] : 0.0;
    for (int k = 0; k < G; k++) {
      const double *mu = mus + (size_t)k * d;
      vd l0 = SPLATD(0), l1 = SPLATD(0);
      if (quad) {
        const double *U = quad + (size_t)k * d * d;
        int i = 0;
        for (; i + DR <= d; i += DR) ea_rows(U, mu, kb, d, i, DR, &l0, &l1);
        for (; i < d; i++) ea_rows(U, mu, kb, d, i, 1, &l0, &l1);
      } else {
        for (int i = 0; i < d; i++) {
          vd w = SPLATD(mu[i]);
          l0 += LDD(kb + (size_t)i * EB) * w;
          l1 += LDD(kb + (size_t)i * EB + VD) * w;
        }
      }
      double lz[EB];
      STD(lz, l0);
      STD(lz + VD, l1);
      for (int b = 0; b < nb; b++) z[(size_t)k * stride + t + b] = lz[b];
    }
  }
}

int FN(ea_key_block)(void) { return EB; }
#endif
