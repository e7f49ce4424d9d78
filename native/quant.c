/* Matrix products on weights kept in ggml's block formats, compiled once per ISA (KV_ISA = base,
 * avx2, avx512). Decode (few input rows): each input row is quantized once to 8-bit blocks — a
 * scale per 32 values for the legacy formats, per 256 with integer sums per 16 for the K-quants —
 * and every weight block is multiplied with its activation block in integers; the block's integer
 * sum is then scaled by the two float scales (and the weight mins by the activation sums). The
 * AVX2 builds multiply unsigned by signed bytes (vpmaddubsw, then vpmaddwd to 32 bits); the
 * baseline runs the same integer sums in plain C. Prefill dequantizes weight rows to f32 for the
 * GEMM's packed panels (quant_dequant, a few columns of a row at a time). Block layouts: src/model/quant/formats.ts. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "quant.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#ifndef QUANT_VNNI
#define QUANT_VNNI 0
#endif

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(name, KV_ISA)

enum { T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8, T_Q2_K = 10, T_Q3_K = 11, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14 };

/* Activation blocks: value i ≈ d·q[i]; s = d·Σq (for the formats with a min); bs = Σq per 16. */
typedef struct {
  float d, s;
  int8_t q[32];
} a32;
typedef struct {
  float d;
  int16_t bs[16];
  int8_t q[256];
} aK;

static inline float h2f(const uint8_t *p) {
  _Float16 x;
  memcpy(&x, p, 2);
  return (float)x;
}

static inline int is_k(int type) { return type >= T_Q2_K && type <= T_Q6_K; }

_Static_assert(sizeof(a32) == 40 && sizeof(aK) == 292, "activation block sizes are part of quant.h's contract");

/* ---- activations ---- */

#if defined(__AVX2__)
static inline int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}
#endif


/* x[n] → q[n] = round(x·127 / max|x|) (to nearest even); returns the scale max|x| / 127 and
 * *sum = Σq. The AVX2 build does the same operations 8 lanes at a time (n is a multiple of 32). */
static inline float quant_block(const float *x, int n, int8_t *q, int *sum) {
#if defined(__AVX2__)
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 mx = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
  const __m256 id = _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
  __m256i s = _mm256_setzero_si256();
  for (int i = 0; i < n; i += 32) {
    __m256i v[4];
    for (int l = 0; l < 4; l++) {
      v[l] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * l), id));
      s = _mm256_add_epi32(s, v[l]);
    }
    // packs work within 128-bit halves: dwords end up in the order 0 2 4 6 1 3 5 7, undone by one permute.
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
    _mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
  *sum = hsum_i32(s);
  return amax / 127.0f;
#else
  float amax = 0;
  for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
  const float id = amax > 0 ? 127.0f / amax : 0.0f;
  int s = 0;
  for (int i = 0; i < n; i++) s += q[i] = (int8_t)lrintf(x[i] * id);
  *sum = s;
  return amax / 127.0f;
#endif
}

void FN(quant_act)(int type, const float *x, int k, uint8_t *act) {
  int s;
  if (type == T_F16) {
    memcpy(act, x, (size_t)k * 4);
  } else if (is_k(type)) {
    for (int b = 0; b < k / 256; b++, x += 256) {
      aK t;
      t.d = quant_block(x, 256, t.q, &s);
      for (int g = 0; g < 16; g++) {
        s = 0;
        for (int i = 0; i < 16; i++) s += t.q[16 * g + i];
        t.bs[g] = (int16_t)s;
      }
      memcpy(act + b * sizeof t, &t, sizeof t);
    }
  } else {
    for (int b = 0; b < k / 32; b++, x += 32) {
      a32 t;
      t.d = quant_block(x, 32, t.q, &s);
      t.s = t.d * (float)s;
      memcpy(act + b * sizeof t, &t, sizeof t);
    }
  }
}

/* ---- K-quant blocks unpacked: value of element i = D·sc[i/16]·(u[i] − off) − Dmin·mn[i/16] ---- */

typedef struct {
  uint8_t u[256];
  int16_t sc[16], mn[16];
  int off;
  float D, Dmin;
} kunp;

static inline void k4_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

static void k_unpack(int type, const uint8_t *w, kunp *o) {
  switch (type) {
  case T_Q2_K:
    o->D = h2f(w + 80), o->Dmin = h2f(w + 82), o->off = 0;
    for (int j = 0; j < 16; j++) {
      const uint8_t *q = w + 16 + 32 * (j >> 3) + 16 * (j & 1);
      const int shift = 2 * ((j >> 1) & 3);
      o->sc[j] = w[j] & 15, o->mn[j] = w[j] >> 4;
      for (int l = 0; l < 16; l++) o->u[16 * j + l] = (q[l] >> shift) & 3;
    }
    return;
  case T_Q3_K:
    o->D = h2f(w + 108), o->Dmin = 0, o->off = 4;
    for (int j = 0; j < 16; j++) {
      const uint8_t *s = w + 96;
      const int low = j < 8 ? (s[j] & 15) : (s[j - 8] >> 4), high = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
      const uint8_t *q = w + 32 + 32 * (j >> 3) + 16 * (j & 1), *hm = w + 16 * (j & 1);
      const int shift = 2 * ((j >> 1) & 3), m = 1 << (((j >> 1) & 3) | ((j >> 3) << 2));
      o->sc[j] = (int16_t)((low | (high << 4)) - 32), o->mn[j] = 0;
      for (int l = 0; l < 16; l++) o->u[16 * j + l] = (uint8_t)(((q[l] >> shift) & 3) + (hm[l] & m ? 4 : 0));
    }
    return;
  case T_Q4_K:
  case T_Q5_K: {
    const int five = type == T_Q5_K;
    const uint8_t *qs = w + (five ? 48 : 16);
    o->D = h2f(w), o->Dmin = h2f(w + 2), o->off = 0;
    for (int j = 0; j < 8; j++) {
      int sc, mn;
      k4_scale_min(w + 4, j, &sc, &mn);
      o->sc[2 * j] = o->sc[2 * j + 1] = (int16_t)sc;
      o->mn[2 * j] = o->mn[2 * j + 1] = (int16_t)mn;
      const uint8_t *q = qs + 32 * (j >> 1);
      const int shift = 4 * (j & 1);
      for (int l = 0; l < 32; l++)
        o->u[32 * j + l] = (uint8_t)(((q[l] >> shift) & 15) + (five && (w[16 + l] >> j) & 1 ? 16 : 0));
    }
    return;
  }
  case T_Q6_K:
    o->D = h2f(w + 208), o->Dmin = 0, o->off = 32;
    for (int j = 0; j < 16; j++) o->sc[j] = (int8_t)w[192 + j], o->mn[j] = 0;
    for (int n = 0; n < 2; n++) {
      const uint8_t *ql = w + 64 * n, *qh = w + 128 + 32 * n;
      uint8_t *u = o->u + 128 * n;
      for (int l = 0; l < 32; l++) {
        u[l] = (uint8_t)((ql[l] & 15) | ((qh[l] & 3) << 4));
        u[l + 32] = (uint8_t)((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4));
        u[l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
        u[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
      }
    }
    return;
  }
}

/* Σ_g sc[g]·(Σ u·q over group g) in integers. */
static inline int k_isum(const kunp *o, const aK *a) {
#if defined(__AVX2__)
  __m256i acc = _mm256_setzero_si256();
  for (int p = 0; p < 8; p++) {
    const __m256i u = _mm256_loadu_si256((const __m256i *)(o->u + 32 * p));
    const __m256i y = _mm256_loadu_si256((const __m256i *)(a->q + 32 * p));
    const __m256i sc = _mm256_set_m128i(_mm_set1_epi16(o->sc[2 * p + 1]), _mm_set1_epi16(o->sc[2 * p]));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), sc));
  }
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
#else
  int isum = 0;
  for (int g = 0; g < 16; g++) {
    int s = 0;
    for (int l = 0; l < 16; l++) s += o->u[16 * g + l] * a->q[16 * g + l];
    isum += o->sc[g] * s;
  }
  return isum;
#endif
}

static float dot_k_generic(int type, const uint8_t *w, size_t bb, const aK *a, int nb) {
  float sum = 0;
  kunp o;
  for (int b = 0; b < nb; b++, w += bb, a++) {
    k_unpack(type, w, &o);
    int isum = k_isum(&o, a), offs = 0, mins = 0;
    for (int g = 0; g < 16; g++) {
      offs += o.sc[g] * a->bs[g];
      mins += o.mn[g] * a->bs[g];
    }
    sum += a->d * (o.D * (float)(isum - o.off * offs) - o.Dmin * (float)mins);
  }
  return sum;
}

/* ---- legacy 32-value blocks ---- */

/* Element j of a 4-bit block: low nibble of qs[j] for j < 16, high nibble of qs[j − 16] after. */
static inline int nib(const uint8_t *qs, int j) { return j < 16 ? qs[j] & 15 : qs[j - 16] >> 4; }
static inline uint32_t u32at(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

#if defined(__AVX2__)
static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
/* Σ u·y of 32 unsigned × 32 signed bytes, as 8 int32 lanes: one vpdpbusd where the build has
 * VNNI (QUANT_VNNI: 512 for AVX512-VNNI on 256-bit vectors, 256 for AVX-VNNI), else vpmaddubsw
 * (pairs summed to 16 bits, which cannot overflow here: u ≤ 128 and |y| ≤ 127 in every caller,
 * so a pair is at most 2·128·127 < 2^15) then vpmaddwd. */
static inline __m256i dot_u8s8(__m256i u, __m256i y) {
#if QUANT_VNNI == 512
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, y);
#elif QUANT_VNNI == 256
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, y);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1));
#endif
}
/* Σ x·y of 32 signed × 32 signed bytes (|x·y| ≤ 128·127), as 8 int32 lanes. */
static inline __m256i dot_s8s8(__m256i x, __m256i y) {
  return dot_u8s8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}
/* 16 bytes of nibbles → 32 bytes: low nibbles first, then high nibbles (element order). The
 * bytes are loaded into both halves (a load, no shuffle), the high half shifted: 3 vector ops. */
static inline __m256i nibbles(const uint8_t *qs) {
  const __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
  return _mm256_and_si256(_mm256_blend_epi32(q, _mm256_srli_epi16(q, 4), 0xF0), _mm256_set1_epi8(15));
}
/* Bit i of x → 0x10 in byte i (the fifth bit of a Q5 value). */
static inline __m256i fifth_bits(uint32_t x) {
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
  __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)x), shuf), bit);
  return _mm256_and_si256(_mm256_cmpeq_epi8(v, bit), _mm256_set1_epi8(16));
}
#endif

#if defined(__AVX2__)
/* The f16 at w[r] + off of each of R rows (R ≤ 4) as f32 lanes 0 … R − 1 (lanes past R are 0): the
 * halves are gathered in a 64-bit integer register and converted by one F16C instruction. */
static inline __m128 f16_lanes(const uint8_t *const *w, int R, size_t off) {
  uint64_t u = 0;
  for (int r = 0; r < R; r++) {
    uint16_t h;
    memcpy(&h, w[r] + off, 2);
    u |= (uint64_t)h << 16 * r;
  }
  return _mm_cvtph_ps(_mm_cvtsi64_si128((long long)u));
}

/* R rows (R = 1 or 4, a constant after inlining) of a legacy format dotted with one activation
 * row. Every row sums its blocks in order into an accumulator of its own and every float
 * operation is per lane (scales in lane r of a 4-lane vector, the block product in row r's 8 lanes),
 * so a row's result does not depend on R or on where a thread split falls: the same bits either
 * way. The rows share the activation loads, and their scales are converted together. Values go
 * unsigned into vpmaddubsw: Q4_0/Q5_0's offset of 8 or 16 and Q4_1/Q5_1's min are applied through
 * the activation sums s = d_a·Σq (Σ_b d·s, times the offset, a power of two, once at the end).
 * Q8_0 is signed: |w| goes unsigned (a weight byte of −128 included), y takes w's signs.
 * pf (or null): nl cache lines from pf on are prefetched, spread evenly over the blocks, since a
 * burst of a few dozen prefetches at once stalls on the core's miss buffers. */
static inline __attribute__((always_inline)) void legacy_rows(int type, int R, const uint8_t *const *w, const a32 *a, int nb, float *out,
                                                              const uint8_t *pf, int nl) {
  const size_t bb = type == T_Q8_0 ? 34 : type == T_Q4_0 ? 18 : type == T_Q5_0 ? 22 : type == T_Q4_1 ? 20 : 24;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  __m128 mins = _mm_setzero_ps();
  // Lines floor(b·nl/nb) … floor((b + 1)·nl/nb) − 1 at block b, counted without a division.
  int due = 0;
  for (int b = 0; b < nb; b++, a++) {
    if (pf)
      for (due += nl; due >= nb; due -= nb, pf += 64) __builtin_prefetch(pf);
    const size_t o = (size_t)b * bb;
    const __m256i y = _mm256_loadu_si256((const __m256i *)a->q);
    const __m128 d = f16_lanes(w, R, o);
    if (type == T_Q4_0 || type == T_Q5_0) mins = _mm_fmadd_ps(d, _mm_set1_ps(a->s), mins);
    if (type == T_Q4_1 || type == T_Q5_1) mins = _mm_fmadd_ps(f16_lanes(w, R, o + 2), _mm_set1_ps(a->s), mins);
    const __m128 ds4 = _mm_mul_ps(d, _mm_set1_ps(a->d));
    const __m256 ds = _mm256_set_m128(ds4, ds4);
    for (int r = 0; r < R; r++) {
      const uint8_t *wb = w[r] + o;
      __m256i p;
      switch (type) {
      case T_Q8_0:
        p = dot_s8s8(_mm256_loadu_si256((const __m256i *)(wb + 2)), y);
        break;
      case T_Q4_0:
        p = dot_u8s8(nibbles(wb + 2), y);
        break;
      case T_Q5_0:
        p = dot_u8s8(_mm256_or_si256(nibbles(wb + 6), fifth_bits(u32at(wb + 2))), y);
        break;
      case T_Q4_1:
        p = dot_u8s8(nibbles(wb + 4), y);
        break;
      default:
        p = dot_u8s8(_mm256_or_si256(nibbles(wb + 8), fifth_bits(u32at(wb + 4))), y);
      }
      // Lane r of both halves of ds, in all 8 lanes: one in-lane shuffle.
      const __m256 dr = r == 0 ? _mm256_permute_ps(ds, 0x00) : r == 1 ? _mm256_permute_ps(ds, 0x55) : r == 2 ? _mm256_permute_ps(ds, 0xAA) : _mm256_permute_ps(ds, 0xFF);
      acc[r] = _mm256_fmadd_ps(dr, _mm256_cvtepi32_ps(p), acc[r]);
    }
  }
  const float off = type == T_Q4_0 ? -8.0f : type == T_Q5_0 ? -16.0f : 1.0f;
  float m[4];
  _mm_storeu_ps(m, mins);
  for (int r = 0; r < R; r++) out[r] = hsum8(acc[r]) + off * m[r];
}

/* Rows w[0 … R) (R = 4, or 1) against one activation row, prefetching as legacy_rows says; the
 * type is a constant in each call. */
static void dot_legacy_rows(int type, int R, const uint8_t *const *w, const a32 *a, int nb, float *out, const uint8_t *pf, int nl) {
#define LEGACY_ROWS(T)                                  \
  case T:                                               \
    if (R == 4) legacy_rows(T, 4, w, a, nb, out, pf, nl); \
    else legacy_rows(T, 1, w, a, nb, out, pf, nl);        \
    return;
  switch (type) {
    LEGACY_ROWS(T_Q8_0)
    LEGACY_ROWS(T_Q4_0)
    LEGACY_ROWS(T_Q5_0)
    LEGACY_ROWS(T_Q4_1)
    LEGACY_ROWS(T_Q5_1)
  }
#undef LEGACY_ROWS
}
#endif

static float dot_legacy(int type, const uint8_t *w, const a32 *a, int nb) {
#if defined(__AVX2__)
  float out;
  dot_legacy_rows(type, 1, &w, a, nb, &out, NULL, 0);
  return out;
#else
  float sum = 0;
  for (int b = 0; b < nb; b++, a++) {
    int s = 0;
    switch (type) {
    case T_Q8_0:
      for (int j = 0; j < 32; j++) s += (int8_t)w[2 + j] * a->q[j];
      sum += h2f(w) * a->d * (float)s;
      w += 34;
      break;
    case T_Q4_0:
      for (int j = 0; j < 32; j++) s += (nib(w + 2, j) - 8) * a->q[j];
      sum += h2f(w) * a->d * (float)s;
      w += 18;
      break;
    case T_Q5_0: {
      const uint32_t qh = u32at(w + 2);
      for (int j = 0; j < 32; j++) s += ((nib(w + 6, j) | (int)(((qh >> j) & 1) << 4)) - 16) * a->q[j];
      sum += h2f(w) * a->d * (float)s;
      w += 22;
      break;
    }
    case T_Q4_1:
      for (int j = 0; j < 32; j++) s += nib(w + 4, j) * a->q[j];
      sum += h2f(w) * a->d * (float)s + h2f(w + 2) * a->s;
      w += 20;
      break;
    case T_Q5_1: {
      const uint32_t qh = u32at(w + 4);
      for (int j = 0; j < 32; j++) s += (nib(w + 8, j) | (int)(((qh >> j) & 1) << 4)) * a->q[j];
      sum += h2f(w) * a->d * (float)s + h2f(w + 2) * a->s;
      w += 24;
      break;
    }
    }
  }
  return sum;
#endif
}

#if defined(__AVX2__)
/* Q4_K: 8 sub-blocks of 32, 6-bit scales and mins; nibbles of byte l of pair p are elements
 * 64p + l (low) and 64p + 32 + l (high). The 12 scale bytes are unpacked with 32-bit masks
 * (scales and mins each 8 bytes), widened to 16 bits once, and each sub-block's scale is
 * broadcast by a byte shuffle. */
static float dot_q4_k(const uint8_t *w, const aK *a, int nb) {
  __m256 acc = _mm256_setzero_ps(), macc = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(15);
  __m256i pick[8];
  for (int j = 0; j < 8; j++) pick[j] = _mm256_set1_epi16((short)(0x0100 * (2 * j + 1) + 2 * j));
  for (int b = 0; b < nb; b++, w += 144, a++) {
    uint32_t u[3];
    memcpy(u, w + 4, 12);
    const uint32_t sc_lo = u[0] & 0x3f3f3f3f, sc_hi = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);
    const uint32_t mn_lo = u[1] & 0x3f3f3f3f, mn_hi = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);
    const __m256i sm = _mm256_cvtepu8_epi16(_mm_set_epi32((int)mn_hi, (int)mn_lo, (int)sc_hi, (int)sc_lo));
    const __m128i mn = _mm256_extracti128_si256(sm, 1);
    const __m256i mdup = _mm256_set_m128i(_mm_unpackhi_epi16(mn, mn), _mm_unpacklo_epi16(mn, mn));
    const __m256i mprod = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a->bs), mdup);
    macc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w + 2) * a->d), _mm256_cvtepi32_ps(mprod), macc);
    const __m256i scb = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
    __m256i isum = _mm256_setzero_si256();
    for (int p = 0; p < 4; p++) {
      const __m256i q = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * p));
      const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      const __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(a->q + 64 * p)));
      const __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(a->q + 64 * p + 32)));
      isum = _mm256_add_epi32(isum, _mm256_madd_epi16(plo, _mm256_shuffle_epi8(scb, pick[2 * p])));
      isum = _mm256_add_epi32(isum, _mm256_madd_epi16(phi, _mm256_shuffle_epi8(scb, pick[2 * p + 1])));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w) * a->d), _mm256_cvtepi32_ps(isum), acc);
  }
  return hsum8(_mm256_sub_ps(acc, macc));
}

/* Q6_K: 6-bit values u − 32 (low nibbles from ql, two high bits from qh), int8 scale per 16;
 * Σ sc·(u − 32)·y = Σ sc·u·y − 32·Σ sc·bs. */
static float dot_q6_k(const uint8_t *w, const aK *a, int nb) {
  __m256 acc = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3 << 4);
  for (int b = 0; b < nb; b++, w += 210, a++) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 192)));
    const __m256i offs = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)a->bs));
    __m256i isum = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offs, 5));
    for (int n = 0; n < 2; n++) {
      // Scales 8n … 8n + 7 as 16 bits in both lanes; pair i takes 8n + 2i (low lane), 8n + 2i + 1 (high).
      const __m256i scn = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(w + 192 + 8 * n))));
      const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(w + 64 * n));
      const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(w + 64 * n + 32));
      const __m256i qh = _mm256_loadu_si256((const __m256i *)(w + 128 + 32 * n));
      const __m256i u[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2)),
          _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m2)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2)),
      };
      for (int i = 0; i < 4; i++) {
        const __m256i p = _mm256_maddubs_epi16(u[i], _mm256_loadu_si256((const __m256i *)(a->q + 128 * n + 32 * i)));
        const short lo = (short)(0x0100 * (4 * i + 1) + 4 * i), hi = (short)(0x0100 * (4 * i + 3) + 4 * i + 2);
        const __m256i pick = _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, _mm256_shuffle_epi8(scn, pick)));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w + 208) * a->d), _mm256_cvtepi32_ps(isum), acc);
  }
  return hsum8(acc);
}
#endif

static inline float f16_dot(const uint8_t *w, const float *x, int k) {
  float s[8] = {0};
  int i = 0;
  for (; i + 8 <= k; i += 8)
    for (int l = 0; l < 8; l++) s[l] += h2f(w + 2 * (i + l)) * x[i + l];
  float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; i < k; i++) t += h2f(w + 2 * i) * x[i];
  return t;
}

static inline float row_dot(int type, const uint8_t *w, const uint8_t *act, int k) {
  switch (type) {
  case T_F16:
    return f16_dot(w, (const float *)act, k);
#if defined(__AVX2__)
  case T_Q4_K:
    return dot_q4_k(w, (const aK *)act, k / 256);
  case T_Q6_K:
    return dot_q6_k(w, (const aK *)act, k / 256);
#else
  case T_Q4_K:
    return dot_k_generic(type, w, 144, (const aK *)act, k / 256);
  case T_Q6_K:
    return dot_k_generic(type, w, 210, (const aK *)act, k / 256);
#endif
  case T_Q2_K:
    return dot_k_generic(type, w, 84, (const aK *)act, k / 256);
  case T_Q3_K:
    return dot_k_generic(type, w, 110, (const aK *)act, k / 256);
  case T_Q5_K:
    return dot_k_generic(type, w, 176, (const aK *)act, k / 256);
  default:
    return dot_legacy(type, w, (const a32 *)act, k / 32);
  }
}

/* Bytes ahead of the rows being summed that the legacy kernels prefetch. Decode streams each
 * weight once, and a pass over interleaved rows is not a stream the hardware prefetcher follows:
 * on the small shape's Q8_0 matrices (Zen 3, 1 thread) passes of 2 or 4 rows without software
 * prefetches read 5.2-5.8 GB/s against 10-12 with them (a single row alone: 10.6). 4, 6, 8 and
 * 12 KiB ahead, and prefetchnta for prefetcht0, came within 4 % of each other in alternated runs
 * (the noise of this shared machine), 16 KiB no better; 1 and 2 KiB ahead were 5-20 % slower. */
enum { LEGACY_PREFETCH = 6144 };

/* Rows are independent and each is summed the same way wherever it falls, so any split of
 * [j0, j1) over threads gives the same bits. The next rows are prefetched while one is summed:
 * rows of a few hundred bytes end before the hardware prefetcher ramps up. */
void FN(quant_matvec)(int type, float *out, size_t ldo, const uint8_t *act, size_t act_stride, int m, const uint8_t *w,
                      size_t row_bytes, int j0, int j1, int k, const float *bias) {
  int j = j0;
#if defined(__AVX2__)
  if (!is_k(type) && type != T_F16) {
    const int nl = (int)((4 * row_bytes + 63) / 64);
    for (; j + 3 < j1; j += 4) {
      const uint8_t *wr = w + (size_t)j * row_bytes;
      const uint8_t *rows[4] = {wr, wr + row_bytes, wr + 2 * row_bytes, wr + 3 * row_bytes};
      // Only inside this call's rows: the prefetches never reach past the matrix.
      const uint8_t *pf = (size_t)(j1 - j) * row_bytes >= LEGACY_PREFETCH + 4 * row_bytes ? wr + LEGACY_PREFETCH : NULL;
      for (int i = 0; i < m; i++) {
        float r[4];
        // The prefetches go with the first input row only: the others find the rows in cache.
        dot_legacy_rows(type, 4, rows, (const a32 *)(act + (size_t)i * act_stride), k / 32, r, i == 0 ? pf : NULL, nl);
        for (int c = 0; c < 4; c++) out[(size_t)i * ldo + j + c] = r[c] + (bias ? bias[j + c] : 0.0f);
      }
    }
  }
#endif
  for (; j < j1; j++) {
    const uint8_t *wr = w + (size_t)j * row_bytes;
    if (j + 4 < j1)
      for (size_t o = 0; o < row_bytes; o += 64) __builtin_prefetch(wr + 4 * row_bytes + o);
    const float bj = bias ? bias[j] : 0.0f;
    for (int i = 0; i < m; i++) out[(size_t)i * ldo + j] = row_dot(type, wr, act + (size_t)i * act_stride, k) + bj;
  }
}

/* ---- dequantization (prefill panels) ---- */

static void dequant_block(int type, const uint8_t *w, float *y) {
  switch (type) {
  case T_Q8_0: {
    const float d = h2f(w);
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)w[2 + j] * d;
    return;
  }
  case T_Q4_0: {
    const float d = h2f(w);
    for (int j = 0; j < 32; j++) y[j] = (float)(nib(w + 2, j) - 8) * d;
    return;
  }
  case T_Q4_1: {
    const float d = h2f(w), m = h2f(w + 2);
    for (int j = 0; j < 32; j++) y[j] = (float)nib(w + 4, j) * d + m;
    return;
  }
  case T_Q5_0: {
    const float d = h2f(w);
    const uint32_t qh = u32at(w + 2);
    for (int j = 0; j < 32; j++) y[j] = (float)((nib(w + 6, j) | (int)(((qh >> j) & 1) << 4)) - 16) * d;
    return;
  }
  case T_Q5_1: {
    const float d = h2f(w), m = h2f(w + 2);
    const uint32_t qh = u32at(w + 4);
    for (int j = 0; j < 32; j++) y[j] = (float)(nib(w + 8, j) | (int)(((qh >> j) & 1) << 4)) * d + m;
    return;
  }
  default: {
    kunp o;
    k_unpack(type, w, &o);
    for (int g = 0; g < 16; g++) {
      const float dl = o.D * (float)o.sc[g], ml = o.Dmin * (float)o.mn[g];
      for (int l = 0; l < 16; l++) y[16 * g + l] = dl * (float)(o.u[16 * g + l] - o.off) - ml;
    }
  }
  }
}

void FN(quant_dequant)(const quant_matrix *m, int j, int p0, int n, float *dst) {
  const uint8_t *wr = m->w + (size_t)j * m->row_bytes;
  if (m->type == T_F16) {
    for (int c = 0; c < n; c++) dst[c] = h2f(wr + 2 * (size_t)(p0 + c));
    return;
  }
  const int be = is_k(m->type) ? 256 : 32;
  const size_t bb = m->row_bytes / (size_t)(m->k / be);
  for (int c = p0; c < p0 + n;) {
    const int b = c / be, off = c - b * be, cnt = be - off < p0 + n - c ? be - off : p0 + n - c;
    if (cnt == be) dequant_block(m->type, wr + b * bb, dst + (c - p0));
    else {
      float whole[256];
      dequant_block(m->type, wr + b * bb, whole);
      memcpy(dst + (c - p0), whole + off, sizeof(float) * (size_t)cnt);
    }
    c += cnt;
  }
}
