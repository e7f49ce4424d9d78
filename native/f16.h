/* f16 → f32 for the KV cache's kernels (kv_attn.c, kv_encode.c): exact, NaN for NaN. */
#ifndef KVP_F16_H
#define KVP_F16_H
#include <stdint.h>

/* The 15 magnitude bits moved to f32's place and scaled by 2^112 give every normal and
 * subnormal f16 value; ∞/NaN exponents are then forced and the sign put back. */
static inline float f16_value(uint16_t h) {
  const uint32_t em = h & 0x7fffu, in = em << 13;
  float f;
  __builtin_memcpy(&f, &in, 4);
  f *= 0x1p112f;
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  u |= (em >= 0x7c00 ? 0x7f800000u : 0) | (uint32_t)(h & 0x8000) << 16;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

#endif
