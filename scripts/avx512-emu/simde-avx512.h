/*
 * Test-only (scripts/check-avx512-emulated.sh): force-included (-include) into every AVX-512
 * translation unit of the emulation build, which is compiled without -mavx512*. SIMDe's native
 * aliases turn the _mm512_* intrinsics into its portable implementations, so the AVX-512 and
 * AVX512-BF16 kernels run on a CPU that has neither; the vector-extension kernels (VW 16) need
 * nothing, GCC splits their 64-byte vectors itself.
 */
#ifndef KVP_EMU_SIMDE_AVX512_H
#define KVP_EMU_SIMDE_AVX512_H
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <stdint.h>
#include <string.h>

/* The kernels include <immintrin.h> themselves; its declarations of the _mm512_* functions
 * would clash with SIMDe's aliases of the same names, and SIMDe already brought in whatever
 * native intrinsics this build may use. */
#ifndef _IMMINTRIN_H_INCLUDED
#define _IMMINTRIN_H_INCLUDED
#endif

/* vdpbf16ps as Intel's SDM defines it, rather than SIMDe's approximation of it: per f32 lane,
 * the odd pair's product is added first, then the even pair's, each addition rounded to
 * nearest even (a product of two bf16 is exact in f32); denormal inputs read as zero and
 * denormal results are flushed to zero (DAZ/FTZ whatever MXCSR says). */
static inline float kvp_emu_daz(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0 && (u & 0x7fffffu)) u &= 0x80000000u;
  memcpy(&f, &u, 4);
  return f;
}
static inline float kvp_emu_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return kvp_emu_daz(f);
}
static inline simde__m512 kvp_emu_dpbf16_ps(simde__m512 src, simde__m512bh a, simde__m512bh b) {
  float s[16];
  uint16_t x[32], y[32];
  memcpy(s, &src, 64);
  memcpy(x, &a, 64);
  memcpy(y, &b, 64);
  for (int i = 0; i < 16; i++) {
    volatile float t = kvp_emu_daz(s[i]) + kvp_emu_bf16(x[2 * i + 1]) * kvp_emu_bf16(y[2 * i + 1]);
    volatile float r = kvp_emu_daz(t) + kvp_emu_bf16(x[2 * i]) * kvp_emu_bf16(y[2 * i]);
    s[i] = kvp_emu_daz(r);
  }
  memcpy(&src, s, 64);
  return src;
}
#undef _mm512_dpbf16_ps
#define _mm512_dpbf16_ps(src, a, b) kvp_emu_dpbf16_ps(src, a, b)

/* Not in SIMDe 0.7: the sum of the 16 lanes, halving the width as GCC's own sequence does. */
static inline float kvp_emu_reduce_add_ps(simde__m512 v) {
  float s[16];
  memcpy(s, &v, 64);
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; i++) s[i] += s[i + w];
  return s[0];
}
#undef _mm512_reduce_add_ps
#define _mm512_reduce_add_ps(v) kvp_emu_reduce_add_ps(v)
#endif
