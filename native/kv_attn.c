/* Attention read in place from the paged KV cache (src/cache/kv-cache.ts), in every element
 * type: f32, f16, bf16, q8_0, q4_0. Compiled once per ISA (KV_ISA = base, avx2, avx512: the
 * avx builds have F16C, so f16 rows widen in registers with vcvtph2ps); the loops are written
 * for the compiler to vectorize along head_dim. Each key is dotted with the query in its stored
 * form — the quantized types accumulate codes × query per block and apply the block's scale once
 * — and each value is accumulated the same way; nothing is gathered or converted per step. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kv_attn.h"

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(name, KV_ISA)

static inline float f16_value(uint16_t h) {
  _Float16 x;
  memcpy(&x, &h, 2);
  return (float)x;
}

static inline float bf16_value(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Eight lanes per step, independent accumulators (the compiler maps them to one vector register,
 * or two in the base build), widened from the stored form in registers; scalar tails. */
typedef float v8 __attribute__((vector_size(32)));
typedef _Float16 v8h __attribute__((vector_size(16)));
typedef uint16_t v8u16 __attribute__((vector_size(16)));
typedef uint32_t v8u32 __attribute__((vector_size(32)));
typedef int8_t v8i8 __attribute__((vector_size(8)));
typedef uint8_t v8u8 __attribute__((vector_size(8)));
typedef int32_t v8i32 __attribute__((vector_size(32)));

static inline v8 ld_f32(const void *p) { v8 x; memcpy(&x, p, 32); return x; }
#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#ifdef __F16C__
/* vcvtph2ps: eight halves to eight floats in one instruction (GCC 12 scalarises convertvector). */
static inline v8 ld_f16(const void *p) {
  __m256 f = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
  v8 x;
  memcpy(&x, &f, 32);
  return x;
}
#else
static inline v8 ld_f16(const void *p) { v8h x; memcpy(&x, p, 16); return __builtin_convertvector(x, v8); }
#endif
static inline v8 ld_bf16(const void *p) {
  v8u16 x;
  memcpy(&x, p, 16);
  v8u32 u = __builtin_convertvector(x, v8u32) << 16;
  v8 f;
  memcpy(&f, &u, 32);
  return f;
}
#ifdef __AVX2__
static inline v8 ld_i8(const void *p) {
  __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
  v8 x;
  memcpy(&x, &f, 32);
  return x;
}
#else
static inline v8 ld_i8(const void *p) { v8i8 x; memcpy(&x, p, 8); return __builtin_convertvector(x, v8); }
#endif
/* Codes of bytes j…j+7: low nibbles (numbers j…) or high nibbles (numbers half + j…), minus 8. */
static inline v8 ld_q4(const void *p, int high) {
#ifdef __AVX2__
  __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
  c = high ? _mm256_srli_epi32(c, 4) : _mm256_and_si256(c, _mm256_set1_epi32(15));
  __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(c, _mm256_set1_epi32(8)));
  v8 x;
  memcpy(&x, &f, 32);
  return x;
#else
  v8u8 x;
  memcpy(&x, p, 8);
  v8u8 c = high ? x >> 4 : x & 15;
  return __builtin_convertvector(__builtin_convertvector(c, v8i32) - 8, v8);
#endif
}
static inline float hsum(v8 x) { return ((x[0] + x[4]) + (x[1] + x[5])) + ((x[2] + x[6]) + (x[3] + x[7])); }

/* Σ q[d]·x[d] for n numbers stored as `dtype` at p (float types; q8 codes). */
static inline float dot_run(int dtype, const float *q, const uint8_t *p, int n) {
  v8 acc = {0};
  int d = 0;
  switch (dtype) {
    case KV_F32: for (; d + 8 <= n; d += 8) acc += ld_f32(q + d) * ld_f32(p + 4 * d); break;
    case KV_F16: for (; d + 8 <= n; d += 8) acc += ld_f32(q + d) * ld_f16(p + 2 * d); break;
    case KV_BF16: for (; d + 8 <= n; d += 8) acc += ld_f32(q + d) * ld_bf16(p + 2 * d); break;
    default: for (; d + 8 <= n; d += 8) acc += ld_f32(q + d) * ld_i8(p + d); break;
  }
  float s = hsum(acc);
  for (; d < n; d++) {
    float x;
    switch (dtype) {
      case KV_F32: memcpy(&x, p + 4 * d, 4); break;
      case KV_F16: { uint16_t h; memcpy(&h, p + 2 * d, 2); x = f16_value(h); break; }
      case KV_BF16: { uint16_t h; memcpy(&h, p + 2 * d, 2); x = bf16_value(h); break; }
      default: x = (float)((const int8_t *)p)[d]; break;
    }
    s += q[d] * x;
  }
  return s;
}

/* o[d] += w·x[d] for n numbers stored as `dtype` at p. */
static inline void axpy_run(int dtype, float w, const uint8_t *p, int n, float *o) {
  const v8 wv = {w, w, w, w, w, w, w, w};
  int d = 0;
  for (; d + 8 <= n; d += 8) {
    v8 x = dtype == KV_F32 ? ld_f32(p + 4 * d) : dtype == KV_F16 ? ld_f16(p + 2 * d) : dtype == KV_BF16 ? ld_bf16(p + 2 * d) : ld_i8(p + d);
    v8 y = ld_f32(o + d) + wv * x;
    memcpy(o + d, &y, 32);
  }
  for (; d < n; d++) {
    float x;
    switch (dtype) {
      case KV_F32: memcpy(&x, p + 4 * d, 4); break;
      case KV_F16: { uint16_t h; memcpy(&h, p + 2 * d, 2); x = f16_value(h); break; }
      case KV_BF16: { uint16_t h; memcpy(&h, p + 2 * d, 2); x = bf16_value(h); break; }
      default: x = (float)((const int8_t *)p)[d]; break;
    }
    o[d] += w * x;
  }
}

/* One q4_0 block: Σ q[d]·(code_d − 8) over its `block` numbers (codes at c). */
static inline float dot_q4(const float *q, const uint8_t *c, int block) {
  const int half = block / 2;
  v8 acc = {0};
  int j = 0;
  for (; j + 8 <= half; j += 8) acc += ld_f32(q + j) * ld_q4(c + j, 0) + ld_f32(q + half + j) * ld_q4(c + j, 1);
  float s = hsum(acc);
  for (; j < half; j++) s += q[j] * (float)((c[j] & 15) - 8) + q[half + j] * (float)((c[j] >> 4) - 8);
  return s;
}

static inline void axpy_q4(float w, const uint8_t *c, int block, float *o) {
  const int half = block / 2;
  const v8 wv = {w, w, w, w, w, w, w, w};
  int j = 0;
  for (; j + 8 <= half; j += 8) {
    v8 lo = ld_f32(o + j) + wv * ld_q4(c + j, 0), hi = ld_f32(o + half + j) + wv * ld_q4(c + j, 1);
    memcpy(o + j, &lo, 32);
    memcpy(o + half + j, &hi, 32);
  }
  for (; j < half; j++) {
    o[j] += w * (float)((c[j] & 15) - 8);
    o[half + j] += w * (float)((c[j] >> 4) - 8);
  }
}

/* q · row for the row at byte offset `at` of a page: the quantized types sum codes × query per
 * block and apply the block's f16 scale once. */
static inline float row_dot(const kv_attn_args *a, const uint8_t *page, size_t at, const float *q) {
  const int hd = a->head_dim;
  if (a->dtype <= KV_BF16) return dot_run(a->dtype, q, page + at, hd);
  float s = 0;
  for (int b0 = 0; b0 < hd; b0 += a->block, at += a->block_bytes) {
    uint16_t h;
    memcpy(&h, page + at, 2);
    const float t = a->dtype == KV_Q8_0 ? dot_run(KV_Q8_0, q + b0, page + at + 2, a->block) : dot_q4(q + b0, page + at + 2, a->block);
    s += t * f16_value(h);
  }
  return s;
}

/* o += w · row for the row at byte offset `at` of a page. */
static inline void row_axpy(const kv_attn_args *a, const uint8_t *page, size_t at, float w, float *o) {
  const int hd = a->head_dim;
  if (a->dtype <= KV_BF16) {
    axpy_run(a->dtype, w, page + at, hd, o);
    return;
  }
  for (int b0 = 0; b0 < hd; b0 += a->block, at += a->block_bytes) {
    uint16_t h;
    memcpy(&h, page + at, 2);
    const float ws = w * f16_value(h);
    if (a->dtype == KV_Q8_0) axpy_run(KV_Q8_0, ws, page + at + 2, a->block, o + b0);
    else axpy_q4(ws, page + at + 2, a->block, o + b0);
  }
}

/* Query row i of query head h; s: scratch of at least lengths[g] floats. */
void FN(kv_attn_row)(const kv_attn_args *a, int h, int i, float *s) {
  const int group = a->num_heads / a->num_kv_heads, g = h / group, hd = a->head_dim, E = a->page_entries;
  const uint8_t *const *pages = a->pages[g];
  const int32_t *const *pos = a->positions[g];
  const int len = a->lengths[g], visible = len - a->rows + i + 1;
  const size_t qo = (size_t)i * a->num_heads * hd + (size_t)h * hd;
  const float *q = a->q + qo;
  float *o = a->out + qo;
  /* Channel-pruned keys: the query's kept channels, gathered once, dotted over the stored width. */
  const kv_key_layout *kl = a->key_layouts ? a->key_layouts[g] : NULL;
  kv_attn_args ka;
  const kv_attn_args *k = a;
  float qc[kl ? kl->dim : 1];
  if (kl) {
    ka = *a;
    ka.head_dim = kl->dim;
    ka.block = kl->block;
    ka.block_bytes = kl->block_bytes;
    ka.row_bytes = kl->row_bytes;
    for (int j = 0; j < kl->dim; j++) qc[j] = j < kl->n_kept ? q[kl->channels[j]] : 0.0f;
    k = &ka;
  }
  const float *kq = kl ? qc : q;
  const int khd = k->head_dim;
  int lo = 0;
  if (a->window > 0) {
    const int from = a->query_positions[i] - a->window;
    while (lo < visible && pos[lo / E][lo % E] <= from) lo++;
  }
  /* Page by page, so that finding an entry costs no division. */
  const size_t rb = (size_t)a->row_bytes, krb = (size_t)k->row_bytes, vo = kl ? (size_t)E * krb : a->values_offset;
  float mx = -INFINITY;
  for (int t = lo; t < visible;) {
    const uint8_t *page = pages[t / E];
    const int end = (t / E + 1) * E < visible ? (t / E + 1) * E : visible;
    size_t at = (size_t)(t % E) * krb;
    if (a->dtype <= KV_BF16 && khd % 8 == 0) {
      /* Four keys at a time: four independent accumulator chains, one horizontal sum each. */
      for (; t + 4 <= end; t += 4, at += 4 * krb) {
        v8 c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
        const uint8_t *k0 = page + at, *k1 = k0 + krb, *k2 = k1 + krb, *k3 = k2 + krb;
        for (int d = 0; d < khd; d += 8) {
          const v8 x = ld_f32(kq + d);
          if (a->dtype == KV_F32) {
            c0 += x * ld_f32(k0 + 4 * d); c1 += x * ld_f32(k1 + 4 * d); c2 += x * ld_f32(k2 + 4 * d); c3 += x * ld_f32(k3 + 4 * d);
          } else if (a->dtype == KV_F16) {
            c0 += x * ld_f16(k0 + 2 * d); c1 += x * ld_f16(k1 + 2 * d); c2 += x * ld_f16(k2 + 2 * d); c3 += x * ld_f16(k3 + 2 * d);
          } else {
            c0 += x * ld_bf16(k0 + 2 * d); c1 += x * ld_bf16(k1 + 2 * d); c2 += x * ld_bf16(k2 + 2 * d); c3 += x * ld_bf16(k3 + 2 * d);
          }
        }
        const float z[4] = {hsum(c0) * a->scale, hsum(c1) * a->scale, hsum(c2) * a->scale, hsum(c3) * a->scale};
        for (int j = 0; j < 4; j++) {
          s[t + j] = z[j];
          if (z[j] > mx) mx = z[j];
        }
      }
    }
    for (; t < end; t++, at += krb) {
      const float z = row_dot(k, page, at, kq) * a->scale;
      s[t] = z;
      if (z > mx) mx = z;
    }
  }
  float sum = 0;
  for (int t = lo; t < visible; t++) sum += s[t] = expf(s[t] - mx);
  const float inv = 1.0f / sum;
  for (int d = 0; d < hd; d++) o[d] = 0;
  for (int t = lo; t < visible;) {
    const uint8_t *page = pages[t / E];
    const int end = (t / E + 1) * E < visible ? (t / E + 1) * E : visible;
    for (size_t at = vo + (size_t)(t % E) * rb; t < end; t++, at += rb) row_axpy(a, page, at, s[t] * inv, o);
  }
}
