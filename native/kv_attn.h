/* Arguments of the paged-cache attention kernels (native/kv_attn.c), shared with the addon and
 * the WebAssembly module. */
#ifndef KVP_KV_ATTN_H
#define KVP_KV_ATTN_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { KV_F32 = 0, KV_F16 = 1, KV_BF16 = 2, KV_Q8_0 = 3, KV_Q4_0 = 4 };

/* The keys of a KV head whose key channels a press pruned (ThinK): each entry stores `dim` numbers,
 * the n_kept kept channels then zero pads, as `dtype` rows of row_bytes; values keep head_dim. */
typedef struct {
  const int32_t *channels; /* [n_kept]: the query channel each stored number pairs with */
  int n_kept, dim, block, block_bytes, row_bytes;
} kv_key_layout;

/* Query vectors per tile (GQA group heads × consecutive rows) and entries per run (the rows
 * widened at once into the L1 buffer: KV_CH·head_dim floats). */
#define KV_TQ 32
#define KV_CH 32

typedef struct {
  float *out;
  const float *q;
  int rows, num_heads, num_kv_heads, head_dim;
  int dtype, block, block_bytes, row_bytes, page_entries;
  size_t values_offset;                 /* byte offset of the values in a page */
  size_t positions_offset;              /* byte offset of the entries' Int32 positions in a page */
  const uint8_t *const *const *pages;   /* [kv head][page] → page bytes (keys, values, positions) */
  const int32_t *lengths;               /* per KV head: valid entries, the `rows` new ones last */
  const int32_t *query_positions;       /* [rows] */
  int window;                           /* 0: none; else a query at p sees positions > p − window */
  float scale;
  const kv_key_layout *const *key_layouts; /* per KV head: NULL (all head_dim channels) or its pruned keys; NULL: none pruned */
  /* NULL, or [num_kv_heads][col_stride] float64 (col_stride ≥ lengths[g]): every query vector's softmax
   * probability of entry t is added to col_sums[g·col_stride + t] (the column sums a press such as
   * observed attention reads; a tile adds its rows once they are normalised). */
  double *col_sums;
  size_t col_stride;
} kv_attn_args;

/* Query vectors [p0, p0 + nr) (nr ≤ KV_TQ) of KV head g, numbered row-major over (row, head of
 * the group). s: KV_TQ·sld floats, sld ≥ lengths[g]; buf: KV_CH·head_dim floats. */
void kv_attn_tile_base(const kv_attn_args *a, int g, int p0, int nr, float *s, size_t sld, float *buf);
void kv_attn_tile_avx2(const kv_attn_args *a, int g, int p0, int nr, float *s, size_t sld, float *buf);
void kv_attn_tile_avx512(const kv_attn_args *a, int g, int p0, int nr, float *s, size_t sld, float *buf);
void kv_attn_tile_wasm(const kv_attn_args *a, int g, int p0, int nr, float *s, size_t sld, float *buf);

#ifdef __cplusplus
}
#endif
#endif
