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

/* q · row for the row at byte offset `at` of a page. */
static inline float row_dot(const kv_attn_args *a, const uint8_t *page, size_t at, const float *q) {
  const int hd = a->head_dim;
  float s = 0;
  switch (a->dtype) {
    case KV_F32: {
      const float *k = (const float *)(page + at);
      for (int d = 0; d < hd; d++) s += q[d] * k[d];
      return s;
    }
    case KV_F16: {
      const _Float16 *k = (const _Float16 *)(page + at);
      for (int d = 0; d < hd; d++) s += q[d] * (float)k[d];
      return s;
    }
    case KV_BF16: {
      const uint16_t *k = (const uint16_t *)(page + at);
      for (int d = 0; d < hd; d++) {
        uint32_t u = (uint32_t)k[d] << 16;
        float f;
        memcpy(&f, &u, 4);
        s += q[d] * f;
      }
      return s;
    }
    case KV_Q8_0:
      for (int b0 = 0; b0 < hd; b0 += a->block, at += a->block_bytes) {
        uint16_t h;
        memcpy(&h, page + at, 2);
        const int8_t *c = (const int8_t *)(page + at + 2);
        float t = 0;
        for (int d = 0; d < a->block; d++) t += q[b0 + d] * (float)c[d];
        s += t * f16_value(h);
      }
      return s;
    default: { /* KV_Q4_0 */
      const int half = a->block / 2;
      for (int b0 = 0; b0 < hd; b0 += a->block, at += a->block_bytes) {
        uint16_t h;
        memcpy(&h, page + at, 2);
        const uint8_t *c = page + at + 2;
        float t = 0;
        for (int d = 0; d < half; d++) t += q[b0 + d] * (float)((c[d] & 15) - 8) + q[b0 + half + d] * (float)((c[d] >> 4) - 8);
        s += t * f16_value(h);
      }
      return s;
    }
  }
}

/* o += w · row for the row at byte offset `at` of a page. */
static inline void row_axpy(const kv_attn_args *a, const uint8_t *page, size_t at, float w, float *o) {
  const int hd = a->head_dim;
  switch (a->dtype) {
    case KV_F32: {
      const float *v = (const float *)(page + at);
      for (int d = 0; d < hd; d++) o[d] += w * v[d];
      return;
    }
    case KV_F16: {
      const _Float16 *v = (const _Float16 *)(page + at);
      for (int d = 0; d < hd; d++) o[d] += w * (float)v[d];
      return;
    }
    case KV_BF16: {
      const uint16_t *v = (const uint16_t *)(page + at);
      for (int d = 0; d < hd; d++) o[d] += w * bf16_value(v[d]);
      return;
    }
    case KV_Q8_0:
      for (int b0 = 0; b0 < hd; b0 += a->block, at += a->block_bytes) {
        uint16_t h;
        memcpy(&h, page + at, 2);
        const int8_t *c = (const int8_t *)(page + at + 2);
        const float ws = w * f16_value(h);
        for (int d = 0; d < a->block; d++) o[b0 + d] += ws * (float)c[d];
      }
      return;
    default: {
      const int half = a->block / 2;
      for (int b0 = 0; b0 < hd; b0 += a->block, at += a->block_bytes) {
        uint16_t h;
        memcpy(&h, page + at, 2);
        const uint8_t *c = page + at + 2;
        const float ws = w * f16_value(h);
        for (int d = 0; d < half; d++) {
          o[b0 + d] += ws * (float)((c[d] & 15) - 8);
          o[b0 + half + d] += ws * (float)((c[d] >> 4) - 8);
        }
      }
      return;
    }
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
  int lo = 0;
  if (a->window > 0) {
    const int from = a->query_positions[i] - a->window;
    while (lo < visible && pos[lo / E][lo % E] <= from) lo++;
  }
  float mx = -INFINITY;
  for (int t = lo; t < visible; t++) {
    const float z = row_dot(a, pages[t / E], (size_t)(t % E) * a->row_bytes, q) * a->scale;
    s[t] = z;
    if (z > mx) mx = z;
  }
  float sum = 0;
  for (int t = lo; t < visible; t++) sum += s[t] = expf(s[t] - mx);
  const float inv = 1.0f / sum;
  for (int d = 0; d < hd; d++) o[d] = 0;
  for (int t = lo; t < visible; t++) row_axpy(a, pages[t / E], a->values_offset + (size_t)(t % E) * a->row_bytes, s[t] * inv, o);
}
