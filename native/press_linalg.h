/* Small float64 linear algebra of the leverage presses (press_linalg.c): LeverageScore,
 * Compactor, Cap and KeyDiff. One portable build; the n·d² products stay on the ISA kernels
 * (gram64, eaLogits64), these are the n·d gathers and the d·k-sized products around them. */
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* c [m][n] = op(a)·b, b [k][n]; op(a) = a [m][k], or aᵀ with a stored [k][m] when trans_a. */
void pl_gemm64(double *c, const double *a, const double *b, int m, int n, int k, int trans_a);

/* The n rows src[t·stride …+d]: copied into k32 [n][d] (unless NULL), their column mean
 * (summed over t in order, / n) into mean [d], and the centered rows into x [n][d]. */
void pl_center_rows(float *k32, double *x, double *mean, const float *src, size_t stride, int n, int d);

/* x[t][j] = scale[t]·src[t·stride + j] for t < n, j < d. */
void pl_scale_rows(double *x, const float *src, size_t stride, int n, int d, const double *scale);

/* For the n rows r_t = src[index[t]·stride …+d] (index NULL: row t): out[i·n + t] = r_t·vecs[i·d …]
 * for i < g and, when norms, out[g·n + t] = ‖r_t‖², each summed over j in order in float64. */
void pl_row_dots(double *out, const float *src, size_t stride, int n, int d, const double *vecs, int g, const int *index, int norms);

/* w [d][d] = BᵀB with B = L⁻¹pᵀ (L [k][k] lower triangular, p [d][k]): forward substitution on
 * each of p's d rows, then the symmetric product. b: d·k doubles of scratch. */
void pl_inverse_form(double *w, const double *l, int k, const double *p, int d, double *b);

#ifdef __cplusplus
}
#endif
