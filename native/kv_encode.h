/* Row encoders of the KV cache's element types (native/kv_encode.c), bit for bit those of
 * src/cache/format.ts. */
#ifndef KVP_KV_ENCODE_H
#define KVP_KV_ENCODE_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Encodes `rows` rows of head_dim floats, row r at src + r·src_stride, into dst + r·row_bytes as
 * `dtype` (KV_F16 … KV_Q4_0 of kv_attn.h; blocks of `block` numbers of block_bytes for q8_0/q4_0). */
void kv_encode_rows(int dtype, const float *src, size_t src_stride, int rows, int head_dim, int block, int block_bytes, uint8_t *dst, size_t row_bytes);

#ifdef __cplusplus
}
#endif
#endif
