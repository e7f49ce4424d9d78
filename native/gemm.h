/*
 * Our dense product out[m×n] = x[m×k]·w[n×k]ᵀ (+ bias), w as PyTorch Linear weights in f32,
 * bf16 bits or ggml blocks (native/quant.c, dequantized straight into the packed panels): packing, three levels of cache blocking (sizes from the caller, read off the CPU's
 * caches at load time) and a register-tile micro-kernel. Included by the native builds after
 * kernels.h (VW, FN, vf, LD, ST, SPLAT come from there); k_avx512bf16.c defines GEMM_DPBF16 to
 * replace the bf16 tile by one on AVX512-BF16's vdpbf16ps.
 *
 * The blocking keeps each output tile in registers for a whole K block, and K blocks as long as
 * an input sliver [KC][GM] fits in L1 (every prefill shape of the bench models is one block, so
 * every output is stored once and never reloaded). For each block of MC input rows, pack them
 * once into GM-row slivers (L3); for each block of NC weight rows, pack them into GN-row panels
 * [KC][GN] (L2); then each sliver stays in L1 while the panels stream past it from L2. Zen 3,
 * AVX2, 512×1536×576: 88 % of the FMA probe, against 76 % with the panel in L1 and two K blocks.
 * K blocks are summed in order into the output, one block after the other, by the thread that
 * owns the tile: the bits of an output depend only on the ISA, never on the blocking or on how
 * the rows and columns were split over threads.
 */
#include <stdint.h>

#include "quant.h"

#if VW == 16
#define GM 8 /* 16 accumulators of AVX-512's 32 registers */
#else
#define GM 6 /* 12 accumulators of AVX2's 16 registers */
#endif
#define GN (2 * VW)
/* Columns of a panel of ggml blocks dequantized at a time: GN rows of GEMM_QC values (a whole
 * K-quant block) land in a [GN][GEMM_QC] block of scratch, which is then written out column by
 * column, so that the panel is written in order and nothing of the weights exists in f32 beyond it. */
#define GEMM_QC 256

/* The tile geometry and how many floats of scratch one thread needs for blocks (kc, mc, nc). */
int FN(gemm_rows)(void) { return GM; }
int FN(gemm_cols)(void) { return GN; }
size_t FN(gemm_scratch)(int kc, int mc, int nc) {
  const size_t kmax = (size_t)kc + kc / 2 + 2; /* the largest block gemm_balance makes of kc */
  return kmax * ((nc + GN - 1) / GN * GN) + kmax * ((mc + GM - 1) / GM * GM) + 2 * GM * GN + GN * GEMM_QC;
}

/* f32 → bf16 bits, round to nearest even (a NaN stays a NaN). */
static inline uint16_t gemm_round_bf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static inline float gemm_widen(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

/* Weight rows [j0, j0+nb) × columns [p0, p0+kb) into panels of GN rows, panel q at
 * dst + q·kb·GN laid out [kb][GN]; rows past nb are zero. bf16 weights are widened exactly,
 * ggml blocks (wq) dequantized exactly as quant_dequant does, through tmp (GN·GEMM_QC floats). */
static void gemm_pack_w(float *dst, const float *wf, const uint16_t *wh, const quant_matrix *wq, size_t ldw, int j0, int nb, int p0,
                        int kb, float *tmp) {
  for (int jp = 0; jp < nb; jp += GN) {
    float *d = dst + (size_t)(jp / GN) * kb * GN;
    int cnt = nb - jp < GN ? nb - jp : GN;
    if (wq) {
      for (int c0 = 0; c0 < kb; c0 += GEMM_QC) {
        const int cb = kb - c0 < GEMM_QC ? kb - c0 : GEMM_QC;
        for (int j = 0; j < GN; j++) {
          float *t = tmp + (size_t)j * GEMM_QC;
          if (j < cnt) FN(quant_dequant)(wq, j0 + jp + j, p0 + c0, cb, t);
          else
            for (int p = 0; p < cb; p++) t[p] = 0.0f;
        }
        for (int p = 0; p < cb; p++)
          for (int j = 0; j < GN; j++) d[(size_t)(c0 + p) * GN + j] = tmp[(size_t)j * GEMM_QC + p];
      }
      continue;
    }
    for (int j = 0; j < cnt; j++) {
      size_t row = (size_t)(j0 + jp + j) * ldw + p0;
      if (wf)
        for (int p = 0; p < kb; p++) d[(size_t)p * GN + j] = wf[row + p];
      else
        for (int p = 0; p < kb; p++) d[(size_t)p * GN + j] = gemm_widen(wh[row + p]);
    }
    for (int j = cnt; j < GN; j++)
      for (int p = 0; p < kb; p++) d[(size_t)p * GN + j] = 0.0f;
  }
}

/* Input rows [i0, i0+mb) × columns [p0, p0+kb) into slivers of GM rows, [kb][GM] each; rows
 * past mb are zero. round: to bf16 (the bf16 product multiplies bf16 by bf16). */
static void gemm_pack_x(float *dst, const float *x, size_t ldx, int i0, int mb, int p0, int kb, int round) {
  for (int ip = 0; ip < mb; ip += GM) {
    float *d = dst + (size_t)(ip / GM) * kb * GM;
    int cnt = mb - ip < GM ? mb - ip : GM;
    for (int r = 0; r < GM; r++) {
      if (r >= cnt) {
        for (int p = 0; p < kb; p++) d[(size_t)p * GM + r] = 0.0f;
        continue;
      }
      const float *src = x + (size_t)(i0 + ip + r) * ldx + p0;
      if (round)
        for (int p = 0; p < kb; p++) d[(size_t)p * GM + r] = gemm_widen(gemm_round_bf16(src[p]));
      else
        for (int p = 0; p < kb; p++) d[(size_t)p * GM + r] = src[p];
    }
  }
}

/* c[r][0..GN) for r < R (R ≤ GM, a constant where inlined): starts from c itself (load), else
 * from init (GN floats) or zero, then adds a sliver·panel over kb steps. */
static inline __attribute__((always_inline)) void gemm_tile(float *c, size_t ldc, const float *a, const float *b, int kb,
                                                            const float *init, int load, int R) {
  vf acc[GM][2];
  for (int r = 0; r < R; r++) {
    if (load) {
      acc[r][0] = LD(c + r * ldc);
      acc[r][1] = LD(c + r * ldc + VW);
    } else if (init) {
      acc[r][0] = LD(init);
      acc[r][1] = LD(init + VW);
    } else {
      acc[r][0] = acc[r][1] = SPLAT(0);
    }
  }
  for (int p = 0; p < kb; p++) {
    vf b0 = LD(b + (size_t)p * GN), b1 = LD(b + (size_t)p * GN + VW);
    for (int r = 0; r < R; r++) {
      vf av = SPLAT(a[(size_t)p * GM + r]);
      acc[r][0] += av * b0;
      acc[r][1] += av * b1;
    }
  }
  for (int r = 0; r < R; r++) {
    ST(c + r * ldc, acc[r][0]);
    ST(c + r * ldc + VW, acc[r][1]);
  }
}

/* A tile of fewer rows but whole columns (the last sliver of 512 rows by 6) computes just its
 * rows; one cut by the right edge (cols < GN) goes through a full-size tile of scratch, computed
 * lane for lane as a whole one. */
static void gemm_short(float *c, size_t ldc, int rows, const float *a, const float *b, int kb, const float *init, int load) {
  switch (rows) {
#define GEMM_SHORT(R) \
  case R: gemm_tile(c, ldc, a, b, kb, init, load, R); break;
    GEMM_SHORT(1)
    GEMM_SHORT(2)
    GEMM_SHORT(3)
    GEMM_SHORT(4)
    GEMM_SHORT(5)
#if GM > 6
    GEMM_SHORT(6)
    GEMM_SHORT(7)
#endif
#undef GEMM_SHORT
  }
}

static void gemm_edge(float *c, size_t ldc, int rows, int cols, const float *a, const float *b, int kb, const float *init,
                      int load, float *t) {
  float *ib = t + GM * GN;
  for (int r = 0; r < GM; r++)
    for (int j = 0; j < GN; j++) t[r * GN + j] = load && r < rows && j < cols ? c[r * ldc + j] : 0.0f;
  if (init)
    for (int j = 0; j < GN; j++) ib[j] = j < cols ? init[j] : 0.0f;
  gemm_tile(t, GN, a, b, kb, init ? ib : 0, load, GM);
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < cols; j++) c[r * ldc + j] = t[r * GN + j];
}

/* The K block actually used: blocks of equal size (an even number of columns), as many as k/kc
 * rounded to nearest, since a short last block costs a whole extra pass over the output (k = 576
 * by 256: 2 blocks of 288 ran at 58 GFLOP/s, 256 + 256 + 64 at 44, AVX2). Callers size kc so
 * that a GM-row sliver of kc columns fills three quarters of L1. */
static inline int gemm_balance(int k, int kc) {
  int blocks = (k + kc / 2) / kc;
  if (blocks < 1) blocks = 1;
  int kb = (k + blocks - 1) / blocks;
  return kb + (kb & 1);
}

/* Row blocks for a K block of kb columns when the caller sized them for kc: a longer block
 * (gemm_balance rounds up to 1.5·kc) gets fewer rows, so that a packed block keeps its bytes. */
static inline int gemm_rows_for(int rows, int kc, int kb, int unit) {
  if (kb <= kc) return rows;
  const int r = (int)((long)rows * kc / kb / unit * unit);
  return r < unit ? unit : r;
}

/* Blocks of at most `most` rows (a multiple of unit) that cover `rows` rows in as few blocks as
 * possible, all of one size but the last: 512 rows by 510 would leave a block of 2, which costs
 * a second packing of the weights and a pass of edge tiles. */
static inline int gemm_even_rows(int rows, int most, int unit) {
  for (int blocks = (rows + most - 1) / most; blocks < rows; blocks++) {
    const int b = ((rows + blocks - 1) / blocks + unit - 1) / unit * unit;
    if (b <= most) return b;
  }
  return unit;
}

/* Output rows [i0, i1) × columns [j0, j1) of out[m×n] (row stride n) = x·wᵀ (+ bias), w f32
 * (wf), bf16 bits (wh; then x is rounded to bf16 too) or ggml blocks (wq). scratch:
 * gemm_scratch(kc, mc, nc) floats; kc even, mc a multiple of GM, nc of GN. */
static void gemm_run(float *out, const float *x, const float *wf, const uint16_t *wh, const quant_matrix *wq, int n, int k,
                     const float *bias, int i0, int i1, int j0, int j1, int kc, int mc, int nc, float *scratch) {
  const size_t kmax = (size_t)kc + kc / 2 + 2;
  float *wp = scratch, *xp = wp + kmax * ((nc + GN - 1) / GN * GN);
  float *edge = xp + kmax * ((mc + GM - 1) / GM * GM), *qtmp = edge + 2 * GM * GN;
  const int kb0 = gemm_balance(k, kc);
  mc = gemm_even_rows(i1 - i0, gemm_rows_for(mc, kc, kb0, GM), GM);
  nc = gemm_rows_for(nc, kc, kb0, GN);
  for (int pc = 0; pc < k; pc += kb0) {
    const int kb = k - pc < kb0 ? k - pc : kb0, load = pc > 0;
    for (int ic = i0; ic < i1; ic += mc) {
      const int mb = i1 - ic < mc ? i1 - ic : mc;
      gemm_pack_x(xp, x, (size_t)k, ic, mb, pc, kb, wh != 0);
      for (int jc = j0; jc < j1; jc += nc) {
        const int nb = j1 - jc < nc ? j1 - jc : nc;
        gemm_pack_w(wp, wf, wh, wq, (size_t)k, jc, nb, pc, kb, qtmp);
        for (int ir = 0; ir < mb; ir += GM) {
          const float *a = xp + (size_t)(ir / GM) * kb * GM;
          const int rows = mb - ir < GM ? mb - ir : GM;
          for (int jr = 0; jr < nb; jr += GN) {
            const float *b = wp + (size_t)(jr / GN) * kb * GN;
            const float *init = !load && bias ? bias + jc + jr : 0;
            const int cols = nb - jr < GN ? nb - jr : GN;
            float *c = out + (size_t)(ic + ir) * n + jc + jr;
            /* A later K block reloads the output: fetch the next tile's while this one runs. */
            if (load)
              for (int r = 0; r < rows; r++) __builtin_prefetch(c + GN + (size_t)r * n, 1, 3);
            if (rows == GM && cols == GN) gemm_tile(c, (size_t)n, a, b, kb, init, load, GM);
            else if (cols == GN) gemm_short(c, (size_t)n, rows, a, b, kb, init, load);
            else gemm_edge(c, (size_t)n, rows, cols, a, b, kb, init, load, edge);
          }
        }
      }
    }
  }
}

void FN(gemm_f32)(float *out, const float *x, const float *w, int n, int k, const float *bias, int i0, int i1, int j0,
                  int j1, int kc, int mc, int nc, float *scratch) {
  gemm_run(out, x, w, 0, 0, n, k, bias, i0, i1, j0, j1, kc, mc, nc, scratch);
}

/* Weights in ggml blocks (the prefill of a quantized model): the f32 product on panels
 * dequantized as they are packed. */
void FN(gemm_quant)(float *out, const float *x, const quant_matrix *w, int n, int k, const float *bias, int i0, int i1, int j0,
                    int j1, int kc, int mc, int nc, float *scratch) {
  gemm_run(out, x, 0, 0, w, n, k, bias, i0, i1, j0, j1, kc, mc, nc, scratch);
}

#ifndef GEMM_DPBF16
/* bf16 weights by conversion: each packed panel is widened to f32 (exact) and the input rounded
 * to bf16, so the products are those of the vdpbf16ps build; the sums stay f32. */
void FN(gemm_bf16)(float *out, const float *x, const uint16_t *w, int n, int k, const float *bias, int i0, int i1, int j0,
                   int j1, int kc, int mc, int nc, float *scratch) {
  gemm_run(out, x, 0, w, 0, n, k, bias, i0, i1, j0, j1, kc, mc, nc, scratch);
}
#endif
