/* Declarations of the kernels of one ISA build (see kernels.h), as a table the addon selects
 * from at load time. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "attn_args.h"
#include "quant.h"

extern "C" {

#define KVP_DECLARE(S)                                                                               \
  void rmsnorm_##S(float *, const float *, const float *, int, int, float);                          \
  void rope_##S(float *, int, int, int, const float *, const float *);                               \
  void silu_mul_##S(float *, const float *, size_t);                                                 \
  void gemv_##S(float *, const float *, const float *, int, int, int, const float *);                \
  void gemv_bf16_##S(float *, const float *, const uint16_t *, int, int, int, int, int, const float *); \
  void attn_pack_##S(const attn_args *, int, float *);                                               \
  void attn_tile_##S(const attn_args *, int, int, int, const float *, float *, size_t);              \
  float fma_probe_##S(long);                                                                         \
  int tile_rows_##S(void);                                                                           \
  int key_block_##S(void);                                                                           \
  void gram64_##S(double *, const double *, int, int, int, int);                                     \
  void ea_logits64_##S(double *, const float *, int, int, int, int, const double *, const double *, size_t, int, int, double *); \
  int ea_key_block_##S(void);                                                                        \
  void gemm_f32_##S(float *, const float *, const float *, int, int, const float *, int, int, int, int, int, int, int, float *); \
  void gemm_bf16_##S(float *, const float *, const uint16_t *, int, int, const float *, int, int, int, int, int, int, int, float *); \
  void gemm_quant_##S(float *, const float *, const quant_matrix *, int, int, const float *, int, int, int, int, int, int, int, float *); \
  int gemm_rows_##S(void);                                                                           \
  int gemm_cols_##S(void);                                                                           \
  size_t gemm_scratch_##S(int, int, int);
KVP_DECLARE(base)
#if defined(__x86_64__)
KVP_DECLARE(avx2)
KVP_DECLARE(avx512)
// AVX512-BF16: the bf16 product on vdpbf16ps and its peak probe (k_avx512bf16.c).
void gemm_bf16_avx512bf16(float *, const float *, const uint16_t *, int, int, const float *, int, int, int, int, int, int, int, float *);
float bf16_probe_avx512bf16(long);
#endif
}

struct KernelSet {
  const char *isa;
  int vector_floats;
  decltype(&rmsnorm_base) rmsnorm;
  decltype(&rope_base) rope;
  decltype(&silu_mul_base) silu_mul;
  decltype(&gemv_base) gemv;
  decltype(&gemv_bf16_base) gemv_bf16;
  decltype(&attn_pack_base) attn_pack;
  decltype(&attn_tile_base) attn_tile;
  decltype(&fma_probe_base) fma_probe;
  int tile_rows, key_block;
  decltype(&gram64_base) gram64;
  decltype(&ea_logits64_base) ea_logits64;
  int ea_key_block;
  decltype(&gemm_f32_base) gemm_f32;
  decltype(&gemm_bf16_base) gemm_bf16;
  decltype(&gemm_quant_base) gemm_quant;
  int gemm_rows, gemm_cols;
  decltype(&gemm_scratch_base) gemm_scratch;
  // Which tile runs the bf16 product ("avx512bf16" when vdpbf16ps does), and its ceiling's
  // probe (null where bf16 goes by conversion to f32: the FMA probe is then its ceiling).
  const char *bf16_isa;
  float (*bf16_probe)(long);
};

#define KVP_SET(S, VWF) \
  KernelSet { #S, VWF, rmsnorm_##S, rope_##S, silu_mul_##S, gemv_##S, gemv_bf16_##S, attn_pack_##S, attn_tile_##S, fma_probe_##S, tile_rows_##S(), key_block_##S(), \
            gram64_##S, ea_logits64_##S, ea_key_block_##S(), gemm_f32_##S, gemm_bf16_##S, gemm_quant_##S, gemm_rows_##S(), gemm_cols_##S(), \
            gemm_scratch_##S, #S, nullptr }
