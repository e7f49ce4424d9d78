/*
 * Test-only (scripts/check-avx512-emulated.sh): force-included into addon.cc of the emulation
 * build so that its CPU check reports AVX-512 (and AVX512-BF16) on a CPU without them, and the
 * emulated kernels are the ones selected. KVPRESS_EMU_ISA picks what is reported:
 *   avx512bf16 (default)  AVX-512F/BW/DQ/VL, VNNI and AVX512-BF16
 *   avx512                AVX-512F/BW/DQ/VL and VNNI only (bf16 products by conversion, as on Ice Lake)
 *   off                   the CPU's own answers
 * Every other feature is the CPU's own answer; KVPRESS_NATIVE_ISA still caps the choice.
 */
#ifndef KVP_EMU_FORCE_CPU_H
#define KVP_EMU_FORCE_CPU_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline int kvp_emu_cpu_supports(const char *feature, int real) {
  const char *isa = getenv("KVPRESS_EMU_ISA");
  if (!isa || !*isa) isa = "avx512bf16";
  if (!strcmp(isa, "off")) return real;
  const int bf16 = !strcmp(isa, "avx512bf16");
  if (!bf16 && strcmp(isa, "avx512")) {
    fprintf(stderr, "KVPRESS_EMU_ISA must be avx512bf16, avx512 or off, not %s\n", isa);
    abort();
  }
  if (!strcmp(feature, "avx512bf16")) return bf16;
  if (!strcmp(feature, "avx512f") || !strcmp(feature, "avx512bw") || !strcmp(feature, "avx512dq") ||
      !strcmp(feature, "avx512vl") || !strcmp(feature, "avx512vnni"))
    return 1;
  return real;
}
/* The builtin inside the replacement is not expanded again: it is the CPU's real answer. */
#define __builtin_cpu_supports(feature) kvp_emu_cpu_supports(feature, __builtin_cpu_supports(feature))
#endif
