/*
 * The bf16 product on AVX512-BF16 (compiled with -mavx512bf16 besides the AVX-512 flags): the
 * driver and blocking of gemm.h (loop order, K blocks, sliver in L1), with panels of bf16 pairs and a tile on vdpbf16ps, which takes
 * two bf16 products per 32-bit lane and adds them in f32 — twice the multiply-adds of an f32 FMA
 * per instruction. Same tile geometry as the AVX-512 f32 build (8 rows × 32 columns).
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#define BM 8
#define BN 32

static inline uint16_t round_bf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* Weight rows [j0, j0+nb) × columns [p0, p0+kb) into panels of BN rows, [kb/2][BN] pairs each
 * (column p0+2q in the low half, p0+2q+1 in the high half; past the edges zero). */
static void pack_w(uint32_t *dst, const uint16_t *w, size_t ldw, int j0, int nb, int p0, int kb) {
  const int kp = (kb + 1) / 2;
  for (int jp = 0; jp < nb; jp += BN) {
    uint32_t *d = dst + (size_t)(jp / BN) * kp * BN;
    int cnt = nb - jp < BN ? nb - jp : BN;
    for (int j = 0; j < cnt; j++) {
      const uint16_t *src = w + (size_t)(j0 + jp + j) * ldw + p0;
      int q = 0;
      for (; 2 * q + 1 < kb; q++) d[(size_t)q * BN + j] = (uint32_t)src[2 * q] | (uint32_t)src[2 * q + 1] << 16;
      if (q < kp) d[(size_t)q * BN + j] = src[2 * q];
    }
    for (int j = cnt; j < BN; j++)
      for (int q = 0; q < kp; q++) d[(size_t)q * BN + j] = 0;
  }
}

/* Input rows [i0, i0+mb) × columns [p0, p0+kb), rounded to bf16, into slivers of BM rows,
 * [kb/2][BM] pairs each. */
static void pack_x(uint32_t *dst, const float *x, size_t ldx, int i0, int mb, int p0, int kb) {
  const int kp = (kb + 1) / 2;
  for (int ip = 0; ip < mb; ip += BM) {
    uint32_t *d = dst + (size_t)(ip / BM) * kp * BM;
    int cnt = mb - ip < BM ? mb - ip : BM;
    for (int r = 0; r < BM; r++) {
      if (r >= cnt) {
        for (int q = 0; q < kp; q++) d[(size_t)q * BM + r] = 0;
        continue;
      }
      const float *src = x + (size_t)(i0 + ip + r) * ldx + p0;
      int q = 0;
      for (; 2 * q + 1 < kb; q++) d[(size_t)q * BM + r] = (uint32_t)round_bf16(src[2 * q]) | (uint32_t)round_bf16(src[2 * q + 1]) << 16;
      if (q < kp) d[(size_t)q * BM + r] = round_bf16(src[2 * q]);
    }
  }
}

static inline __attribute__((always_inline)) void tile(float *c, size_t ldc, const uint32_t *a, const uint32_t *b, int kp,
                                                       const float *init, int load) {
  __m512 acc[BM][2];
  for (int r = 0; r < BM; r++) {
    if (load) {
      acc[r][0] = _mm512_loadu_ps(c + r * ldc);
      acc[r][1] = _mm512_loadu_ps(c + r * ldc + 16);
    } else if (init) {
      acc[r][0] = _mm512_loadu_ps(init);
      acc[r][1] = _mm512_loadu_ps(init + 16);
    } else {
      acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    }
  }
  for (int q = 0; q < kp; q++) {
    __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + (size_t)q * BN), b1 = (__m512bh)_mm512_loadu_si512(b + (size_t)q * BN + 16);
    for (int r = 0; r < BM; r++) {
      __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[(size_t)q * BM + r]);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
    }
  }
  for (int r = 0; r < BM; r++) {
    _mm512_storeu_ps(c + r * ldc, acc[r][0]);
    _mm512_storeu_ps(c + r * ldc + 16, acc[r][1]);
  }
}

static void edge(float *c, size_t ldc, int rows, int cols, const uint32_t *a, const uint32_t *b, int kp, const float *init,
                 int load, float *t) {
  float *ib = t + BM * BN;
  for (int r = 0; r < BM; r++)
    for (int j = 0; j < BN; j++) t[r * BN + j] = load && r < rows && j < cols ? c[r * ldc + j] : 0.0f;
  if (init)
    for (int j = 0; j < BN; j++) ib[j] = j < cols ? init[j] : 0.0f;
  tile(t, BN, a, b, kp, init ? ib : 0, load);
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < cols; j++) c[r * ldc + j] = t[r * BN + j];
}

/* As gemm_bf16 of gemm.h (same arguments, scratch of gemm_scratch_avx512 floats, equal K
 * blocks as gemm_balance makes them). */
void gemm_bf16_avx512bf16(float *out, const float *x, const uint16_t *w, int n, int k, const float *bias, int i0, int i1,
                          int j0, int j1, int kc, int mc, int nc, float *scratch) {
  const size_t kmax = (size_t)kc + kc / 2 + 2;
  uint32_t *wp = (uint32_t *)scratch;
  uint32_t *xp = wp + kmax * ((nc + BN - 1) / BN * BN);
  float *t = (float *)(xp + kmax * ((mc + BM - 1) / BM * BM));
  int blocks = (k + kc / 2) / kc;
  if (blocks < 1) blocks = 1;
  int kb0 = (k + blocks - 1) / blocks;
  kb0 += kb0 & 1;
  if (kb0 > kc) { /* a longer K block gets fewer rows, so that a packed block keeps its bytes */
    mc = (int)((long)mc * kc / kb0 / BM * BM);
    nc = (int)((long)nc * kc / kb0 / BN * BN);
    if (mc < BM) mc = BM;
    if (nc < BN) nc = BN;
  }
  /* Input blocks of even size, as gemm_even_rows of gemm.h. */
  for (int blocks = (i1 - i0 + mc - 1) / mc; blocks < i1 - i0; blocks++) {
    const int b = ((i1 - i0 + blocks - 1) / blocks + BM - 1) / BM * BM;
    if (b <= mc) {
      mc = b;
      break;
    }
  }
  for (int pc = 0; pc < k; pc += kb0) {
    const int kb = k - pc < kb0 ? k - pc : kb0, kp = (kb + 1) / 2, load = pc > 0;
    for (int ic = i0; ic < i1; ic += mc) {
      const int mb = i1 - ic < mc ? i1 - ic : mc;
      pack_x(xp, x, (size_t)k, ic, mb, pc, kb);
      for (int jc = j0; jc < j1; jc += nc) {
        const int nb = j1 - jc < nc ? j1 - jc : nc;
        pack_w(wp, w, (size_t)k, jc, nb, pc, kb);
        for (int ir = 0; ir < mb; ir += BM) {
          const uint32_t *a = xp + (size_t)(ir / BM) * kp * BM;
          const int rows = mb - ir < BM ? mb - ir : BM;
          for (int jr = 0; jr < nb; jr += BN) {
            const uint32_t *b = wp + (size_t)(jr / BN) * kp * BN;
            const float *init = !load && bias ? bias + jc + jr : 0;
            const int cols = nb - jr < BN ? nb - jr : BN;
            float *c = out + (size_t)(ic + ir) * n + jc + jr;
            if (load)
              for (int r = 0; r < rows; r++) __builtin_prefetch(c + BN + (size_t)r * n, 1, 3);
            if (rows == BM && cols == BN) tile(c, (size_t)n, a, b, kp, init, load);
            else edge(c, (size_t)n, rows, cols, a, b, kp, init, load, t);
          }
        }
      }
    }
  }
}

/* The bf16 ceiling: 12 independent vdpbf16ps chains, 12·16·2 multiply-adds per iteration. */
float bf16_probe_avx512bf16(long iters) {
  __m512 acc[12];
  for (int j = 0; j < 12; j++) acc[j] = _mm512_set1_ps(1.0f + j * 1e-3f);
  __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x33d633d6);
  for (long i = 0; i < iters; i++) {
    for (int j = 0; j < 12; j++) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
#ifdef SIMDE_VERSION /* the emulation test build (scripts/check-avx512-emulated.sh) has no 512-bit registers */
    __asm__ volatile("" : : "r"(&a) : "memory");
#else
    __asm__ volatile("" : "+v"(a));
#endif
  }
  __m512 s = _mm512_setzero_ps();
  for (int j = 0; j < 12; j++) s = _mm512_add_ps(s, acc[j]);
  return _mm512_reduce_add_ps(s);
}
