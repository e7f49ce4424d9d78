// N-API glue of the native backend: zero-copy views of the caller's typed arrays, every kernel
// ours (kernels.h, and gemm.h for dense products) picked at load time for the CPU at hand,
// threaded with OpenMP. No BLAS: a C/C++ toolchain is all the build needs. Arguments are validated on the TypeScript
// side (src/backend/native/index.ts); this file trusts them.
#include <napi.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "kernels.hpp"
#include "kv_attn.h"
#include "kv_encode.h"
#include "press_attn.h"
#include "press_kernels.h"
#include "press_linalg.h"
#include "quant.h"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define KVP_SLABS 1
#endif

namespace {

// The kernel builds this CPU runs, widest first; KVPRESS_NATIVE_ISA=avx2|base caps them so that
// the narrower builds can be tested on a wide machine.
std::vector<KernelSet> usable_kernels() {
  const char *cap = std::getenv("KVPRESS_NATIVE_ISA");
  const bool any = !cap || !*cap || !std::strcmp(cap, "avx512");
  std::vector<KernelSet> sets;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (any && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma")) {
    KernelSet s = KVP_SET(avx512, 16);
    if (__builtin_cpu_supports("avx512bf16")) {
      s.gemm_bf16 = gemm_bf16_avx512bf16;
      s.bf16_isa = "avx512bf16";
      s.bf16_probe = bf16_probe_avx512bf16;
    }
    sets.push_back(s);
  }
  if ((any || !std::strcmp(cap, "avx2")) && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    sets.push_back(KVP_SET(avx2, 8));
#else
  (void)any;
#endif
  sets.push_back(KVP_SET(base, 4));
  return sets;
}

const std::vector<KernelSet> kSets = usable_kernels();
const KernelSet &K = kSets.front();

// The presses' scoring kernels (press_kernels.c) of the same ISA as K.
struct PressSet {
  decltype(&ea_unrotate_base) ea_unrotate;
  decltype(&ea_moments_base) ea_moments;
  decltype(&ea_log_scores_base) ea_log_scores;
  decltype(&window_softmax_sums_base) window_softmax_sums;
  decltype(&value_norms_pack_base) value_norms_pack;
  decltype(&value_norms_l1_base) value_norms_l1;
};
#define PRESS_SET(S) PressSet { ea_unrotate_##S, ea_moments_##S, ea_log_scores_##S, window_softmax_sums_##S, value_norms_pack_##S, value_norms_l1_##S }
PressSet press_kernels() {
#if defined(__x86_64__)
  if (!std::strcmp(K.isa, "avx512")) return PRESS_SET(avx512);
  if (!std::strcmp(K.isa, "avx2")) return PRESS_SET(avx2);
#endif
  return PRESS_SET(base);
}
const PressSet P = press_kernels();

// Size in bytes of the level-`level` data (or unified) cache of CPU 0, as Linux reports it;
// `fallback` where it does not.
long cache_bytes(int level, long fallback) {
  for (int i = 0; i < 16; i++) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    auto read = [&](const char *name) {
      char buf[64] = {0};
      FILE *f = std::fopen((dir + name).c_str(), "r");
      if (!f) return std::string();
      size_t got = std::fread(buf, 1, sizeof buf - 1, f);
      std::fclose(f);
      buf[got] = 0;
      return std::string(buf);
    };
    const std::string lv = read("level");
    if (lv.empty()) break;
    if (std::atoi(lv.c_str()) != level || read("type").rfind("Instruction", 0) == 0) continue;
    const std::string sz = read("size");
    char *end = nullptr;
    long v = std::strtol(sz.c_str(), &end, 10);
    if (v <= 0) break;
    if (end && *end == 'K') v <<= 10;
    else if (end && *end == 'M') v <<= 20;
    return v;
  }
  return fallback;
}

// GEMM cache blocks (gemm.h): a GM×KC input sliver fills three quarters of L1, a KC×NC block of
// weight panels half of L2, an MC×KC block of inputs an eighth of L3 (shared by the cores), at
// most 1024 rows (gemm.h evens the blocks out).
struct Blocking {
  int kc, mc, nc;
};
const long kL1 = cache_bytes(1, 32 << 10), kL2 = cache_bytes(2, 512 << 10), kL3 = cache_bytes(3, 8 << 20);

Blocking blocking(int panel_bytes, int x_bytes) {
  auto clamp = [](long v, long lo, long hi) { return (int)std::max(lo, std::min(hi, v)); };
  Blocking b;
  b.kc = clamp(kL1 * 3 / 4 / ((long)K.gemm_rows * x_bytes) / 16 * 16, 64, 2048);
  b.nc = clamp(kL2 / 2 / ((long)b.kc * panel_bytes) / K.gemm_cols * K.gemm_cols, K.gemm_cols, 16384);
  b.mc = clamp(kL3 / 8 / ((long)b.kc * x_bytes) / K.gemm_rows * K.gemm_rows, K.gemm_rows, 1024 / K.gemm_rows * K.gemm_rows);
  return b;
}
// vdpbf16ps panels hold bf16 pairs (2 bytes an entry, inputs too); by conversion they are f32.
const bool kNativeBf16 = K.bf16_probe != nullptr;
const Blocking kBlockF32 = blocking(4, 4), kBlockBf16 = kNativeBf16 ? blocking(2, 2) : kBlockF32;

// Attention vectorizes along the head dimension: take the widest build whose vectors tile it
// (head_dim 8 runs 8-wide rather than all in the scalar tails of 16-wide vectors).
const KernelSet &attention_kernels(int head_dim) {
  for (const KernelSet &k : kSets)
    if (head_dim % k.vector_floats == 0) return k;
  for (const KernelSet &k : kSets)
    if (head_dim >= k.vector_floats) return k;
  return kSets.back();
}

// Elements below which a row-wise op stays on the calling thread (waking a team costs more).
constexpr size_t kParallelMin = 1 << 15;

// Scratch that grows to the largest call seen and is then reused: the token loop allocates
// nothing.
struct Scratch {
  float *p = nullptr;
  size_t cap = 0;
  ~Scratch() { std::free(p); }
  float *get(size_t n) {
    if (n > cap) {
      std::free(p);
      cap = std::max(n, cap * 2);
      p = static_cast<float *>(std::aligned_alloc(64, (cap * sizeof(float) + 63) / 64 * 64));
      if (!p) cap = 0;
    }
    return p;
  }
};

// State of one calling JS thread (the main thread, or each worker that loads the addon).
struct Workspace {
  int threads = 1;
  Scratch packed, scores;
  std::vector<const float *> keys, values;
  std::vector<size_t> key_offsets;
};
thread_local Workspace W;

// Runs body(t, nt) for t < nt, on a team of nt threads; a lone part runs on the calling thread
// without entering OpenMP at all (that costs more than a small kernel).
template <class Body>
void team(int nt, Body &&body) {
  if (nt <= 1) {
    body(0, 1);
    return;
  }
#pragma omp parallel num_threads(nt)
  body(omp_get_thread_num(), nt);
}

float *F32(const Napi::Value &v) { return v.As<Napi::Float32Array>().Data(); }

int I32(const Napi::Value &v) { return v.As<Napi::Number>().Int32Value(); }

// Products are split across our own OpenMP team over output rows or columns only (a K
// reduction is never split), so one thread pool serves every kernel and a product's bits do
// not depend on the thread count.
void SetThreads(const Napi::CallbackInfo &info) { W.threads = std::max(1, I32(info[0])); }

// Threads to split `rows` rows over, on 64-row boundaries, so that every part still holds
// `min_work` multiply-adds (waking a team for less costs more than it saves).
int split_parts(int rows, double work_per_row, double min_work) {
  const int blocks = (rows + 63) / 64, ragged = rows % 64 ? 64 - rows % 64 : 0;
  for (int nt = std::min(W.threads, blocks); nt > 1; nt--)
    if (((double)(blocks / nt) * 64 - ragged) * work_per_row >= min_work) return nt;
  return 1;
}

// out[m×n] = x·wᵀ (+ bias) through gemm.h, w f32 (wf), bf16 bits (wh) or ggml blocks (wq). The
// weight rows (n) are split over the team when they give every thread a share, else the input
// rows (m); each thread packs into its own scratch.
bool gemm(float *out, const float *x, const float *wf, const uint16_t *wh, int m, int n, int k, const float *bias, const quant_matrix *wq = nullptr) {
  const Blocking &b = wh ? kBlockBf16 : kBlockF32;
  const size_t need = K.gemm_scratch(b.kc, b.mc, b.nc);
  bool ok = true;
  auto part = [&](int i0, int i1, int j0, int j1) {
    static thread_local Scratch s;
    float *sc = s.get(need);
    if (!sc) {
#pragma omp atomic write
      ok = false;
      return;
    }
    if (wh) K.gemm_bf16(out, x, wh, n, k, bias, i0, i1, j0, j1, b.kc, b.mc, b.nc, sc);
    else if (wq) K.gemm_quant(out, x, wq, n, k, bias, i0, i1, j0, j1, b.kc, b.mc, b.nc, sc);
    else K.gemm_f32(out, x, wf, n, k, bias, i0, i1, j0, j1, b.kc, b.mc, b.nc, sc);
  };
  int nt = split_parts(n, (double)m * k, 1e6);
  if (nt > 1) {
    const int blocks = (n + 63) / 64;
    team(nt, [&](int t, int parts) { part(0, m, std::min(n, blocks * t / parts * 64), std::min(n, blocks * (t + 1) / parts * 64)); });
  } else if ((nt = split_parts(m, (double)n * k, 1e6)) > 1) {
    const int blocks = (m + 63) / 64;
    team(nt, [&](int t, int parts) { part(std::min(m, blocks * t / parts * 64), std::min(m, blocks * (t + 1) / parts * 64), 0, n); });
  } else {
    part(0, m, 0, n);
  }
  return ok;
}

void Matmul(const Napi::CallbackInfo &info) {
  float *out = F32(info[0]);
  const float *x = F32(info[1]), *w = F32(info[2]);
  int m = I32(info[3]), n = I32(info[4]), k = I32(info[5]);
  const float *bias = info[6].IsTypedArray() ? F32(info[6]) : nullptr;
  if (m == 1) {
    // Decode: the gemv (kernels.h) streams the weights once, with software prefetch.
    const int nt = split_parts(n, k, 1.3e5), blocks = (n + 63) / 64;
    team(nt, [&](int t, int parts) {
      K.gemv(out, x, w, std::min(n, blocks * t / parts * 64), std::min(n, blocks * (t + 1) / parts * 64), k, bias);
    });
    return;
  }
  if (!gemm(out, x, w, nullptr, m, n, k, bias)) Napi::Error::New(info.Env(), "matmul: out of memory for scratch space").ThrowAsJavaScriptException();
}

// matmulRows(out, x, w, m, n, k, bias): out[m×n] = x·wᵀ (+ bias) for the decode steps of m
// sequences at once (the server's batched answers), every output summed by the gemv exactly as
// the m = 1 product sums it, so that a row's numbers are those of its lone step (the GEMM sums
// in another order). The weights go by in blocks of rows that stay in cache while every input
// row takes them: read from memory once instead of m times.
constexpr double kRowsBlockBytes = 128 * 1024;
void MatmulRows(const Napi::CallbackInfo &info) {
  float *out = F32(info[0]);
  const float *x = F32(info[1]), *w = F32(info[2]);
  const int m = I32(info[3]), n = I32(info[4]), k = I32(info[5]);
  const float *bias = info[6].IsTypedArray() ? F32(info[6]) : nullptr;
  const int per = std::max(4, (int)(kRowsBlockBytes / (4.0 * k)) & ~3);
  const int nt = split_parts(n, (double)m * k, 1.3e5), blocks = (n + 63) / 64;
  team(nt, [&](int t, int parts) {
    const int j0 = std::min(n, blocks * t / parts * 64), j1 = std::min(n, blocks * (t + 1) / parts * 64);
    for (int j = j0; j < j1; j += per)
      for (int r = 0; r < m; r++) K.gemv(out + (size_t)r * n, x + (size_t)r * k, w, j, std::min(j1, j + per), k, bias);
  });
}

// Input rows below which a bf16 product streams the weights row by row (gemv_bf16, f32 inputs)
// rather than packing them for the GEMM.
constexpr int kBf16GemmRows = 4;

// matmulBf16(out, x, w, m, n, k, bias): x·wᵀ with w[n][k] given as bf16 bits. Decode steps (few
// rows) stream w through gemv_bf16 with f32 inputs; prefill packs it into the bf16 GEMM, whose
// products are bf16 × bf16 (the inputs rounded) summed in f32.
void MatmulBf16(const Napi::CallbackInfo &info) {
  float *out = F32(info[0]);
  const float *x = F32(info[1]);
  const uint16_t *w = info[2].As<Napi::Uint16Array>().Data();
  int m = I32(info[3]), n = I32(info[4]), k = I32(info[5]);
  const float *bias = info[6].IsTypedArray() ? F32(info[6]) : nullptr;
  if (m >= kBf16GemmRows) {
    if (!gemm(out, x, nullptr, w, m, n, k, bias)) Napi::Error::New(info.Env(), "matmulBf16: out of memory for scratch space").ThrowAsJavaScriptException();
    return;
  }
  const int nt = split_parts(n, (double)m * k, 1.3e5), blocks = (n + 63) / 64;
  team(nt, [&](int t, int parts) {
    K.gemv_bf16(out, x, w, m, n, std::min(n, blocks * t / parts * 64), std::min(n, blocks * (t + 1) / parts * 64), k, bias);
  });
}

// ---- products on weights kept in ggml's block formats (native/quant.c) ----
struct QuantSet {
  decltype(&quant_act_base) act;
  decltype(&quant_matvec_base) matvec;
};
// The integer products of the widest build, with vpdpbusd where the AVX-512 CPU has VNNI.
QuantSet quant_kernels(const char **isa) {
#if defined(__x86_64__)
  if (!std::strcmp(K.isa, "avx512") && __builtin_cpu_supports("avx512vnni")) {
    *isa = "avx512vnni";
    return {quant_act_avx512vnni, quant_matvec_avx512vnni};
  }
  *isa = K.isa;
  if (!std::strcmp(K.isa, "avx512")) return {quant_act_avx512, quant_matvec_avx512};
  if (!std::strcmp(K.isa, "avx2")) return {quant_act_avx2, quant_matvec_avx2};
#endif
  *isa = "base";
  return {quant_act_base, quant_matvec_base};
}
const char *kQuantIsa = "base";
const QuantSet kQuant = quant_kernels(&kQuantIsa);
// Input rows from which a quantized product runs the f32 GEMM on weight panels dequantized as
// they are packed (gemm.h; a row-major f32 panel packed afterwards cost 2 % more of a small Q8_0
// prefill, measured); below, the rows are quantized to 8 bits and multiplied with the blocks in
// integers. An int8 GEMM tile of 4 input × 2 weight rows ran at 71 GFLOP/s-equivalent against
// this GEMM's 89 on AVX2, so prefill stays in f32.
constexpr int kQuantGemmRows = 4;

// matmulQuant(out, x, w, type, rowBytes, m, n, k, bias): x·wᵀ with w[n] rows of ggml blocks.
void MatmulQuant(const Napi::CallbackInfo &info) {
  float *out = F32(info[0]);
  const float *x = F32(info[1]);
  const uint8_t *w = info[2].As<Napi::Uint8Array>().Data();
  const int type = I32(info[3]);
  const size_t rb = (size_t)info[4].As<Napi::Number>().Int64Value();
  const int m = I32(info[5]), n = I32(info[6]), k = I32(info[7]);
  const float *bias = info[8].IsTypedArray() ? F32(info[8]) : nullptr;
  const int blocks = (n + 63) / 64;
  if (m < kQuantGemmRows) {
    static thread_local std::vector<uint8_t> act;
    const size_t ab = quant_act_bytes(type, k);
    if (act.size() < ab * m) act.resize(ab * m);
    // The team's threads have thread_locals of their own: they read this thread's buffer.
    const uint8_t *a = act.data();
    for (int i = 0; i < m; i++) kQuant.act(type, x + (size_t)i * k, k, act.data() + ab * i);
    const int nt = split_parts(n, (double)m * k, 1.3e5);
    team(nt, [&](int t, int parts) {
      kQuant.matvec(type, out, n, a, ab, m, w, rb, std::min(n, blocks * t / parts * 64), std::min(n, blocks * (t + 1) / parts * 64), k, bias);
    });
    return;
  }
  const quant_matrix qm = {type, k, w, rb};
  if (!gemm(out, x, nullptr, nullptr, m, n, k, bias, &qm)) Napi::Error::New(info.Env(), "matmulQuant: out of memory for scratch space").ThrowAsJavaScriptException();
}

void Rmsnorm(const Napi::CallbackInfo &info) {
  float *out = F32(info[0]);
  const float *x = F32(info[1]), *w = F32(info[2]);
  int rows = I32(info[3]), dim = I32(info[4]);
  float eps = info[5].As<Napi::Number>().FloatValue();
  team((size_t)rows * dim >= kParallelMin ? std::min(W.threads, rows) : 1, [&](int t, int parts) {
    int r0 = (int)((long)rows * t / parts), r1 = (int)((long)rows * (t + 1) / parts);
    K.rmsnorm(out + (size_t)r0 * dim, x + (size_t)r0 * dim, w, r1 - r0, dim, eps);
  });
}

void Rope(const Napi::CallbackInfo &info) {
  float *x = F32(info[0]);
  int rows = I32(info[1]), heads = I32(info[2]), hd = I32(info[3]);
  const float *cs = F32(info[4]), *sn = F32(info[5]);
  int half = hd / 2;
  team((size_t)rows * heads * hd >= kParallelMin ? std::min(W.threads, rows) : 1, [&](int t, int parts) {
    int r0 = (int)((long)rows * t / parts), r1 = (int)((long)rows * (t + 1) / parts);
    K.rope(x + (size_t)r0 * heads * hd, r1 - r0, heads, hd, cs + (size_t)r0 * half, sn + (size_t)r0 * half);
  });
}

void SiluMul(const Napi::CallbackInfo &info) {
  float *g = F32(info[0]);
  const float *u = F32(info[1]);
  size_t n = (size_t)info[2].As<Napi::Number>().Int64Value();
  team(n >= kParallelMin ? W.threads : 1, [&](int t, int parts) {
    size_t i0 = n * t / parts / 64 * 64, i1 = t == parts - 1 ? n : n * (t + 1) / parts / 64 * 64;
    K.silu_mul(g + i0, u + i0, i1 - i0);
  });
}

// add(x, y, n): x[i] += y[i], the residual adds (in JS they took 2 % of a small-model prefill;
// here they run at memory speed).
void Add(const Napi::CallbackInfo &info) {
  float *__restrict x = F32(info[0]);
  const float *__restrict y = F32(info[1]);
  const size_t n = (size_t)info[2].As<Napi::Number>().Int64Value();
  team(n >= kParallelMin ? W.threads : 1, [&](int t, int parts) {
    const size_t i0 = n * t / parts / 64 * 64, i1 = t == parts - 1 ? n : n * (t + 1) / parts / 64 * 64;
    for (size_t i = i0; i < i1; i++) x[i] += y[i];
  });
}

double *F64(const Napi::Value &v) { return v.As<Napi::Float64Array>().Data(); }

// Multiply-adds below which Expected Attention's float64 kernels stay on the calling thread.
constexpr double kF64ParallelMin = 1e5;

// gram64(out, X, n, d): out[d×d] = XᵀX, full symmetric. The row tiles are dealt to the team,
// the upper triangle computed, then mirrored.
void Gram64(const Napi::CallbackInfo &info) {
  double *out = F64(info[0]);
  const double *X = F64(info[1]);
  const int n = I32(info[2]), d = I32(info[3]);
  std::fill(out, out + (size_t)d * d, 0.0);
  const int tiles = (d + 7) / 8;
  const int nt = (double)n * d * d / 2 >= kF64ParallelMin ? std::max(1, std::min(W.threads, tiles)) : 1;
  team(nt, [&](int t, int parts) { K.gram64(out, X, n, d, t, parts); });
  for (int i = 0; i < d; i++)
    for (int j = i + 1; j < d; j++) out[(size_t)j * d + i] = out[(size_t)i * d + j];
}

// eaLogits64(z, keys, s0, m, d, G, mus, quad | null, stride): Expected Attention's logits
// (kernels.h ea_logits64), blocks of keys split over the team.
void EaLogits64(const Napi::CallbackInfo &info) {
  double *z = F64(info[0]);
  const float *keys = F32(info[1]);
  const int s0 = I32(info[2]), m = I32(info[3]), d = I32(info[4]), G = I32(info[5]);
  const double *mus = F64(info[6]);
  const double *quad = info[7].IsTypedArray() ? F64(info[7]) : nullptr;
  const size_t stride = (size_t)info[8].As<Napi::Number>().Int64Value();
  const int eb = K.ea_key_block, blocks = (m + eb - 1) / eb;
  const double work = (double)m * G * d * (quad ? d / 2 + 1 : 1);
  const int nt = work >= kF64ParallelMin ? std::max(1, std::min(W.threads, blocks)) : 1;
  team(nt, [&](int t, int parts) {
    // Per OpenMP thread, grown once: the widened keys of one block.
    static thread_local std::vector<double> kb;
    if (kb.size() < (size_t)d * eb) kb.resize((size_t)d * eb);
    const int b0 = (int)((long)blocks * t / parts), b1 = (int)((long)blocks * (t + 1) / parts);
    K.ea_logits64(z, keys, s0, m, d, G, mus, quad, stride, b0 * eb, std::min(m, b1 * eb), kb.data());
  });
}

// eaQueryMoments64(mean, cov | null, q, qStride, start, n, H, d, cos, sin): Expected Attention's
// pre-RoPE query moments (expected-attention-kernels.ts queryMoments, same operations in the same
// order): per query head h, rows start … start + n − 1 of the post-RoPE queries q rotated back by
// the angle tables cos/sin [n][d/2], their mean into mean[h·d …] and, with cov, their population
// covariance (centered rows, gram64's tiles, / n) into cov[h·d·d …]. Heads are dealt to the team.
void EaQueryMoments64(const Napi::CallbackInfo &info) {
  double *mean = F64(info[0]);
  double *cov = info[1].IsTypedArray() ? F64(info[1]) : nullptr;
  const float *q = F32(info[2]);
  const size_t qStride = (size_t)I32(info[3]);
  const int start = I32(info[4]), n = I32(info[5]), H = I32(info[6]), d = I32(info[7]);
  const double *cs = F64(info[8]), *sn = F64(info[9]);
  const double work = (double)H * n * d * (cov ? d / 2 + 2 : 1);
  const int nt = work >= kF64ParallelMin ? std::max(1, std::min(W.threads, H)) : 1;
  team(nt, [&](int t, int parts) {
    // Per OpenMP thread, grown once: where d % 8 = 0, 32 rotated rows [32][d] of each of this
    // thread's heads; otherwise one head's rows [n][d].
    static thread_local std::vector<double> xs;
    const size_t need = (d % 8 == 0 ? (size_t)((H - t + parts - 1) / parts) * 32 : (size_t)n) * d;
    if (xs.size() < need) xs.resize(need);
    double *X = xs.data();
    if (d % 8 == 0) {
      P.ea_moments(mean, cov, q + (size_t)start * qStride, qStride, n, d, t, parts, H, cs, sn, X);
      return;
    }
    for (int h = t; h < H; h += parts) {
      double *mu = mean + (size_t)h * d, *S = cov ? cov + (size_t)h * d * d : nullptr;
      const float *qh = q + (size_t)start * qStride + (size_t)h * d;
      P.ea_unrotate(X, mu, qh, qStride, n, d, cs, sn);
      if (!S) continue;
      std::fill(S, S + (size_t)d * d, 0.0);
      K.gram64(S, X, n, d, 0, 1);
      for (int i = 0; i < d; i++)
        for (int j = i + 1; j < d; j++) S[(size_t)j * d + i] = S[(size_t)i * d + j];
      for (size_t i = 0; i < (size_t)d * d; i++) S[i] /= n;
    }
  });
}

// eaScores64(out, z, stride, s0, m, G, values | pages, d, useVnorm, epsilon) → max score: Expected
// Attention's log-scores of one KV head from the logits z [G][stride] of its m non-sink keys
// (expected-attention.ts expectedAttentionScores, same operations in the same order): log-softmax
// per query head, log-mean-exp over the group, log(p + ε) and + log‖v‖ with the value norms,
// into out[s0 …]. Returns the largest score written (−∞ when m = 0).
Napi::Value EaScores64(const Napi::CallbackInfo &info) {
  double *out = F64(info[0]);
  const double *z = F64(info[1]);
  const size_t stride = (size_t)info[2].As<Napi::Number>().Int64Value();
  const int s0 = I32(info[3]), m = I32(info[4]), G = I32(info[5]);
  const int d = I32(info[7]);
  const bool vnorm = info[8].As<Napi::Boolean>().Value();
  const double eps = info[9].As<Napi::Number>().DoubleValue();
  // The values as [entries][d], or as the head's pages of E entries each (E from their length).
  std::vector<const float *> rows(std::max(m, 1));
  if (info[6].IsArray()) {
    const Napi::Array pages = info[6].As<Napi::Array>();
    const size_t E = pages.Length() > 0 ? pages.Get(0u).As<Napi::Float32Array>().ElementLength() / d : 1;
    for (size_t p = (size_t)s0 / E, t = 0; t < (size_t)m; p++) {
      const float *base = pages.Get((uint32_t)p).As<Napi::Float32Array>().Data();
      for (size_t k = (s0 + t) % E; k < E && t < (size_t)m; k++, t++) rows[t] = base + k * d;
    }
  } else {
    const float *V = F32(info[6]);
    for (int t = 0; t < m; t++) rows[t] = V + (size_t)(s0 + t) * d;
  }
  std::vector<double> e(std::max(m, 1));
  return Napi::Number::New(info.Env(), P.ea_log_scores(out, z, stride, s0, m, G, rows.data(), d, vnorm, eps, e.data()));
}

// windowSoftmaxSums(acc, q, qStride, h0, G, d, first, w, keys, T, keyPositions, rowPositions,
// scale, weights | null): for query heads h0 … h0 + G − 1 of one KV head, the causal softmax
// attention (float64) of pass rows first … first + w − 1 against its T keys, summed over the rows
// with weights[r] (null: 1) into acc[k·cols + t] for the cols = T − w columns before the window
// (common.ts windowAttention then meanRows, without the division by w). Logits come from the
// same float32 GEMM as the backend's matmul, 64 rows at a time as common.ts forEachAttentionRow;
// a row sees the keys whose positions are ≤ its own. Rows are added in order on one thread, so
// the sums do not depend on the thread count.
void WindowSoftmaxSums(const Napi::CallbackInfo &info) {
  double *acc = F64(info[0]);
  const float *q = F32(info[1]);
  const size_t qStride = (size_t)I32(info[2]);
  const int h0 = I32(info[3]), G = I32(info[4]), d = I32(info[5]), first = I32(info[6]), w = I32(info[7]);
  const float *keys = F32(info[8]);
  const int T = I32(info[9]);
  const int32_t *kpos = info[10].As<Napi::Int32Array>().Data(), *rpos = info[11].As<Napi::Int32Array>().Data();
  const double scale = info[12].As<Napi::Number>().DoubleValue();
  const double *weights = info[13].IsTypedArray() ? F64(info[13]) : nullptr;
  const int cols = T - w, R = 64;
  std::vector<float> qb((size_t)R * d), logits((size_t)R * T);
  std::vector<double> e(T);
  std::vector<int> visible(R);
  for (int k = 0; k < G; k++) {
    for (int r0 = 0; r0 < w; r0 += R) {
      const int nr = std::min(R, w - r0);
      for (int i = 0; i < nr; i++) std::memcpy(&qb[(size_t)i * d], q + (size_t)(first + r0 + i) * qStride + (size_t)(h0 + k) * d, (size_t)d * 4);
      if (!gemm(logits.data(), qb.data(), keys, nullptr, nr, T, d, nullptr)) {
        Napi::Error::New(info.Env(), "windowSoftmaxSums: out of memory for scratch space").ThrowAsJavaScriptException();
        return;
      }
      int v = 0;
      for (int i = 0; i < nr; i++) {
        while (v < T && kpos[v] <= rpos[r0 + i]) v++;
        visible[i] = v;
      }
      P.window_softmax_sums(acc + (size_t)k * cols, logits.data(), nr, T, cols, visible.data(), scale, weights ? weights + r0 : nullptr, e.data());
    }
  }
}

// valueNormsL1(out, values, block, T, D, hd, divisor, rows | null): out[t] += ‖block·v_t‖₁ / divisor
// for t < T, v_t the value row rows[t] (or t) of values [·][hd], and block [D][hd] (critical.ts
// projectedValueNorms for one query head, rows: the entries it does not skip): the block
// packed once into 16-column panels, then blocks of 256 values dealt to the team, each through
// value_norms_l1 (products in registers, their absolute values summed in float64 per value, no
// T×D buffer) — a value's bits do not depend on the thread count.
void ValueNormsL1(const Napi::CallbackInfo &info) {
  double *out = F64(info[0]);
  const float *V = F32(info[1]), *B = F32(info[2]);
  const int T = I32(info[3]), D = I32(info[4]), hd = I32(info[5]);
  const double divisor = info[6].As<Napi::Number>().DoubleValue();
  const int32_t *rows = info[7].IsNull() || info[7].IsUndefined() ? nullptr : info[7].As<Napi::Int32Array>().Data();
  const int R = 256, blocks = (T + R - 1) / R;
  static thread_local Scratch packed;
  float *bp = packed.get((size_t)(D + 15) / 16 * 16 * hd);
  if (!bp) {
    Napi::Error::New(info.Env(), "valueNormsL1: out of memory for the packed block").ThrowAsJavaScriptException();
    return;
  }
  P.value_norms_pack(bp, B, D, hd);
  const int nt = (double)T * D * hd >= 1e6 ? std::max(1, std::min(W.threads, blocks)) : 1;
  team(nt, [&](int t, int parts) {
    const int b0 = (int)((long)blocks * t / parts), b1 = (int)((long)blocks * (t + 1) / parts);
    const int t0 = b0 * R, t1 = std::min(T, b1 * R);
    if (t1 > t0) P.value_norms_l1(out + t0, V, rows ? rows + t0 : nullptr, t0, t1 - t0, bp, D, hd, divisor);
  });
}

// The leverage presses' float64 helpers (press_linalg.h), on the calling thread: each is at
// most n·d or d²·k, small beside the gram64 and eaLogits64 products they feed.
// pressGemm64(c, a, b, m, n, k, transA)
void PressGemm64(const Napi::CallbackInfo &info) {
  pl_gemm64(F64(info[0]), F64(info[1]), F64(info[2]), I32(info[3]), I32(info[4]), I32(info[5]), info[6].As<Napi::Boolean>().Value());
}

// pressCenterRows(k32 | null, x, mean, src, stride, n, d)
void PressCenterRows(const Napi::CallbackInfo &info) {
  pl_center_rows(info[0].IsTypedArray() ? F32(info[0]) : nullptr, F64(info[1]), F64(info[2]), F32(info[3]), (size_t)I32(info[4]), I32(info[5]), I32(info[6]));
}

// pressScaleRows(x, src, stride, n, d, scale)
void PressScaleRows(const Napi::CallbackInfo &info) {
  pl_scale_rows(F64(info[0]), F32(info[1]), (size_t)I32(info[2]), I32(info[3]), I32(info[4]), F64(info[5]));
}

// pressRowDots(out, src, stride, n, d, vecs, g, index | null, norms)
void PressRowDots(const Napi::CallbackInfo &info) {
  const int *index = info[7].IsTypedArray() ? info[7].As<Napi::Int32Array>().Data() : nullptr;
  pl_row_dots(F64(info[0]), F32(info[1]), (size_t)I32(info[2]), I32(info[3]), I32(info[4]), F64(info[5]), I32(info[6]), index, info[8].As<Napi::Boolean>().Value());
}

// pressInverseForm(w, l, k, p, d)
void PressInverseForm(const Napi::CallbackInfo &info) {
  const int k = I32(info[2]), d = I32(info[4]);
  std::vector<double> b((size_t)d * k);
  pl_inverse_form(F64(info[0]), F64(info[1]), k, F64(info[3]), d, b.data());
}

// attention(out, q, rows, numHeads, numKvHeads, headDim, keys[], values[], lengths, scale)
void Attention(const Napi::CallbackInfo &info) {
  attn_args a;
  a.out = F32(info[0]);
  a.q = F32(info[1]);
  a.rows = I32(info[2]);
  a.num_heads = I32(info[3]);
  a.num_kv_heads = I32(info[4]);
  a.head_dim = I32(info[5]);
  Napi::Array keys = info[6].As<Napi::Array>(), values = info[7].As<Napi::Array>();
  a.lengths = info[8].As<Napi::Int32Array>().Data();
  a.scale = info[9].As<Napi::Number>().FloatValue();
  const int nkv = a.num_kv_heads, hd = a.head_dim;
  const KernelSet &A = attention_kernels(hd);
  W.keys.resize(nkv);
  W.values.resize(nkv);
  for (int g = 0; g < nkv; g++) {
    W.keys[g] = F32(keys.Get(g));
    W.values[g] = F32(values.Get(g));
  }
  a.keys = W.keys.data();
  a.values = W.values.data();

  const int group = a.num_heads / nkv, nq = a.rows * group, tiles = (nq + A.tile_rows - 1) / A.tile_rows;
  // Packing the keys pays off once enough query rows share them (prefill, big GQA groups).
  const bool packed = nq >= 2 * A.tile_rows;
  int maxlen = 0;
  std::vector<size_t> &koff = W.key_offsets;
  koff.assign(nkv + 1, 0);
  for (int g = 0; g < nkv; g++) {
    maxlen = std::max(maxlen, (int)a.lengths[g]);
    koff[g + 1] = koff[g] + (packed ? ((size_t)a.lengths[g] + A.key_block - 1) / A.key_block * A.key_block * hd : 0);
  }
  const size_t sld = ((size_t)maxlen + A.key_block - 1) / A.key_block * A.key_block + A.key_block;
  const int items = nkv * tiles;
  const int nt = std::max(1, std::min(W.threads, items));
  float *kt = packed ? W.packed.get(koff[nkv]) : nullptr;
  float *scores = W.scores.get((size_t)nt * A.tile_rows * sld);
  if ((packed && !kt) || !scores) {
    Napi::Error::New(info.Env(), "attention: out of memory for scratch space").ThrowAsJavaScriptException();
    return;
  }
  // Below ~10⁵ multiply-adds (short decode steps) a team costs more than it saves.
  if (nt == 1 || (double)nq * maxlen * hd <= 1e5) {
    if (packed)
      for (int g = 0; g < nkv; g++) A.attn_pack(&a, g, kt + koff[g]);
    for (int it = 0; it < items; it++) {
      int g = it / tiles, p0 = (it % tiles) * A.tile_rows;
      A.attn_tile(&a, g, p0, std::min(A.tile_rows, nq - p0), packed ? kt + koff[g] : nullptr, scores, sld);
    }
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    float *s = scores + (size_t)omp_get_thread_num() * A.tile_rows * sld;
    if (packed) {
#pragma omp for schedule(static)
      for (int g = 0; g < nkv; g++) A.attn_pack(&a, g, kt + koff[g]);
    }
#pragma omp for schedule(dynamic, 1)
    for (int it = 0; it < items; it++) {
      int g = it / tiles, p0 = (it % tiles) * A.tile_rows;
      A.attn_tile(&a, g, p0, std::min(A.tile_rows, nq - p0), packed ? kt + koff[g] : nullptr, s, sld);
    }
  }
}

// fmaProbe(iterations, threads) → seconds for every thread to run the probe loop.
Napi::Value FmaProbe(const Napi::CallbackInfo &info) {
  long iters = (long)info[0].As<Napi::Number>().Int64Value();
  int nt = std::max(1, I32(info[1]));
  volatile float sink = 0;
  double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nt)
  {
    float r = K.fma_probe(iters);
#pragma omp atomic
    sink += r;
  }
  double t1 = omp_get_wtime();
  return Napi::Number::New(info.Env(), t1 - t0);
}

// bf16Probe(iterations, threads) → seconds, as fmaProbe for the vdpbf16ps probe; null where
// bf16 products go by conversion to f32 (the FMA probe is their ceiling).
Napi::Value Bf16Probe(const Napi::CallbackInfo &info) {
  if (!K.bf16_probe) return info.Env().Null();
  long iters = (long)info[0].As<Napi::Number>().Int64Value();
  int nt = std::max(1, I32(info[1]));
  volatile float sink = 0;
  double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nt)
  {
    float r = K.bf16_probe(iters);
#pragma omp atomic
    sink += r;
  }
  return Napi::Number::New(info.Env(), omp_get_wtime() - t0);
}

Napi::Value Info(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", K.isa);
  o.Set("vectorFloats", K.vector_floats);
  // Flops of one probe iteration: 12 independent vector multiply-adds.
  o.Set("probeFlopsPerIteration", 12 * 2 * K.vector_floats);
  // Flops of one bf16 probe iteration: 12 vdpbf16ps of two products per f32 lane.
  o.Set("bf16ProbeFlopsPerIteration", K.bf16_probe ? 12 * 2 * 2 * K.vector_floats : 0);
  const std::string tile = std::to_string(K.gemm_rows) + "x" + std::to_string(K.gemm_cols);
  o.Set("gemmF32", std::string(K.isa) + " " + tile);
  o.Set("gemmBf16", std::string(K.bf16_isa) + " " + tile);
  o.Set("quantDot", kQuantIsa);
  Napi::Object cache = Napi::Object::New(env);
  cache.Set("l1", (double)kL1);
  cache.Set("l2", (double)kL2);
  cache.Set("l3", (double)kL3);
  o.Set("cacheBytes", cache);
  auto blk = [&](const Blocking &b) {
    Napi::Object r = Napi::Object::New(env);
    r.Set("kc", b.kc);
    r.Set("mc", b.mc);
    r.Set("nc", b.nc);
    return r;
  };
  o.Set("blockingF32", blk(kBlockF32));
  o.Set("blockingBf16", blk(kBlockBf16));
  return o;
}

// Slabs by id (src/cache/slab-memory.ts): base and length, so that attentionPaged can take page
// addresses (slab · 2³² + offset) as numbers instead of reading each page's view through N-API.
// One table for the process: every worker thread that loads the addon shares it, so ids are
// handed out here (a slot freed by a collected slab is reused) and the table is read and
// changed under g_slabs_mu (a worker's kvSlab may grow it while another's attention reads it).
static std::vector<std::pair<uint8_t *, size_t>> g_slabs;
static std::mutex g_slabs_mu;

// ---- attention over the paged KV cache (native/kv_attn.c; src/cache/kv-cache.ts) ----
// attentionPaged(out, q, rows, numHeads, numKvHeads, headDim, dtype, block, blockBytes, rowBytes,
//                pageEntries, valuesOffset, pages (KvPage[][]), lengths,
//                queryPositions, window, scale, addresses (Float64Array | null)
//                [, keyLayouts: per KV head null or Int32Array [dim, block, blockBytes, rowBytes, ...channels]
//                [, columnSums (Float64Array [numKvHeads][columnStride] | null), columnStride]])
void AttentionPaged(const Napi::CallbackInfo &info) {
  kv_attn_args a;
  a.out = F32(info[0]);
  a.q = F32(info[1]);
  a.rows = I32(info[2]);
  a.num_heads = I32(info[3]);
  a.num_kv_heads = I32(info[4]);
  a.head_dim = I32(info[5]);
  a.dtype = I32(info[6]);
  a.block = I32(info[7]);
  a.block_bytes = I32(info[8]);
  a.row_bytes = I32(info[9]);
  a.page_entries = I32(info[10]);
  a.values_offset = (size_t)I32(info[11]);
  a.positions_offset = 2 * a.values_offset;
  Napi::Array heads = info[12].As<Napi::Array>();
  a.lengths = info[13].As<Napi::Int32Array>().Data();
  a.query_positions = info[14].As<Napi::Int32Array>().Data();
  a.window = I32(info[15]);
  a.scale = info[16].As<Napi::Number>().FloatValue();
  const int nkv = a.num_kv_heads;
  // Channel-pruned heads (ThinK): their key layout; their pages hold narrower key rows.
  static thread_local std::vector<kv_key_layout> layouts;
  static thread_local std::vector<const kv_key_layout *> layout_heads;
  a.key_layouts = nullptr;
  if (info.Length() > 18 && info[18].IsArray()) {
    Napi::Array kl = info[18].As<Napi::Array>();
    layouts.assign(nkv, kv_key_layout{});
    layout_heads.assign(nkv, nullptr);
    for (int g = 0; g < nkv && g < (int)kl.Length(); g++) {
      Napi::Value v = kl.Get(g);
      if (!v.IsTypedArray()) continue;
      Napi::Int32Array x = v.As<Napi::Int32Array>();
      layouts[g] = kv_key_layout{x.Data() + 4, (int)x.ElementLength() - 4, x[0], x[1], x[2], x[3]};
      layout_heads[g] = &layouts[g];
    }
    a.key_layouts = layout_heads.data();
  }
  a.col_sums = info.Length() > 20 && info[19].IsTypedArray() ? F64(info[19]) : nullptr;
  a.col_stride = a.col_sums ? (size_t)info[20].As<Napi::Number>().Int64Value() : 0;
  // Page addresses, read from the pages' own views (no copy of any entry).
  static thread_local std::vector<std::vector<const uint8_t *>> bytes;
  static thread_local std::vector<const uint8_t *const *> bytes_heads;
  bytes.resize(nkv);
  bytes_heads.resize(nkv);
  int maxlen = 0;
  const Napi::String u8 = Napi::String::New(info.Env(), "u8");
  // Pages in slabs come as one Float64Array of addresses (per head, its pages in order);
  // others as KvPage objects whose views are read here.
  const bool addressed = info[17].IsTypedArray();
  const double *addr = addressed ? info[17].As<Napi::Float64Array>().Data() : nullptr;
  const size_t page_bytes = 2 * a.values_offset + 4 * (size_t)a.page_entries;
  size_t k = 0;
  for (int g = 0; g < nkv; g++) {
    maxlen = std::max(maxlen, (int)a.lengths[g]);
    const uint32_t np = (uint32_t)((a.lengths[g] + a.page_entries - 1) / a.page_entries);
    bytes[g].resize(np);
    const size_t head_bytes = a.key_layouts && a.key_layouts[g] ? page_bytes - (size_t)a.page_entries * (a.row_bytes - a.key_layouts[g]->row_bytes) : page_bytes;
    if (addressed) {
      std::lock_guard<std::mutex> lock(g_slabs_mu);
      for (uint32_t p = 0; p < np; p++, k++) {
        const uint64_t x = (uint64_t)addr[k], id = x >> 32, off = x & 0xffffffffu;
        if (id >= g_slabs.size() || !g_slabs[id].first || off + head_bytes > g_slabs[id].second) {
          Napi::Error::New(info.Env(), "attentionPaged: a page address outside every slab").ThrowAsJavaScriptException();
          return;
        }
        bytes[g][p] = g_slabs[id].first + off;
      }
    } else {
      Napi::Array pages = heads.Get(g).As<Napi::Array>();
      for (uint32_t p = 0; p < np; p++) bytes[g][p] = pages.Get(p).As<Napi::Object>().Get(u8).As<Napi::Uint8Array>().Data();
    }
    bytes_heads[g] = bytes[g].data();
  }
  a.pages = bytes_heads.data();
  if (a.col_sums && (a.col_stride < (size_t)maxlen || info[19].As<Napi::Float64Array>().ElementLength() < (size_t)nkv * a.col_stride)) {
    Napi::RangeError::New(info.Env(), "attentionPaged: columnSums smaller than numKvHeads × columnStride, or columnStride below a head's length").ThrowAsJavaScriptException();
    return;
  }
#if defined(__x86_64__)
  auto tile = !std::strcmp(K.isa, "avx512") ? kv_attn_tile_avx512 : !std::strcmp(K.isa, "avx2") ? kv_attn_tile_avx2 : kv_attn_tile_base;
#else
  auto tile = kv_attn_tile_base;
#endif
  const int group = a.num_heads / nkv, nq = a.rows * group, tiles = (nq + KV_TQ - 1) / KV_TQ, items = nkv * tiles;
  const size_t sld = (size_t)maxlen;
  // Below ~10⁵ multiply-adds (short decode steps) a team costs more than it saves.
  const int nt = (double)nq * nkv * maxlen * a.head_dim <= 1e5 ? 1 : std::max(1, std::min(W.threads, items));
  // Column sums with a team: tiles of one KV head land on any thread, so each thread adds into
  // its own copy (zeroed here) and the copies are added to the caller's sums after the team.
  const size_t cols = a.col_sums ? (size_t)nkv * a.col_stride : 0;
  static thread_local std::vector<double> col_parts;
  if (cols && nt > 1) col_parts.assign((size_t)nt * cols, 0.0);
  double *parts = col_parts.data();
#pragma omp parallel num_threads(nt)
  {
    static thread_local std::vector<float> s, buf;
    if (s.size() < KV_TQ * sld) s.resize(KV_TQ * sld);
    if (buf.size() < (size_t)KV_CH * a.head_dim) buf.resize((size_t)KV_CH * a.head_dim);
    kv_attn_args b = a;
    if (cols && nt > 1) b.col_sums = parts + (size_t)omp_get_thread_num() * cols;
#pragma omp for schedule(dynamic, 1)
    for (int it = 0; it < items; it++) {
      const int g = it / tiles, p0 = (it % tiles) * KV_TQ;
      tile(&b, g, p0, std::min(KV_TQ, nq - p0), s.data(), sld, buf.data());
    }
  }
  if (cols && nt > 1)
    for (int t = 0; t < nt; t++)
      for (size_t i = 0; i < cols; i++) a.col_sums[i] += parts[(size_t)t * cols + i];
}

// kvEncodeRows(dtype, src, srcOffset, srcStride, rows, headDim, block, blockBytes, dst, dstOffset,
// rowBytes): `rows` rows of headDim floats, row r at src[srcOffset + r·srcStride], encoded into
// dst bytes [dstOffset + r·rowBytes, …) as the cache's element type (src/cache/format.ts).
void KvEncodeRows(const Napi::CallbackInfo &info) {
  const Napi::Env env = info.Env();
  const int dtype = info[0].As<Napi::Number>().Int32Value();
  Napi::Float32Array src = info[1].As<Napi::Float32Array>();
  const double so = info[2].As<Napi::Number>().DoubleValue(), ss = info[3].As<Napi::Number>().DoubleValue();
  const int rows = info[4].As<Napi::Number>().Int32Value(), hd = info[5].As<Napi::Number>().Int32Value();
  const int block = info[6].As<Napi::Number>().Int32Value(), block_bytes = info[7].As<Napi::Number>().Int32Value();
  Napi::Uint8Array dst = info[8].As<Napi::Uint8Array>();
  const double at = info[9].As<Napi::Number>().DoubleValue(), rb = info[10].As<Napi::Number>().DoubleValue();
  const bool quant = dtype == KV_Q8_0 || dtype == KV_Q4_0;
  const double need = dtype == KV_F32 ? 4.0 * hd : dtype == KV_F16 || dtype == KV_BF16 ? 2.0 * hd : quant && block > 0 && hd % block == 0 ? (double)(hd / block) * block_bytes : -1;
  const bool ok = dtype >= KV_F32 && dtype <= KV_Q4_0 && rows >= 1 && hd >= 2 && need > 0 && rb >= need && so >= 0 && ss >= hd && at >= 0 &&
                  so + (rows - 1) * ss + hd <= (double)src.ElementLength() && at + (rows - 1) * rb + need <= (double)dst.ByteLength() &&
                  (!quant || block_bytes >= 2 + (dtype == KV_Q8_0 ? block : block / 2));
  if (!ok) {
    Napi::RangeError::New(env, "kvEncodeRows: rows out of range of the arrays").ThrowAsJavaScriptException();
    return;
  }
  kv_encode_rows(dtype, src.Data() + (size_t)so, (size_t)ss, rows, hd, block, block_bytes, dst.Data() + (size_t)at, (size_t)rb);
}

#ifdef KVP_SLABS
// ---- KV cache page memory (src/cache/slab-memory.ts) ----
// kvSlab(bytes) → {buffer, id}: an ArrayBuffer over fresh anonymous memory (resident only once
// written), unmapped when collected, and the id that names it in page addresses.
// kvRelease(slab, offset, bytes) hands whole OS pages of it back (madvise MADV_DONTNEED: the
// process RSS falls now; the range reads as zeros if used again).
Napi::Value KvSlab(const Napi::CallbackInfo &info) {
  const double n = info[0].As<Napi::Number>().DoubleValue();
  if (!(n >= 1 && n <= (double)(1ull << 40))) {
    Napi::RangeError::New(info.Env(), "kvSlab: size out of range").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  size_t *len = new size_t((size_t)n);
  void *p = mmap(nullptr, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    delete len;
    Napi::Error::New(info.Env(), "kvSlab: out of memory").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  size_t id = 0;
  {
    std::lock_guard<std::mutex> lock(g_slabs_mu);
    while (id < g_slabs.size() && g_slabs[id].first) id++;
    if (id == g_slabs.size()) g_slabs.push_back({nullptr, 0});
    g_slabs[id] = {(uint8_t *)p, *len};
  }
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(info.Env(), p, *len, [](Napi::Env, void *data, size_t *hint) {
    {
      std::lock_guard<std::mutex> lock(g_slabs_mu);
      for (auto &sl : g_slabs)
        if (sl.first == data) sl = {nullptr, 0};
    }
    munmap(data, *hint);
    delete hint;
  }, len);
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("buffer", buffer);
  out.Set("id", Napi::Number::New(info.Env(), (double)id));
  return out;
}

void KvRelease(const Napi::CallbackInfo &info) {
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  const double off = info[1].As<Napi::Number>().DoubleValue(), n = info[2].As<Napi::Number>().DoubleValue();
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (!(off >= 0 && n > 0 && off + n <= (double)ab.ByteLength()) || (size_t)off % page || (size_t)n % page) return;
  madvise((char *)ab.Data() + (size_t)off, (size_t)n, MADV_DONTNEED);
}

Napi::Value KvOsPage(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), (double)sysconf(_SC_PAGESIZE)); }
#endif

// ---- attention statistics for the presses (native/press_attn.c) ----
// pressAttention(out, q, qStride, headOffsets, keys, n, d, rows, lo, hi, pad | null, padLogit,
// scale, rowWeight | null, mode): for each query head i (its row r at q[r·qStride +
// headOffsets[i]]), the column sums (mode 0) or maxima (mode 1) of its row-softmax over the n
// keys [n][d] into out[i·n …] (added / maxed into what is there). Rows are cut into stripes of
// kStripeRows whatever the thread count, each (head, stripe) folded into its own float64 row,
// and the stripes combined in order: the bits do not depend on the team.
constexpr int kStripeRows = 256;
void PressAttention(const Napi::CallbackInfo &info) {
  double *out = F64(info[0]);
  press_attn_args a;
  const float *q = F32(info[1]);
  a.q_stride = (size_t)I32(info[2]);
  Napi::Int32Array heads = info[3].As<Napi::Int32Array>();
  const float *keys = F32(info[4]);
  a.n_keys = I32(info[5]);
  a.head_dim = I32(info[6]);
  a.rows = I32(info[7]);
  a.lo = info[8].As<Napi::Int32Array>().Data();
  a.hi = info[9].As<Napi::Int32Array>().Data();
  a.pad = info[10].IsTypedArray() ? info[10].As<Napi::Int32Array>().Data() : nullptr;
  a.pad_logit = info[11].As<Napi::Number>().FloatValue();
  a.scale = info[12].As<Napi::Number>().FloatValue();
  a.row_weight = info[13].IsTypedArray() ? F32(info[13]) : nullptr;
  a.mode = I32(info[14]);
  const int nh = (int)heads.ElementLength(), n = a.n_keys, stripes = (a.rows + kStripeRows - 1) / kStripeRows, items = nh * stripes;
  if (nh == 0 || n == 0 || a.rows == 0) return;
#if defined(__x86_64__)
  const bool x512 = !std::strcmp(K.isa, "avx512"), x2 = !std::strcmp(K.isa, "avx2");
  auto rows = x512 ? press_attn_rows_avx512 : x2 ? press_attn_rows_avx2 : press_attn_rows_base;
  auto pack = x512 ? press_attn_pack_avx512 : x2 ? press_attn_pack_avx2 : press_attn_pack_base;
#else
  auto rows = press_attn_rows_base;
  auto pack = press_attn_pack_base;
#endif
  static thread_local std::vector<float> kt;
  static thread_local std::vector<double> part;
  kt.resize(press_attn_packed_floats(n, a.head_dim));
  pack(kt.data(), keys, n, a.head_dim);
  a.kt = kt.data();
  part.assign((size_t)items * n, a.mode == PA_SUM ? 0.0 : -1.0);
  // thread_local names mean the calling thread's copy only here: the team gets the pointer.
  double *parts = part.data();
  const size_t sld = (size_t)n + 2 * PA_KB;
  const int nt = std::max(1, std::min(W.threads, items));
  team(nt, [&](int, int) {
    static thread_local std::vector<float> s;
    if (s.size() < PA_TR * sld) s.resize(PA_TR * sld);
    press_attn_args b = a;
#pragma omp for schedule(dynamic, 1)
    for (int it = 0; it < items; it++) {
      const int h = it / stripes, st = it % stripes;
      b.q = q + heads[h];
      rows(&b, st * kStripeRows, std::min(a.rows, (st + 1) * kStripeRows), parts + (size_t)it * n, s.data(), sld);
    }
  });
  for (int h = 0; h < nh; h++) {
    double *o = out + (size_t)h * n;
    for (int st = 0; st < stripes; st++) {
      const double *p = parts + (size_t)(h * stripes + st) * n;
      if (a.mode == PA_SUM)
        for (int t = 0; t < n; t++) o[t] += p[t];
      else
        for (int t = 0; t < n; t++) o[t] = std::max(o[t], p[t]);
    }
  }
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("matmulRows", Napi::Function::New(env, MatmulRows));
  exports.Set("matmulBf16", Napi::Function::New(env, MatmulBf16));
  exports.Set("matmulQuant", Napi::Function::New(env, MatmulQuant));
  exports.Set("rmsnorm", Napi::Function::New(env, Rmsnorm));
  exports.Set("rope", Napi::Function::New(env, Rope));
  exports.Set("siluMul", Napi::Function::New(env, SiluMul));
  exports.Set("add", Napi::Function::New(env, Add));
  exports.Set("attention", Napi::Function::New(env, Attention));
  exports.Set("attentionPaged", Napi::Function::New(env, AttentionPaged));
  exports.Set("kvEncodeRows", Napi::Function::New(env, KvEncodeRows));
#ifdef KVP_SLABS
  exports.Set("kvSlab", Napi::Function::New(env, KvSlab));
  exports.Set("kvRelease", Napi::Function::New(env, KvRelease));
  exports.Set("kvOsPage", Napi::Function::New(env, KvOsPage));
#endif
  exports.Set("gram64", Napi::Function::New(env, Gram64));
  exports.Set("eaLogits64", Napi::Function::New(env, EaLogits64));
  exports.Set("eaQueryMoments64", Napi::Function::New(env, EaQueryMoments64));
  exports.Set("pressAttention", Napi::Function::New(env, PressAttention));
  exports.Set("eaScores64", Napi::Function::New(env, EaScores64));
  exports.Set("windowSoftmaxSums", Napi::Function::New(env, WindowSoftmaxSums));
  exports.Set("valueNormsL1", Napi::Function::New(env, ValueNormsL1));
  exports.Set("pressGemm64", Napi::Function::New(env, PressGemm64));
  exports.Set("pressCenterRows", Napi::Function::New(env, PressCenterRows));
  exports.Set("pressScaleRows", Napi::Function::New(env, PressScaleRows));
  exports.Set("pressRowDots", Napi::Function::New(env, PressRowDots));
  exports.Set("pressInverseForm", Napi::Function::New(env, PressInverseForm));
  exports.Set("fmaProbe", Napi::Function::New(env, FmaProbe));
  exports.Set("bf16Probe", Napi::Function::New(env, Bf16Probe));
  exports.Set("info", Napi::Function::New(env, Info));
  return exports;
}

}  // namespace

NODE_API_MODULE(kvpress_native, Init)
