/*
 * The hot loops of the scoring presses that are not products of the model: Expected Attention's
 * query un-rotation, SnapKV-style window softmax summed over its rows, and CriticalKV's values
 * projected through W_O with their L1 norms. Compiled once per ISA (KV_ISA = base, avx2, avx512),
 * each with its target flags; the addon picks the build of the CPU (addon.cc). Everything is
 * float64 so that the presses' rankings stay those of their TypeScript references
 * (src/presses/*.ts), which the backends without this file (wasm, js) run instead — except the
 * projection's float32 dot products, which are those of the float32 matmul they replace.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "press_kernels.h"
#ifdef __FMA__
#include <immintrin.h>
#endif

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(name, KV_ISA)

typedef double vd4 __attribute__((vector_size(32)));
typedef int64_t vl4 __attribute__((vector_size(32)));

static inline vd4 ld4(const double *p) { vd4 x; memcpy(&x, p, 32); return x; }
static inline void st4(double *p, vd4 x) { memcpy(p, &x, 32); }
static inline vd4 splat4(double x) { return (vd4){x, x, x, x}; }
static inline vd4 as_vd4(vl4 u) { vd4 f; memcpy(&f, &u, 32); return f; }
static inline vl4 as_vl4(vd4 f) { vl4 u; memcpy(&u, &f, 32); return u; }
typedef float vf4 __attribute__((vector_size(16)));
static inline vd4 ldf4(const float *p) { vf4 x; memcpy(&x, p, 16); return __builtin_convertvector(x, vd4); }

/* e^x in float64 for x ≤ 709: n = round(x·log₂e), r = x − n·ln2 in two parts (|r| ≤ 0.347),
 * e^r by its degree-13 Taylor polynomial (truncation < 5e-18 relative, so within about one ulp
 * of a correctly rounded exp, as V8's Math.exp is), then two power-of-two factors 2^n₁ and 2^(n − n₁),
 * n₁ ≈ n/2, so results below 2^-1022 round to subnormals as Math.exp's do. Inputs below
 * −1100 are clamped there (their exp is 0 either way). */
static inline vd4 exp4(vd4 x) {
  const vd4 lo = splat4(-1100.0);
  x = (vd4)(((vl4)(x < lo) & as_vl4(lo)) | (~(vl4)(x < lo) & as_vl4(x)));
  const vd4 magic = splat4(6755399441055744.0); /* 1.5·2^52: adding it rounds to an integer */
  const vd4 t = x * splat4(1.4426950408889634) + magic;
  const vd4 n = t - magic;
  const vl4 ni = as_vl4(t) - as_vl4(magic);
  const vd4 r = (x - n * splat4(6.93147180369123816490e-01)) - n * splat4(1.90821492927058770002e-10);
  /* Estrin's scheme: the same polynomial as Horner's, in a dependency chain of 5 steps, not 13. */
  const vd4 r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
  const vd4 p01 = splat4(1.0) + r, p23 = splat4(0.5) + splat4(1.0 / 6.0) * r;
  const vd4 p45 = splat4(1.0 / 24.0) + splat4(1.0 / 120.0) * r, p67 = splat4(1.0 / 720.0) + splat4(1.0 / 5040.0) * r;
  const vd4 p89 = splat4(1.0 / 40320.0) + splat4(1.0 / 362880.0) * r, p1011 = splat4(1.0 / 3628800.0) + splat4(1.0 / 39916800.0) * r;
  const vd4 p1213 = splat4(1.0 / 479001600.0) + splat4(1.0 / 6227020800.0) * r;
  const vd4 q0 = p01 + p23 * r2, q1 = p45 + p67 * r2, q2 = p89 + p1011 * r2;
  const vd4 p = (q0 + q1 * r4) + (q2 + p1213 * r4) * r8;
  /* n split as round(n/2) + the rest by the same rounding trick (AVX2 has no 64-bit arithmetic shift). */
  const vl4 n1 = as_vl4(n * splat4(0.5) + magic) - as_vl4(magic), n2 = ni - n1;
  return p * as_vd4((n1 + 1023) << 52) * as_vd4((n2 + 1023) << 52);
}

void FN(press_exp64)(double *out, const double *x, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) st4(out + i, exp4(ld4(x + i)));
  if (i < n) {
    double b[4] = {0, 0, 0, 0};
    memcpy(b, x + i, (size_t)(n - i) * 8);
    vd4 e = exp4(ld4(b));
    memcpy(out + i, &e, (size_t)(n - i) * 8);
  }
}

void FN(ea_unrotate)(double *restrict X, double *restrict mu, const float *restrict q, size_t q_stride, int n, int d,
                     const double *restrict cs, const double *restrict sn) {
  const int half = d / 2;
  for (int i = 0; i < d; i++) mu[i] = 0;
  for (int r = 0; r < n; r++) {
    const float *restrict qr = q + (size_t)r * q_stride;
    const double *restrict c = cs + (size_t)r * half, *restrict s = sn + (size_t)r * half;
    double *restrict x = X + (size_t)r * d;
    for (int i = 0; i < half; i++) {
      const double a = qr[i], b = qr[i + half];
      const double u = c[i] * a + s[i] * b, v = c[i] * b - s[i] * a;
      x[i] = u;
      x[i + half] = v;
      mu[i] += u;
      mu[i + half] += v;
    }
  }
  for (int i = 0; i < d; i++) mu[i] /= n;
  for (int r = 0; r < n; r++) {
    double *restrict x = X + (size_t)r * d;
    for (int i = 0; i < d; i++) x[i] -= mu[i];
  }
}

/* Rows of X per pass of ea_gram: 32 rows of 64 doubles (16 KiB) stay in L1 while every tile of
 * the triangle reads them. */
#define GRAM_T 32

/* Columns [j, j + 4·NV) of rows [i, i + 4) of XᵀX over X's rows [t0, t1), added to out. */
static inline __attribute__((always_inline)) void gram_block(double *out, const double *X, int t0, int t1, int d, int i, int j, int NV) {
  vd4 a[4][3];
  for (int r = 0; r < 4; r++)
    for (int v = 0; v < NV; v++) a[r][v] = ld4(out + (size_t)(i + r) * d + j + 4 * v);
  for (int t = t0; t < t1; t++) {
    const double *x = X + (size_t)t * d;
    vd4 u[3];
    for (int v = 0; v < NV; v++) u[v] = ld4(x + j + 4 * v);
    for (int r = 0; r < 4; r++) {
      const vd4 s = splat4(x[i + r]);
      for (int v = 0; v < NV; v++) a[r][v] += s * u[v];
    }
  }
  for (int r = 0; r < 4; r++)
    for (int v = 0; v < NV; v++) st4(out + (size_t)(i + r) * d + j + 4 * v, a[r][v]);
}

/* One head's query row qr rotated back into x [d] (half a multiple of 4): with FMA hardware
 * c·a + s·b as one fused vector step (the same bits wherever it is inlined). With a shift c, x
 * holds the rotated row minus c, also added into acc, in the same pass. */
static inline __attribute__((always_inline)) void unrotate_row(double *x, const float *qr, const double *c, const double *s, int half,
                                                               const double *shift, double *acc) {
  for (int i = 0; i < half; i += 4) {
    const vd4 a = ldf4(qr + i), b = ldf4(qr + i + half), cc = ld4(c + i), ss = ld4(s + i);
#ifdef __FMA__
    vd4 u = (vd4)_mm256_fmadd_pd((__m256d)cc, (__m256d)a, (__m256d)(ss * b)), v = (vd4)_mm256_fmsub_pd((__m256d)cc, (__m256d)b, (__m256d)(ss * a));
#else
    vd4 u = cc * a + ss * b, v = cc * b - ss * a;
#endif
    if (shift) {
      u -= ld4(shift + i);
      v -= ld4(shift + i + half);
      st4(acc + i, ld4(acc + i) + u);
      st4(acc + i + half, ld4(acc + i + half) + v);
    }
    st4(x + i, u);
    st4(x + i + half, v);
  }
}

/* One pass over the rows for mean and covariance: each head's rows are shifted by c, the mean of
 * its first GRAM_T rows, so that Σ(x − c) and Σ(x − c)(x − c)ᵀ stay of the size of the spread
 * (c is within a few standard errors of μ) and μ = c + δ, Σ = S/n − δδᵀ with δ = Σ(x − c)/n
 * lose nothing to cancellation. Rows are rotated back once, in blocks of GRAM_T that stay in L1
 * while the triangle's tiles read them; blocks run over every head in turn so that a block's
 * angles and query rows are read from memory once. */
void FN(ea_moments)(double *restrict mean, double *restrict cov, const float *restrict q, size_t q_stride, int n, int d, int h0,
                    int step, int H, const double *restrict cs, const double *restrict sn, double *restrict xb) {
  const int half = d / 2, n0 = n < GRAM_T ? n : GRAM_T;
  /* mean[h] holds the shift c until the end, cov[h] the upper triangle of S. */
  for (int h = h0; h < H; h += step) {
    double *c = mean + (size_t)h * d;
    for (int i = 0; i < d; i++) c[i] = 0;
    for (int t = 0; t < n0; t++) {
      unrotate_row(xb, q + (size_t)t * q_stride + (size_t)h * d, cs + (size_t)t * half, sn + (size_t)t * half, half, NULL, NULL);
      for (int i = 0; i < d; i += 4) st4(c + i, ld4(c + i) + ld4(xb + i));
    }
    for (int i = 0; i < d; i++) c[i] /= n0;
    if (cov)
      for (size_t k = 0; k < (size_t)d * d; k++) cov[(size_t)h * d * d + k] = 0;
  }
  /* Σ(x − c) per head. */
  double sums[H][d];
  for (int h = h0; h < H; h += step)
    for (int i = 0; i < d; i++) sums[h][i] = 0;
  for (int t0 = 0; t0 < n; t0 += GRAM_T) {
    const int nb = t0 + GRAM_T < n ? GRAM_T : n - t0;
    /* Row by row, every head of this part: the query rows and angle tables are read as one
     * sequential stream, which the hardware prefetcher follows (head by head, rows H·d floats
     * apart, it did not, and software prefetches stalled on their misses). */
    for (int t = 0; t < nb; t++) {
      const size_t row = (size_t)(t0 + t);
      for (int h = h0, k = 0; h < H; h += step, k++)
        unrotate_row(xb + ((size_t)k * GRAM_T + t) * d, q + row * q_stride + (size_t)h * d, cs + row * half, sn + row * half, half,
                     mean + (size_t)h * d, sums[h]);
    }
    if (!cov) continue;
    for (int h = h0, k = 0; h < H; h += step, k++) {
      const double *x = xb + (size_t)k * GRAM_T * d;
      double *S = cov + (size_t)h * d * d;
      for (int i = 0; i < d; i += 4) {
        int j = i;
        for (; j + 12 <= d; j += 12) gram_block(S, x, 0, nb, d, i, j, 3);
        for (; j + 8 <= d; j += 8) gram_block(S, x, 0, nb, d, i, j, 2);
        if (j + 4 <= d) gram_block(S, x, 0, nb, d, i, j, 1);
      }
    }
  }
  for (int h = h0; h < H; h += step) {
    double *mu = mean + (size_t)h * d, delta[d];
    for (int i = 0; i < d; i++) {
      delta[i] = sums[h][i] / n;
      mu[i] += delta[i];
    }
    if (!cov) continue;
    double *S = cov + (size_t)h * d * d;
    for (int i = 0; i < d; i++)
      for (int j = i; j < d; j++) S[(size_t)j * d + i] = S[(size_t)i * d + j] = S[(size_t)i * d + j] / n - delta[i] * delta[j];
  }
}

double FN(ea_log_scores)(double *restrict out, const double *restrict z, size_t stride, int s0, int m, int G, const float *const *restrict vrows,
                         int d, int vnorm, double eps, double *restrict e) {
  double lse[G];
  for (int k = 0; k < G; k++) {
    const double *x = z + (size_t)k * stride;
    double mx = -__builtin_inf();
    for (int t = 0; t < m; t++) mx = x[t] > mx ? x[t] : mx;
    if (mx == __builtin_inf() || mx == -__builtin_inf()) {
      lse[k] = mx;
      continue;
    }
    for (int t = 0; t < m; t++) e[t] = x[t] - mx;
    FN(press_exp64)(e, e, m);
    double sum = 0;
    for (int t = 0; t < m; t++) sum += e[t];
    lse[k] = mx + __builtin_log(sum);
  }
  const double logG = __builtin_log((double)G), logEps = __builtin_log(eps);
  double best = -__builtin_inf();
  for (int t0 = 0; t0 < m; t0 += 4) {
    const int nb = m - t0 < 4 ? m - t0 : 4;
    /* Four keys at a time: per key the group's max of z − lse, then e^(z − lse − max) summed over the group. */
    double zz[G][4], mx[4], sum[4] = {0, 0, 0, 0};
    for (int b = 0; b < 4; b++) {
      mx[b] = -__builtin_inf();
      for (int k = 0; k < G; k++) {
        zz[k][b] = b < nb ? z[(size_t)k * stride + t0 + b] - lse[k] : 0;
        mx[b] = zz[k][b] > mx[b] ? zz[k][b] : mx[b];
      }
    }
    for (int k = 0; k < G; k++) {
      double a[4];
      for (int b = 0; b < 4; b++) a[b] = zz[k][b] - mx[b];
      FN(press_exp64)(a, a, 4);
      for (int b = 0; b < 4; b++) sum[b] += a[b];
    }
    /* The four keys' squared value norms side by side: each is still summed in order of i (the
     * same bits as one key at a time), but four independent chains run where one dependent chain
     * of d additions took most of this function's time. Past m, key t0 stands in. */
    double vv[4] = {0, 0, 0, 0};
    if (vnorm) {
      const float *v[4];
      for (int b = 0; b < 4; b++) v[b] = vrows[t0 + (b < nb ? b : 0)];
      for (int i = 0; i < d; i++)
        for (int b = 0; b < 4; b++) vv[b] += (double)v[b][i] * v[b][i];
    }
    for (int b = 0; b < nb; b++) {
      const int t = t0 + b;
      double sc = mx[b] + __builtin_log(sum[b]) - logG;
      if (vnorm) {
        if (eps > 0) sc = sc == -__builtin_inf() ? logEps : (sc > logEps ? sc : logEps) + __builtin_log1p(__builtin_exp(-__builtin_fabs(sc - logEps)));
        sc += 0.5 * __builtin_log(vv[b]);
      }
      out[s0 + t] = sc;
      if (sc > best) best = sc;
    }
  }
  return best;
}

void FN(window_softmax_sums)(double *restrict acc, const float *restrict logits, int w, int T, int cols, const int *restrict visible,
                             double scale, const double *restrict weights, double *restrict e) {
  for (int r = 0; r < w; r++) {
    const float *restrict z = logits + (size_t)r * T;
    const int v = visible[r];
    if (v == 0) continue;
    /* z·scale widened to float64, and its max (max is exact, so the lanes' order does not matter). */
    const vd4 sc = splat4(scale);
    vd4 m4 = splat4(-__builtin_inf());
    int t = 0;
    for (; t + 4 <= v; t += 4) {
      const vd4 x = ldf4(z + t) * sc;
      st4(e + t, x);
      m4 = (vd4)(((vl4)(x > m4) & as_vl4(x)) | (~(vl4)(x > m4) & as_vl4(m4)));
    }
    double mx = m4[0] > m4[1] ? m4[0] : m4[1];
    mx = m4[2] > mx ? m4[2] : mx;
    mx = m4[3] > mx ? m4[3] : mx;
    for (; t < v; t++) {
      e[t] = z[t] * scale;
      mx = e[t] > mx ? e[t] : mx;
    }
    const vd4 mv = splat4(mx);
    for (t = 0; t + 4 <= v; t += 4) st4(e + t, exp4(ld4(e + t) - mv));
    if (t < v) {
      for (int u = t; u < v; u++) e[u] -= mx;
      FN(press_exp64)(e + t, e + t, v - t);
    }
    vd4 s4 = splat4(0);
    for (t = 0; t + 4 <= v; t += 4) s4 += ld4(e + t);
    double sum = (s4[0] + s4[1]) + (s4[2] + s4[3]);
    for (; t < v; t++) sum += e[t];
    const int m = v < cols ? v : cols;
    if (weights) {
      const double wr = weights[r];
      for (t = 0; t < m; t++) acc[t] += (e[t] / sum) * wr;
    } else {
      for (t = 0; t < m; t++) acc[t] += e[t] / sum;
    }
  }
}

/* CriticalKV's projected value norms without the [rows][D] product in memory: a tile of VN_R
 * values against one 16-column panel of the block keeps VN_R × 16 float32 sums in registers over
 * the head dimension (the product's own float32 dot products), then adds their absolute values
 * to the tile's float64 row sums. The block's 36 panels (D = 576, hd = 64: 147 KB) stay in L2 while
 * each tile (6 rows of 64 floats) stays in L1; nothing is written but the n sums. */
typedef float vn8 __attribute__((vector_size(32)));
typedef int32_t vn8i __attribute__((vector_size(32)));
#define VN_R 6

static inline vn8 vn_ld(const float *p) { vn8 x; memcpy(&x, p, 32); return x; }
static inline vn8 vn_bc(float x) { return (vn8){x, x, x, x, x, x, x, x}; }
static inline vn8 vn_abs(vn8 x) { return (vn8)((vn8i)x & (vn8i){0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff}); }
static inline vd4 vn_sum4(vn8 x) {
  vf4 a, b;
  memcpy(&a, &x, 16);
  memcpy(&b, (const char *)&x + 16, 16);
  return __builtin_convertvector(a, vd4) + __builtin_convertvector(b, vd4);
}

void FN(value_norms_pack)(float *bp, const float *block, int D, int hd) {
  const int panels = (D + 15) / 16;
  for (int p = 0; p < panels; p++)
    for (int j = 0; j < hd; j++)
      for (int c = 0; c < 16; c++) {
        const int i = p * 16 + c;
        bp[((size_t)p * hd + j) * 16 + c] = i < D ? block[(size_t)i * hd + j] : 0.0f;
      }
}

void FN(value_norms_l1)(double *out, const float *v, const int *rows, int first, int n, const float *bp, int D, int hd, double divisor) {
  const int panels = (D + 15) / 16;
  for (int t0 = 0; t0 < n; t0 += VN_R) {
    const int nr = n - t0 < VN_R ? n - t0 : VN_R;
    const float *x[VN_R];
    for (int r = 0; r < VN_R; r++) {
      const int t = t0 + (r < nr ? r : nr - 1);
      x[r] = v + (size_t)(rows ? rows[t] : first + t) * hd;
    }
    vd4 sum[VN_R];
    for (int r = 0; r < VN_R; r++) sum[r] = splat4(0);
    for (int p = 0; p < panels; p++) {
      const float *b = bp + (size_t)p * hd * 16;
      vn8 acc[VN_R][2];
      for (int r = 0; r < VN_R; r++) acc[r][0] = acc[r][1] = vn_bc(0);
      for (int j = 0; j < hd; j++) {
        const vn8 b0 = vn_ld(b + j * 16), b1 = vn_ld(b + j * 16 + 8);
        for (int r = 0; r < VN_R; r++) {
          const vn8 s = vn_bc(x[r][j]);
          acc[r][0] += s * b0;
          acc[r][1] += s * b1;
        }
      }
      for (int r = 0; r < VN_R; r++) sum[r] += vn_sum4(vn_abs(acc[r][0])) + vn_sum4(vn_abs(acc[r][1]));
    }
    for (int r = 0; r < nr; r++) out[t0 + r] += ((sum[r][0] + sum[r][1]) + (sum[r][2] + sum[r][3])) / divisor;
  }
}
