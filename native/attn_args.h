/* Arguments of the attention kernels, shared by the C kernels and the C++ addon. */
#ifndef KVP_ATTN_ARGS_H
#define KVP_ATTN_ARGS_H
#include <stdint.h>

typedef struct {
  float *out;
  const float *q;
  int rows, num_heads, num_kv_heads, head_dim;
  const float *const *keys;   /* per KV head: [capacity][head_dim] */
  const float *const *values; /* per KV head: [capacity][head_dim] */
  const int32_t *lengths;     /* per KV head: valid entries, the `rows` new ones last */
  float scale;
} attn_args;

#endif
