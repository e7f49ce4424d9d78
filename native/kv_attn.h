/* Arguments of the paged-cache attention kernels (native/kv_attn.c), shared with the addon. */
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

typedef struct {
  float *out;
  const float *q;
  int rows, num_heads, num_kv_heads, head_dim;
  int dtype, block, block_bytes, row_bytes, page_entries;
  size_t values_offset;                 /* byte offset of the values in a page */
  const uint8_t *const *const *pages;   /* [kv head][page] → page bytes (keys then values) */
  const int32_t *const *const *positions; /* [kv head][page] → the page's entry positions */
  const int32_t *lengths;               /* per KV head: valid entries, the `rows` new ones last */
  const int32_t *query_positions;       /* [rows] */
  int window;                           /* 0: none; else a query at p sees positions > p − window */
  float scale;
  const kv_key_layout *const *key_layouts; /* per KV head: NULL (all head_dim channels) or its pruned keys; NULL: none pruned */
} kv_attn_args;

void kv_attn_row_base(const kv_attn_args *a, int h, int i, float *s);
void kv_attn_row_avx2(const kv_attn_args *a, int h, int i, float *s);
void kv_attn_row_avx512(const kv_attn_args *a, int h, int i, float *s);

#ifdef __cplusplus
}
#endif
#endif
