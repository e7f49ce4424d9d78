/* Float64 building blocks of the leverage presses; see press_linalg.h. Plain loops in the order
 * of the TypeScript fallback (src/presses/linalg64.ts), so the two backends agree to rounding. */
#include "press_linalg.h"

#include <string.h>

void pl_gemm64(double *c, const double *a, const double *b, int m, int n, int k, int trans_a) {
  memset(c, 0, sizeof(double) * (size_t)m * n);
  for (int i = 0; i < m; i++) {
    double *ci = c + (size_t)i * n;
    for (int p = 0; p < k; p++) {
      const double aip = trans_a ? a[(size_t)p * m + i] : a[(size_t)i * k + p];
      const double *bp = b + (size_t)p * n;
      for (int j = 0; j < n; j++) ci[j] += aip * bp[j];
    }
  }
}

void pl_center_rows(float *k32, double *x, double *mean, const float *src, size_t stride, int n, int d) {
  memset(mean, 0, sizeof(double) * d);
  for (int t = 0; t < n; t++) {
    const float *r = src + (size_t)t * stride;
    if (k32) memcpy(k32 + (size_t)t * d, r, sizeof(float) * d);
    for (int j = 0; j < d; j++) mean[j] += r[j];
  }
  for (int j = 0; j < d; j++) mean[j] /= n;
  for (int t = 0; t < n; t++) {
    const float *r = src + (size_t)t * stride;
    double *xt = x + (size_t)t * d;
    for (int j = 0; j < d; j++) xt[j] = r[j] - mean[j];
  }
}

void pl_scale_rows(double *x, const float *src, size_t stride, int n, int d, const double *scale) {
  for (int t = 0; t < n; t++) {
    const float *r = src + (size_t)t * stride;
    double *xt = x + (size_t)t * d;
    for (int j = 0; j < d; j++) xt[j] = scale[t] * r[j];
  }
}

void pl_row_dots(double *out, const float *src, size_t stride, int n, int d, const double *vecs, int g, const int *index, int norms) {
  for (int t = 0; t < n; t++) {
    const float *r = src + (size_t)(index ? index[t] : t) * stride;
    if (norms) {
      double ss = 0;
      for (int j = 0; j < d; j++) ss += (double)r[j] * r[j];
      out[(size_t)g * n + t] = ss;
    }
    for (int i = 0; i < g; i++) {
      const double *v = vecs + (size_t)i * d;
      double s = 0;
      for (int j = 0; j < d; j++) s += r[j] * v[j];
      out[(size_t)i * n + t] = s;
    }
  }
}

void pl_inverse_form(double *w, const double *l, int k, const double *p, int d, double *b) {
  for (int i = 0; i < d; i++) {
    double *bi = b + (size_t)i * k;
    for (int a = 0; a < k; a++) {
      double s = p[(size_t)i * k + a];
      const double *la = l + (size_t)a * k;
      for (int c = 0; c < a; c++) s -= la[c] * bi[c];
      bi[a] = s / la[a];
    }
  }
  for (int i = 0; i < d; i++) {
    for (int j = i; j < d; j++) {
      const double *bi = b + (size_t)i * k, *bj = b + (size_t)j * k;
      double s = 0;
      for (int a = 0; a < k; a++) s += bi[a] * bj[a];
      w[(size_t)i * d + j] = w[(size_t)j * d + i] = s;
    }
  }
}
