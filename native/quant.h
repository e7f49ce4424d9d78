/* Products with weights kept in ggml's block formats (native/quant.c), shared with the addon.
 * Types are ggml's ids (src/model/quant/formats.ts): F16 1, Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7,
 * Q8_0 8, Q2_K 10, Q3_K 11, Q4_K 12, Q5_K 13, Q6_K 14. Rows hold k values as k / block blocks. */
#ifndef KVP_QUANT_H
#define KVP_QUANT_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A matrix of `type` blocks, rows row_bytes apart, k values a row: the weights of a prefill
 * product, which the GEMM (native/gemm.h) packs a few columns of a few rows at a time. */
typedef struct {
  int type, k;
  const uint8_t *w;
  size_t row_bytes;
} quant_matrix;

/* Bytes of one activation row of k values quantized for products with `type`: blocks of 32
 * (f32 d, f32 d·Σq, 32 int8) for the legacy formats, of 256 (f32 d, 16 int16 sums, 256 int8) for
 * the K-quants; F16 products take the f32 row itself. */
static inline size_t quant_act_bytes(int type, int k) {
  if (type == 1) return (size_t)k * 4;
  return type >= 10 && type <= 14 ? (size_t)(k / 256) * 292 : (size_t)(k / 32) * 40;
}

#define QUANT_DECLARE(S)                                                                                     \
  /* One activation row x[k] quantized to 8-bit blocks (q8 per 32, or per 256 with sums per 16). */          \
  void quant_act_##S(int type, const float *x, int k, uint8_t *act);                                         \
  /* out[i·ldo + j] = w[j] · act_i (+ bias[j]) for i < m, j in [j0, j1); act rows act_stride bytes apart. */ \
  void quant_matvec_##S(int type, float *out, size_t ldo, const uint8_t *act, size_t act_stride, int m,      \
                        const uint8_t *w, size_t row_bytes, int j0, int j1, int k, const float *bias);       \
  /* Values [p0, p0 + n) of row j dequantized to f32 at dst[0, n) (any range: blocks cut by it are   \
   * dequantized whole and the range copied out). */                                                   \
  void quant_dequant_##S(const quant_matrix *m, int j, int p0, int n, float *dst);
QUANT_DECLARE(base)
#if defined(__x86_64__)
QUANT_DECLARE(avx2)
QUANT_DECLARE(avx512)
QUANT_DECLARE(avx512vnni) /* the avx2 code with vpdpbusd (AVX512-VNNI, 256-bit vectors) */
#endif

#ifdef __cplusplus
}
#endif
#endif
