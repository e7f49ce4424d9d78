/* Attention statistics for the presses that score entries by the attention they receive
 * (ObservedAttention, NonCausalAttn, Compactor, KVzip): per query head, the column sums or column
 * maxima of a row-softmax over ranges of one KV head's keys, never materialising rows × keys.
 * Kernels in native/press_attn.c, compiled once per ISA; glue in native/addon.cc. */
#ifndef KVP_PRESS_ATTN_H
#define KVP_PRESS_ATTN_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { PA_SUM = 0, PA_MAX = 1 };

/* Keys per packed panel ([head_dim][PA_KB] floats, zero padded) and query rows per tile. */
#define PA_KB 16
#define PA_TR 6

typedef struct {
  const float *q;     /* row r of the head: q + r·q_stride, head_dim floats */
  size_t q_stride;
  int rows, n_keys, head_dim;
  const float *kt;    /* the n_keys keys packed by press_attn_pack */
  const int32_t *lo, *hi; /* row r sees keys [lo[r], hi[r]) (lo < hi ≤ n_keys) */
  const int32_t *pad; /* NULL, or per row: extra keys outside the cache of logit pad_logit in its softmax */
  float pad_logit;
  float scale;        /* logit = scale · q·k */
  const float *row_weight; /* NULL, or per row: its probabilities × row_weight[r] */
  int mode;           /* PA_SUM: out[t] += Σ_r p; PA_MAX: out[t] = max(out[t], max_r p) */
} press_attn_args;

/* Packed size in floats of n keys of head_dim: whole panels plus one spare. */
static inline size_t press_attn_packed_floats(int n, int hd) { return ((size_t)(n + PA_KB - 1) / PA_KB + 1) * PA_KB * hd; }

/* Rows [r0, r1) of one head into out[0 … n_keys); s: PA_TR·sld floats, sld ≥ n_keys + PA_KB. */
void press_attn_rows_base(const press_attn_args *a, int r0, int r1, double *out, float *s, size_t sld);
void press_attn_rows_avx2(const press_attn_args *a, int r0, int r1, double *out, float *s, size_t sld);
void press_attn_rows_avx512(const press_attn_args *a, int r0, int r1, double *out, float *s, size_t sld);
void press_attn_pack_base(float *kt, const float *keys, int n, int hd);
void press_attn_pack_avx2(float *kt, const float *keys, int n, int hd);
void press_attn_pack_avx512(float *kt, const float *keys, int n, int hd);

#ifdef __cplusplus
}
#endif
#endif
