/* Column statistics of row-softmax attention for the presses (see press_attn.h). Compiled once
 * per ISA (KV_ISA = base, avx2, avx512) on fixed 8-float vectors, as kv_attn.c; no libc.
 *
 * A tile is PA_TR query rows: their logits against the keys between the tile's lowest lo and
 * highest hi come from one register-blocked product over keys packed as [head_dim][PA_KB] panels
 * (PA_TR × PA_KB sums held in registers over the whole dot product), land in a PA_TR-row buffer
 * that stays in L2, are turned into probabilities row by row (max, e^x, sum in float64), and the
 * tile's rows are then folded into the float64 output column by column. One pass over the keys
 * per tile: the row normaliser is exact because the whole row is in the buffer. */
#include <stddef.h>
#include <stdint.h>

#include "press_attn.h"

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define PFN(name) CAT(name, KV_ISA)

typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8 ld8(const float *p) { v8 x; __builtin_memcpy(&x, p, 32); return x; }
static inline void st8(float *p, v8 x) { __builtin_memcpy(p, &x, 32); }
static inline v8 bc8(float x) { return (v8){x, x, x, x, x, x, x, x}; }
static inline v8 max8(v8 a, v8 b) { v8i m = a > b; return (v8)(((v8i)a & m) | ((v8i)b & ~m)); }
static inline v4d ld4d(const double *p) { v4d x; __builtin_memcpy(&x, p, 32); return x; }
static inline void st4d(double *p, v4d x) { __builtin_memcpy(p, &x, 32); }
static inline v4d max4d(v4d a, v4d b) { typedef int64_t v4l __attribute__((vector_size(32))); v4l m = a > b; return (v4d)(((v4l)a & m) | ((v4l)b & ~m)); }

/* The two halves of x widened to float64. */
static inline void widen(v8 x, v4d *lo, v4d *hi) {
  v4 a, b;
  __builtin_memcpy(&a, &x, 16);
  __builtin_memcpy(&b, (const char *)&x + 16, 16);
  *lo = __builtin_convertvector(a, v4d);
  *hi = __builtin_convertvector(b, v4d);
}

/* e^x for softmax arguments (x ≤ 0; below −87 clamped, where e^x < 2⁻¹²⁵ is negligible beside
 * the row's maximum term 1): x = n·ln2 + r with ln2 split in two (Cody–Waite) so r keeps its
 * bits, e^r by Taylor to r⁷ on |r| ≤ ln2/2 (truncation < 6e-9), 2ⁿ put in the exponent. */
static inline v8 exp8(v8 x) {
  const v8 magic = bc8(12582912.0f);
  x = max8(x, bc8(-87.0f));
  v8 t = x * 1.44269504088896341f + magic;
  v8 n = t - magic;
  v8 r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  v8 p = r * (1.0f / 5040) + (1.0f / 720);
  p = p * r + (1.0f / 120);
  p = p * r + (1.0f / 24);
  p = p * r + (1.0f / 6);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  v8i e = ((v8i)t - (v8i)magic + 127) << 23;
  return p * (v8)e;
}

static inline float exp1(float x) { return exp8(bc8(x))[0]; }

void PFN(press_attn_pack)(float *kt, const float *keys, int n, int hd) {
  const int panels = (n + PA_KB - 1) / PA_KB;
  for (int p = 0; p < panels; p++) {
    float *o = kt + (size_t)p * PA_KB * hd;
    for (int j = 0; j < PA_KB; j++) {
      const int t = p * PA_KB + j;
      if (t < n)
        for (int d = 0; d < hd; d++) o[d * PA_KB + j] = keys[(size_t)t * hd + d];
      else
        for (int d = 0; d < hd; d++) o[d * PA_KB + j] = 0;
    }
  }
}

/* s[r·sld + j·PA_KB …] = q_r · keys of panel p0 + j, for the panels [p0, p1): PA_TR rows × 16 keys
 * of sums in registers (rows beyond nr repeat the last one and are not stored). */
static inline void dots(const press_attn_args *a, const float *const *q, int nr, int p0, int p1, float *s, size_t sld) {
  const int hd = a->head_dim;
  for (int p = p0; p < p1; p++) {
    const float *kp = a->kt + (size_t)p * PA_KB * hd;
    v8 acc[PA_TR][2];
    for (int r = 0; r < PA_TR; r++) acc[r][0] = acc[r][1] = bc8(0);
    for (int d = 0; d < hd; d++) {
      const v8 k0 = ld8(kp + d * PA_KB), k1 = ld8(kp + d * PA_KB + 8);
      for (int r = 0; r < PA_TR; r++) {
        const v8 x = bc8(q[r][d]);
        acc[r][0] += x * k0;
        acc[r][1] += x * k1;
      }
    }
    float *o = s + (size_t)(p - p0) * PA_KB;
    for (int r = 0; r < nr; r++) {
      st8(o + r * sld, acc[r][0]);
      st8(o + r * sld + 8, acc[r][1]);
    }
  }
}

/* Row r of the tile, raw dot products in columns c0 = lo − base … c1 = hi − base of sr: leaves
 * e^(scale·dot − max) there and zero elsewhere in [0, width), and returns the factor (row weight
 * over the softmax's sum, padding keys included) that turns them into the row's weighted
 * probabilities. The max is over the row's own keys only, so no key it sees can underflow. */
static inline float softmax_row(const press_attn_args *a, int r, float *sr, int c0, int c1, int width) {
  const float sc = a->scale;
  v8 mx = bc8(-3.0e38f);
  int t = c0;
  for (; t + 8 <= c1; t += 8) mx = max8(mx, ld8(sr + t));
  float m = -3.0e38f;
  for (int i = 0; i < 8; i++) m = mx[i] > m ? mx[i] : m;
  for (; t < c1; t++) m = sr[t] > m ? sr[t] : m;
  m *= sc; /* scale > 0: the max of the scaled logits */
  const int pad = a->pad ? a->pad[r] : 0;
  if (pad > 0 && a->pad_logit > m) m = a->pad_logit;
  /* Sums in float32 over blocks of 16 vectors (128 keys), the blocks added in float64. */
  v4d acc = {0, 0, 0, 0};
  t = c0;
  while (t + 8 <= c1) {
    v8 part = bc8(0);
    for (int k = 0; k < 16 && t + 8 <= c1; k++, t += 8) {
      const v8 e = exp8(ld8(sr + t) * sc - m);
      st8(sr + t, e);
      part += e;
    }
    v4d lo, hi;
    widen(part, &lo, &hi);
    acc += lo + hi;
  }
  double tot = (acc[0] + acc[2]) + (acc[1] + acc[3]);
  for (; t < c1; t++) tot += sr[t] = exp1(sr[t] * sc - m);
  if (pad > 0) tot += pad * (double)exp1(a->pad_logit - m);
  for (t = 0; t < c0; t++) sr[t] = 0;
  for (t = c1; t < width; t++) sr[t] = 0;
  return (float)((a->row_weight ? a->row_weight[r] : 1.0f) / tot);
}

void PFN(press_attn_rows)(const press_attn_args *a, int r0, int r1, double *out, float *s, size_t sld) {
  for (int i0 = r0; i0 < r1; i0 += PA_TR) {
    const int nr = r1 - i0 < PA_TR ? r1 - i0 : PA_TR;
    const float *q[PA_TR];
    int lo = a->n_keys, hi = 0;
    for (int r = 0; r < PA_TR; r++) {
      const int i = i0 + (r < nr ? r : nr - 1);
      q[r] = a->q + (size_t)i * a->q_stride;
      if (a->lo[i] < lo) lo = a->lo[i];
      if (a->hi[i] > hi) hi = a->hi[i];
    }
    const int p0 = lo / PA_KB, p1 = (hi + PA_KB - 1) / PA_KB, base = p0 * PA_KB, width = (p1 - p0) * PA_KB;
    dots(a, q, nr, p0, p1, s, sld);
    float f[PA_TR];
    for (int r = 0; r < nr; r++) f[r] = softmax_row(a, i0 + r, s + (size_t)r * sld, a->lo[i0 + r] - base, a->hi[i0 + r] - base, width);
    /* Fold the tile's rows, each × its factor, into the output, columns [base, hi). */
    const int n = hi - base;
    double *o = out + base;
    int t = 0;
    if (a->mode == PA_SUM) {
      for (; t + 8 <= n; t += 8) {
        v8 c = ld8(s + t) * f[0];
        for (int r = 1; r < nr; r++) c += ld8(s + (size_t)r * sld + t) * f[r];
        v4d lo4, hi4;
        widen(c, &lo4, &hi4);
        st4d(o + t, ld4d(o + t) + lo4);
        st4d(o + t + 4, ld4d(o + t + 4) + hi4);
      }
      for (; t < n; t++) {
        float c = s[t] * f[0];
        for (int r = 1; r < nr; r++) c += s[(size_t)r * sld + t] * f[r];
        o[t] += c;
      }
    } else {
      for (; t + 8 <= n; t += 8) {
        v8 c = ld8(s + t) * f[0];
        for (int r = 1; r < nr; r++) c = max8(c, ld8(s + (size_t)r * sld + t) * f[r]);
        v4d lo4, hi4;
        widen(c, &lo4, &hi4);
        st4d(o + t, max4d(ld4d(o + t), lo4));
        st4d(o + t + 4, max4d(ld4d(o + t + 4), hi4));
      }
      for (; t < n; t++) {
        float c = s[t] * f[0];
        for (int r = 1; r < nr; r++) c = s[(size_t)r * sld + t] * f[r] > c ? s[(size_t)r * sld + t] * f[r] : c;
        if (c > o[t]) o[t] = c;
      }
    }
  }
}
