/* Scoring kernels of the presses (press_kernels.c), one build per ISA. */
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PRESS_DECLARE(S)                                                                                        \
  /* out[i] = e^x[i] (float64, within about an ulp; x ≤ 709). */                                               \
  void press_exp64_##S(double *out, const double *x, int n);                                                    \
  /* Rows r < n of one head's post-RoPE queries q (q_stride apart) rotated back by the angle tables cs/sn      \
   * [n][d/2] into X [n][d], their mean into mu [d], then X centered on it. */                                  \
  void ea_unrotate_##S(double *X, double *mu, const float *q, size_t q_stride, int n, int d, const double *cs,  \
                       const double *sn);                                                                       \
  /* For the query heads h = h0, h0 + step, … < H: mean (mean[h·d …]) and, unless cov is NULL, population   \
   * covariance (cov[h·d·d …], full symmetric) of the n rows of post-RoPE queries q (head h at h·d) rotated  \
   * back as in ea_unrotate, in one pass without storing them: rows shifted by the mean of the first 32,     \
   * 32 at a time through xb (32·d doubles per head of the part). d a multiple of 8. */                         \
  void ea_moments_##S(double *mean, double *cov, const float *q, size_t q_stride, int n, int d, int h0, int step, \
                      int H, const double *cs, const double *sn, double *xb);                                   \
  /* Expected Attention's log-scores out[s0 + t] of one KV head's m non-sink keys from their logits z      \
   * [G][stride]: log-softmax per head, log-mean-exp over the G heads, with vnorm log(p + eps) +   \
   * log‖v‖₂ (vrows[t]: the d values of key s0 + t). Returns the largest score. e: m doubles of scratch. */   \
  double ea_log_scores_##S(double *out, const double *z, size_t stride, int s0, int m, int G,                   \
                           const float *const *vrows,                                                           \
                           int d, int vnorm, double eps, double *e);                                            \
  /* For each of the w rows of logits [w][T]: softmax (float64) of logit·scale over its first visible[r]        \
   * entries, and acc[t] += p[t]·weights[r] (weights NULL: 1) for t < min(visible[r], cols). e: T doubles. */   \
  void window_softmax_sums_##S(double *acc, const float *logits, int w, int T, int cols, const int *visible,    \
                               double scale, const double *weights, double *e);                                 \
  /* The block [D][hd] as ⌈D/16⌉ panels [hd][16] (zero columns past D) for value_norms_l1. */                  \
  void value_norms_pack_##S(float *bp, const float *block, int D, int hd);                                      \
  /* out[t] += Σ_i |block_i · v_r| / divisor for t < n, r = rows[t] (rows NULL: r = t0 + t) of v [·][hd],     \
   * block packed by value_norms_pack. */                                                                       \
  void value_norms_l1_##S(double *out, const float *v, const int *rows, int t0, int n, const float *bp, int D,   \
                          int hd, double divisor);

PRESS_DECLARE(base)
#if defined(__x86_64__)
PRESS_DECLARE(avx2)
PRESS_DECLARE(avx512)
#endif

#ifdef __cplusplus
}
#endif
