/*
 * WebAssembly SIMD128 build of the kernels: the fallback when the native addon cannot be
 * built. No BLAS here, so the dense product is our own packed register-tile GEMM. The
 * TypeScript side (src/backend/wasm/) copies arguments into the shared linear memory, passes
 * addresses, and splits the big kernels into ranges that worker threads run on their own
 * instances of this module.
 * Build: scripts/build-wasm.sh (clang + lld), output embedded in src/backend/wasm/kernels-wasm.ts;
 * it includes native/kv_attn.c (paged attention) below.
 */
#define VW 4
#define FN(name) name##_wasm
#include "kernels.h"

#define EXPORT(name) __attribute__((export_name(#name)))

EXPORT(rmsnorm) void rmsnorm(float *out, const float *x, const float *w, int rows, int dim, float eps) {
  rmsnorm_wasm(out, x, w, rows, dim, eps);
}

EXPORT(rope) void rope(float *x, int rows, int heads, int hd, const float *cos, const float *sin) {
  rope_wasm(x, rows, heads, hd, cos, sin);
}

EXPORT(silu_mul) void silu_mul(float *g, const float *u, int n) { silu_mul_wasm(g, u, (size_t)n); }

EXPORT(tile_rows) int tile_rows(void) { return TR; }
EXPORT(key_block) int key_block(void) { return KB; }

/* Rows [j0, j1) of out[m×n] = x[m×k]·w[n×k]ᵀ (+ bias); j0 is a multiple of KB, so threads
 * that take disjoint ranges compute the same bits as one thread taking all. Each KB-row panel
 * of w is packed once and swept by TR-row tiles of x. panel: k·KB floats of scratch; edge:
 * TR·KB floats. */
EXPORT(matmul) void matmul(float *out, const float *x, const float *w, int m, int n, int k, const float *bias,
                           float *panel, float *edge, int j0, int j1) {
  if (m == 1) {
    gemv_wasm(out, x, w, j0, j1, k, bias);
    return;
  }
  const float *rows[TR];
  for (int jb = j0; jb < j1; jb += KB) {
    int nb = j1 - jb < KB ? j1 - jb : KB;
    pack_panel_wasm(panel, w, k, jb, nb, k);
    for (int i0 = 0; i0 < m; i0 += TR) {
      int nr = m - i0 < TR ? m - i0 : TR;
      for (int r = 0; r < nr; r++) rows[r] = x + (size_t)(i0 + r) * k;
      micro_wasm(edge, KB, rows, nr, panel, k);
      for (int r = 0; r < nr; r++) {
        float *o = out + (size_t)(i0 + r) * n + jb;
        const float *e = edge + r * KB;
        if (bias)
          for (int j = 0; j < nb; j++) o[j] = e[j] + bias[jb + j];
        else
          for (int j = 0; j < nb; j++) o[j] = e[j];
      }
    }
  }
}

/* Rows [j0, j1) of out[m×n] = x[m×k]·w[n×k]ᵀ (+ bias) with w as bf16 bits: any split of the
 * rows gives the same bits. */
EXPORT(matmul_bf16) void matmul_bf16(float *out, const float *x, const uint16_t *w, int m, int n, int k, const float *bias,
                                     int j0, int j1) {
  gemv_bf16_wasm(out, x, w, m, n, j0, j1, k, bias);
}

/* Attention runs in two steps so that threads can share the second: pack the keys of every KV
 * head (kt_off[g]: float offset of head g's panels in kt), then tiles [it0, it1) of the
 * (KV head, TR query rows) grid. keys/values: per KV head, the address of its [len][hd] copy;
 * kt_off = 0 takes dot products straight from the cache. s: TR·sld floats per thread. */
EXPORT(attention_pack) void attention_pack(int rows, int nh, int nkv, int hd, const float *const *keys,
                                           const int32_t *lengths, float *kt, const int32_t *kt_off) {
  attn_args a = {0, 0, rows, nh, nkv, hd, keys, 0, lengths, 0};
  for (int g = 0; g < nkv; g++) attn_pack_wasm(&a, g, kt + kt_off[g]);
}

EXPORT(attention_tiles) void attention_tiles(float *out, const float *q, int rows, int nh, int nkv, int hd,
                                             const float *const *keys, const float *const *values,
                                             const int32_t *lengths, float scale, float *kt, const int32_t *kt_off,
                                             float *s, int sld, int it0, int it1) {
  attn_args a = {out, q, rows, nh, nkv, hd, keys, values, lengths, scale};
  int nq = rows * (nh / nkv), tiles = (nq + TR - 1) / TR;
  for (int it = it0; it < it1; it++) {
    int g = it / tiles, p0 = (it % tiles) * TR;
    attn_tile_wasm(&a, g, p0, nq - p0 < TR ? nq - p0 : TR, kt_off ? kt + kt_off[g] : 0, s, sld);
  }
}

/* ---- attention over the paged KV cache (native/kv_attn.c), pages in this memory ---- */
#define KV_ISA wasm
#include "kv_attn.c"

/* Tiles [it0, it1) of the (KV head, KV_TQ query vectors) grid. pages: per KV head, the address
 * of its array of page addresses; s: KV_TQ·sld floats, buf: KV_CH·hd floats of scratch; cols:
 * NULL, or [nkv][sld] float64 column sums the tiles add their probabilities to. */
EXPORT(kv_attention) void kv_attention(float *out, const float *q, int rows, int nh, int nkv, int hd, int dtype, int block,
                                       int block_bytes, int row_bytes, int page_entries, int values_offset,
                                       const uint8_t *const *const *pages, const int32_t *lengths, const int32_t *qpos,
                                       int window, float scale, float *s, int sld, float *buf, int it0, int it1,
                                       const kv_key_layout *layouts, double *cols) {
  kv_attn_args a = {out, q, rows, nh, nkv, hd, dtype, block, block_bytes, row_bytes, page_entries,
                    (size_t)values_offset, 2 * (size_t)values_offset, pages, lengths, qpos, window, scale, NULL,
                    cols, (size_t)sld};
  /* layouts: NULL, or per KV head its channel-pruned key layout (dim 0: all head_dim channels). */
  const kv_key_layout *kl[nkv];
  if (layouts) {
    for (int g = 0; g < nkv; g++) kl[g] = layouts[g].dim > 0 ? &layouts[g] : NULL;
    a.key_layouts = kl;
  }
  const int nq = rows * (nh / nkv), tiles = (nq + KV_TQ - 1) / KV_TQ;
  for (int it = it0; it < it1; it++) {
    const int g = it / tiles, p0 = (it % tiles) * KV_TQ;
    kv_attn_tile_wasm(&a, g, p0, nq - p0 < KV_TQ ? nq - p0 : KV_TQ, s, (size_t)sld, buf);
  }
}

EXPORT(kv_tile_queries) int kv_tile_queries(void) { return KV_TQ; }
EXPORT(kv_run_entries) int kv_run_entries(void) { return KV_CH; }
