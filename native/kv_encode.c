/* Row encoders of the KV cache (see kv_encode.h). They must give the very bytes of the TypeScript
 * encoders in src/cache/format.ts, whose arithmetic is JavaScript's: scales computed in double,
 * rounded to f32 and then to f16; codes rounded half up (Math.round) from double products; NaN
 * codes stored as 0. A prefill writes every key and value once, and in TypeScript that cost 3–4 %
 * of a 2048-token prefill on the small shape with an f16 or q8_0 cache. */
#include "kv_encode.h"
#include "kv_attn.h"
#include "f16.h"
#include <math.h>
#include <string.h>

static inline uint32_t bits_of(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

/* f16 bits of x, nearest even; overflow → ±inf, NaN stays NaN (quiet). */
static uint16_t f16_bits(float x) {
  const uint32_t u = bits_of(x), sign = (u >> 16) & 0x8000, abs = u & 0x7fffffff;
  /* Normal f16 results, the common case: rebias the exponent (127 → 15) and round the 13 dropped
   * bits to nearest even; a mantissa carry moves into the exponent as it should. 0x477ff000
   * (65520) and above round to ∞, below 2⁻¹⁴ (0x38800000) are subnormal: the long way. */
  if (abs >= 0x38800000 && abs < 0x477ff000) return (uint16_t)(sign | ((abs - 0x38000000 + 0xfff + ((abs >> 13) & 1)) >> 13));
  const uint32_t exp = (u >> 23) & 0xff;
  uint32_t mant = u & 0x7fffff;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
  int e = (int)exp - 127 + 15;
  if (e >= 0x1f) return (uint16_t)(sign | 0x7c00);
  if (e <= 0) {
    if (e < -10) return (uint16_t)sign;
    mant |= 0x800000;
    const int shift = 14 - e;
    const uint32_t half = 1u << (shift - 1), rest = mant & ((1u << shift) - 1);
    uint32_t m = mant >> shift;
    if (rest > half || (rest == half && (m & 1))) m++;
    return (uint16_t)(sign | m);
  }
  uint32_t m = mant >> 13;
  const uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (m & 1))) {
    if (++m == 0x400) {
      m = 0;
      if (++e >= 0x1f) return (uint16_t)(sign | 0x7c00);
    }
  }
  return (uint16_t)(sign | ((uint32_t)e << 10) | m);
}

static uint16_t bf16_bits(float x) {
  const uint32_t u = bits_of(x);
  if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x0040);
  return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

/* Math.round(v) clamped to [lo, hi] (lo < 0 < hi, small), NaN → 0: the nearest integer, halves
 * towards +∞. Clamped before rounding so that the integer conversion never overflows (and no
 * libm floor call: the base build has no SSE4.1 rounding instruction). */
static inline int js_round_clamp(double v, int lo, int hi) {
  if (v != v) return 0;
  if (v >= hi) return hi;
  if (v <= lo) return lo;
  int r = (int)v;   /* towards zero */
  if (v < r) r--;   /* floor */
  return v - r >= 0.5 ? r + 1 : r;
}

static inline void put16(uint8_t *p, uint16_t h) {
  p[0] = (uint8_t)h;
  p[1] = (uint8_t)(h >> 8);
}

static void q8_0_block(const float *x, int n, uint8_t *out) {
  double amax = 0;
  for (int d = 0; d < n; d++) {
    const double a = fabs((double)x[d]);
    if (amax == amax && (a != a || a > amax)) amax = a; /* Math.max: NaN sticks */
  }
  const double want = amax / 127;
  uint16_t h = f16_bits((float)want);
  if ((double)f16_value(h) < want) h++;
  const double scale = f16_value(h), inv = scale > 0 ? 1 / scale : 0;
  put16(out, h);
  for (int d = 0; d < n; d++) out[2 + d] = (uint8_t)(int8_t)js_round_clamp((double)x[d] * inv, -127, 127);
}

/* A 4-bit code: Math.round(v) + 8 clamped to [0, 15]; NaN → 0 (JavaScript's NaN | … is 0). */
static inline int q4_code(double v) {
  return v != v ? 0 : js_round_clamp(v, -8, 7) + 8;
}

static void q4_0_block(const float *x, int n, uint8_t *out) {
  float m = 0;
  for (int d = 0; d < n; d++)
    if (fabsf(x[d]) > fabsf(m)) m = x[d];
  const uint16_t h = f16_bits((float)((double)m / -8));
  const double scale = f16_value(h), inv = scale != 0 ? 1 / scale : 0;
  put16(out, h);
  const int half = n / 2;
  for (int d = 0; d < half; d++) out[2 + d] = (uint8_t)(q4_code((double)x[d] * inv) | q4_code((double)x[half + d] * inv) << 4);
}

void kv_encode_rows(int dtype, const float *src, size_t src_stride, int rows, int head_dim, int block, int block_bytes, uint8_t *dst, size_t row_bytes) {
  for (int r = 0; r < rows; r++) {
    const float *x = src + (size_t)r * src_stride;
    uint8_t *o = dst + (size_t)r * row_bytes;
    switch (dtype) {
      case KV_F32: memcpy(o, x, 4 * (size_t)head_dim); break;
      case KV_F16: for (int d = 0; d < head_dim; d++) put16(o + 2 * d, f16_bits(x[d])); break;
      case KV_BF16: for (int d = 0; d < head_dim; d++) put16(o + 2 * d, bf16_bits(x[d])); break;
      case KV_Q8_0: for (int b = 0; b < head_dim; b += block, o += block_bytes) q8_0_block(x + b, block, o); break;
      case KV_Q4_0: for (int b = 0; b < head_dim; b += block, o += block_bytes) q4_0_block(x + b, block, o); break;
    }
  }
}
