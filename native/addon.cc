// N-API glue of the native backend: zero-copy views of the caller's Float32Arrays, dense
// products through OpenBLAS, everything else through our kernels (kernels.h) picked at load
// time for the CPU at hand, threaded with OpenMP. Arguments are validated on the TypeScript
// side (src/backend/native/index.ts); this file trusts them.
#include <napi.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels.hpp"

extern "C" {
// The few OpenBLAS entry points we use, declared here so that any OpenBLAS install works
// without depending on where its cblas.h lives.
enum { CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112 };
void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);
void cblas_sgemv(int order, int trans, int m, int n, float alpha, const float *a, int lda, const float *x, int incx,
                 float beta, float *y, int incy);
void openblas_set_num_threads(int n);
int openblas_get_num_threads(void);
char *openblas_get_corename(void);
char *openblas_get_config(void);
}

namespace {

KernelSet pick_kernels() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
    return KVP_SET(avx512, 16);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return KVP_SET(avx2, 8);
#endif
  return KVP_SET(base, 4);
}

const KernelSet K = pick_kernels();
int g_threads = 1;

// Elements below which a row-wise op stays on the calling thread (waking a team costs more).
constexpr size_t kParallelMin = 1 << 15;

// Scratch that grows to the largest call seen and is then reused: the token loop allocates
// nothing.
struct Scratch {
  float *p = nullptr;
  size_t cap = 0;
  float *get(size_t n) {
    if (n > cap) {
      std::free(p);
      cap = std::max(n, cap * 2);
      p = static_cast<float *>(std::aligned_alloc(64, (cap * sizeof(float) + 63) / 64 * 64));
    }
    return p;
  }
};
Scratch g_packed, g_scores;

float *F32(const Napi::Value &v) { return v.As<Napi::Float32Array>().Data(); }

int I32(const Napi::Value &v) { return v.As<Napi::Number>().Int32Value(); }

void SetThreads(const Napi::CallbackInfo &info) {
  g_threads = std::max(1, I32(info[0]));
  openblas_set_num_threads(g_threads);
}

void Matmul(const Napi::CallbackInfo &info) {
  float *out = F32(info[0]);
  const float *x = F32(info[1]), *w = F32(info[2]);
  int m = I32(info[3]), n = I32(info[4]), k = I32(info[5]);
  const float *bias = info[6].IsTypedArray() ? F32(info[6]) : nullptr;
  float beta = 0.0f;
  if (bias) {
    for (int i = 0; i < m; i++) std::memcpy(out + (size_t)i * n, bias, sizeof(float) * n);
    beta = 1.0f;
  }
  // m = 1 is decode's memory-bound product: OpenBLAS's sgemv streamed cached weights at
  // 65-70 GB/s on one Zen 5 thread, our vector gemv (kernels.h, used by wasm) at 45.
  if (m == 1)
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, k, x, 1, beta, out, 1);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w, k, beta, out, n);
}

void Rmsnorm(const Napi::CallbackInfo &info) {
  float *out = F32(info[0]);
  const float *x = F32(info[1]), *w = F32(info[2]);
  int rows = I32(info[3]), dim = I32(info[4]);
  float eps = info[5].As<Napi::Number>().FloatValue();
  int nt = (size_t)rows * dim >= kParallelMin ? std::min(g_threads, rows) : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int t = 0; t < nt; t++) {
    int r0 = (int)((long)rows * t / nt), r1 = (int)((long)rows * (t + 1) / nt);
    K.rmsnorm(out + (size_t)r0 * dim, x + (size_t)r0 * dim, w, r1 - r0, dim, eps);
  }
}

void Rope(const Napi::CallbackInfo &info) {
  float *x = F32(info[0]);
  int rows = I32(info[1]), heads = I32(info[2]), hd = I32(info[3]);
  const float *cs = F32(info[4]), *sn = F32(info[5]);
  int half = hd / 2;
  int nt = (size_t)rows * heads * hd >= kParallelMin ? std::min(g_threads, rows) : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int t = 0; t < nt; t++) {
    int r0 = (int)((long)rows * t / nt), r1 = (int)((long)rows * (t + 1) / nt);
    K.rope(x + (size_t)r0 * heads * hd, r1 - r0, heads, hd, cs + (size_t)r0 * half, sn + (size_t)r0 * half);
  }
}

void SiluMul(const Napi::CallbackInfo &info) {
  float *g = F32(info[0]);
  const float *u = F32(info[1]);
  size_t n = (size_t)info[2].As<Napi::Number>().Int64Value();
  int nt = n >= kParallelMin ? g_threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int t = 0; t < nt; t++) {
    size_t i0 = n * t / nt / 64 * 64, i1 = t == nt - 1 ? n : n * (t + 1) / nt / 64 * 64;
    K.silu_mul(g + i0, u + i0, i1 - i0);
  }
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
  std::vector<const float *> kp(nkv), vp(nkv);
  for (int g = 0; g < nkv; g++) {
    kp[g] = F32(keys.Get(g));
    vp[g] = F32(values.Get(g));
  }
  a.keys = kp.data();
  a.values = vp.data();

  const int group = a.num_heads / nkv, nq = a.rows * group, tiles = (nq + K.tile_rows - 1) / K.tile_rows;
  // Packing the keys pays off once enough query rows share them (prefill, big GQA groups).
  const bool packed = nq >= 2 * K.tile_rows;
  int maxlen = 0;
  std::vector<size_t> koff(nkv + 1, 0);
  for (int g = 0; g < nkv; g++) {
    maxlen = std::max(maxlen, (int)a.lengths[g]);
    koff[g + 1] = koff[g] + (packed ? ((size_t)a.lengths[g] + K.key_block - 1) / K.key_block * K.key_block * hd : 0);
  }
  const size_t sld = ((size_t)maxlen + K.key_block - 1) / K.key_block * K.key_block + K.key_block;
  const int items = nkv * tiles;
  const int nt = std::max(1, std::min(g_threads, items));
  float *kt = packed ? g_packed.get(koff[nkv]) : nullptr;
  float *scores = g_scores.get((size_t)nt * K.tile_rows * sld);
  const double work = (double)nq * maxlen * hd;
#pragma omp parallel num_threads(nt) if (nt > 1 && work > 1e5)
  {
    float *s = scores + (size_t)omp_get_thread_num() * K.tile_rows * sld;
    if (packed) {
#pragma omp for schedule(static)
      for (int g = 0; g < nkv; g++) K.attn_pack(&a, g, kt + koff[g]);
    }
#pragma omp for schedule(dynamic, 1)
    for (int it = 0; it < items; it++) {
      int g = it / tiles, p0 = (it % tiles) * K.tile_rows;
      int nr = std::min(K.tile_rows, nq - p0);
      K.attn_tile(&a, g, p0, nr, packed ? kt + koff[g] : nullptr, s, sld);
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

Napi::Value Info(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", K.isa);
  o.Set("vectorFloats", K.vector_floats);
  // Flops of one probe iteration: 12 independent vector multiply-adds.
  o.Set("probeFlopsPerIteration", 12 * 2 * K.vector_floats);
  o.Set("blasCore", openblas_get_corename());
  o.Set("blasConfig", openblas_get_config());
  o.Set("blasThreads", openblas_get_num_threads());
  o.Set("threads", g_threads);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  g_threads = std::max(1, openblas_get_num_threads());
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("rmsnorm", Napi::Function::New(env, Rmsnorm));
  exports.Set("rope", Napi::Function::New(env, Rope));
  exports.Set("siluMul", Napi::Function::New(env, SiluMul));
  exports.Set("attention", Napi::Function::New(env, Attention));
  exports.Set("fmaProbe", Napi::Function::New(env, FmaProbe));
  exports.Set("info", Napi::Function::New(env, Info));
  return exports;
}

}  // namespace

NODE_API_MODULE(kvpress_native, Init)
