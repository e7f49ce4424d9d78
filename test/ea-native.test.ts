/**
 * The native backend's float64 kernels of Expected Attention (gram64, eaLogits64, eaQueryMoments64) against the
 * TypeScript float64 loops they replace, and EA's scores on stories260K through either.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend } from '../src/backend/backend.js';
import { JsBackend } from '../src/backend/js/kernels.js';
import { loadNative, NativeBackend } from '../src/backend/native/index.js';
import { loadModel } from '../src/model/load.js';
import { centeredGram, ExpectedAttentionPress, logits } from '../src/presses/expected-attention.js';
import { topK } from '../src/presses/scorer.js';
import { mulberry32 } from './fixtures/tiny-models.js';
import { eachLayerOnTwoBackends } from './helpers/layer-pairs.js';

// Built directly rather than through createBackend, which KVPRESS_BACKEND may redirect.
const load = loadNative();
const native = load.ok ? new NativeBackend(load.addon, load.info) : null;
const skip = native ? false : 'native addon not built';

function randomF64(n: number, seed: number): Float64Array {
  const r = mulberry32(seed);
  return Float64Array.from({ length: n }, () => 2 * r() - 1);
}

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, n: number, tol: number, what: string): void {
  let scale = 0;
  for (let i = 0; i < n; i++) scale = Math.max(scale, Math.abs(want[i]));
  for (let i = 0; i < n; i++) {
    assert.ok(Math.abs(got[i] - want[i]) <= tol * Math.max(Math.abs(want[i]), 1e-3 * scale), `${what}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

test('gram64 equals the float64 covariance loop on odd shapes, for 1 and 2 threads', { skip }, () => {
  const be = native as Backend;
  for (const d of [8, 64, 128, 7]) {
    for (const n of [1, 13, 203]) {
      const X = randomF64(n * d + 5, d * 1000 + n); // longer than n·d: only the first n rows count
      const want = centeredGram(X, 0, n, d);
      const outs = [1, 2].map((threads) => {
        be.setThreads(threads); // capped at the cores available
        const out = new Float64Array(d * d).fill(NaN);
        be.gram64!(out, X, n, d);
        return out;
      });
      for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) assert.equal(outs[0][i * d + j], outs[0][j * d + i], `symmetric d=${d} n=${n}`);
      assert.deepEqual(outs[1], outs[0], `thread count changed the bits, d=${d} n=${n}`);
      assertClose(outs[0].map((v) => v / n), want, d * d, 1e-12, `gram d=${d} n=${n}`);
    }
  }
});

test('eaLogits64 equals the float64 logits loop on odd shapes, with and without the quadratic part', { skip }, () => {
  const be = native as Backend;
  const r = mulberry32(5);
  for (const d of [8, 64, 128]) {
    for (const G of [1, 2, 7]) {
      for (const withQuad of [false, true]) {
        const s0 = 3, m = d === 64 ? 37 : 21, T = s0 + m + 2;
        const keys = Float32Array.from({ length: T * d }, () => 4 * r() - 2);
        const mus = randomF64(G * d, d + G);
        let quad: Float64Array | null = null;
        if (withQuad) {
          // Upper triangles; the lower ones hold garbage the kernel must not read.
          quad = randomF64(G * d * d, 7 * d + G);
          const upper = Float64Array.from(quad);
          for (let k = 0; k < G; k++) for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) upper[(k * d + i) * d + j] = 0;
          const stride = Math.ceil(m / 8) * 8 + 3;
          const want = new Float64Array(G * stride);
          logits(keys, s0, m, d, G, mus, upper, want, stride);
          const [got, got2] = [1, 2].map((threads) => {
            be.setThreads(threads);
            const z = new Float64Array(G * stride).fill(NaN);
            be.eaLogits64!(z, keys, s0, m, d, G, mus, quad, stride);
            return z;
          });
          assert.deepEqual(got2, got, `thread count changed the bits, d=${d} G=${G}`);
          for (let k = 0; k < G; k++) {
            assertClose(got.subarray(k * stride, k * stride + m), want.subarray(k * stride, k * stride + m), m, 1e-12, `z d=${d} G=${G} head ${k}`);
            assert.ok(Number.isNaN(got[k * stride + m]), 'nothing written past m');
          }
        } else {
          const stride = Math.ceil(m / 8) * 8;
          const want = new Float64Array(G * stride), got = new Float64Array(G * stride);
          logits(keys, s0, m, d, G, mus, null, want, stride);
          be.eaLogits64!(got, keys, s0, m, d, G, mus, null, stride);
          for (let k = 0; k < G; k++) assertClose(got.subarray(k * stride, k * stride + m), want.subarray(k * stride, k * stride + m), m, 1e-12, `z d=${d} G=${G} linear head ${k}`);
        }
      }
    }
  }
});

test('eaQueryMoments64 equals the pre-RoPE query moments derived directly in float64, for 1 and 2 threads', { skip }, () => {
  const be = native as Backend;
  const r = mulberry32(11);
  for (const [d, H, n, start] of [[8, 3, 1, 0], [64, 9, 37, 4], [6, 2, 203, 2]]) {
    const half = d / 2, qStride = H * d + 5, rows = start + n;
    const q = Float32Array.from({ length: rows * qStride }, () => 4 * r() - 2);
    const cos = new Float64Array(n * half), sin = new Float64Array(n * half);
    for (let t = 0; t < n; t++) for (let i = 0; i < half; i++) {
      const a = (start + t) * Math.pow(10000, (-2 * i) / d);
      cos[t * half + i] = Math.cos(a);
      sin[t * half + i] = Math.sin(a);
    }
    const runs = [1, 2].map((threads) => {
      be.setThreads(threads);
      const mean = new Float64Array(H * d).fill(NaN), cov = new Float64Array(H * d * d).fill(NaN), meanOnly = new Float64Array(H * d);
      be.eaQueryMoments64!(mean, cov, q, qStride, start, n, H, d, cos, sin);
      be.eaQueryMoments64!(meanOnly, null, q, qStride, start, n, H, d, cos, sin);
      assert.deepEqual(meanOnly, mean, 'the mean does not depend on cov');
      return { mean, cov };
    });
    assert.deepEqual(runs[1], runs[0], `thread count changed the bits, d=${d} H=${H} n=${n}`);
    for (let h = 0; h < H; h++) {
      // x_t = R(−p_t)·q_t pair by pair (i, i + d/2); μ and the population covariance in plain float64.
      const X = new Float64Array(n * d), mu = new Float64Array(d);
      for (let t = 0; t < n; t++) for (let i = 0; i < half; i++) {
        const a = q[(start + t) * qStride + h * d + i], b = q[(start + t) * qStride + h * d + i + half], c = cos[t * half + i], s = sin[t * half + i];
        X[t * d + i] = a * c + b * s;
        X[t * d + i + half] = b * c - a * s;
      }
      for (let t = 0; t < n; t++) for (let i = 0; i < d; i++) mu[i] += X[t * d + i] / n;
      const cov = new Float64Array(d * d);
      for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) {
        let acc = 0;
        for (let t = 0; t < n; t++) acc += (X[t * d + i] - mu[i]) * (X[t * d + j] - mu[j]);
        cov[i * d + j] = acc / n;
      }
      assertClose(runs[0].mean.subarray(h * d, (h + 1) * d), mu, d, 1e-12, `mean d=${d} head ${h}`);
      assertClose(runs[0].cov.subarray(h * d * d, (h + 1) * d * d), cov, d * d, 1e-10, `cov d=${d} head ${h}`);
    }
  }
  const q = new Float32Array(4 * 16), cs = new Float64Array(8);
  assert.throws(() => be.eaQueryMoments64!(new Float64Array(16), null, q, 16, 1, 4, 2, 8, cs, cs), /eaQueryMoments64: q has 64 floats, needs 80/);
  assert.throws(() => be.eaQueryMoments64!(new Float64Array(16), new Float64Array(127), q, 16, 0, 2, 2, 8, cs, cs), /eaQueryMoments64: cov has 127 doubles, needs 128/);
  assert.throws(() => be.eaQueryMoments64!(new Float64Array(16), null, q, 16, 0, 4, 2, 8, cs.subarray(1), cs), /eaQueryMoments64: cos has 7 doubles, needs 16/);
});

test('eaQueryMoments64 keeps a small covariance exact beside a large mean (no cancellation)', { skip }, () => {
  // Queries 300 ± 0.01 at position 0 (no rotation): Σ ≈ 3e-5 beside μ² ≈ 9e4. Raw sums (Σxxᵀ/n − μμᵀ)
  // would leave float64 rounding of μ² (≈ 1e-11) in every entry, a relative error near 1e-6.
  const be = native as Backend, r = mulberry32(5), d = 8, H = 2, n = 500, half = d / 2;
  const q = Float32Array.from({ length: n * H * d }, () => 300 + 0.02 * (r() - 0.5));
  const cos = new Float64Array(n * half).fill(1), sin = new Float64Array(n * half);
  const mean = new Float64Array(H * d), cov = new Float64Array(H * d * d);
  be.eaQueryMoments64!(mean, cov, q, H * d, 0, n, H, d, cos, sin);
  for (let h = 0; h < H; h++) {
    const mu = new Float64Array(d);
    for (let t = 0; t < n; t++) for (let i = 0; i < d; i++) mu[i] += q[t * H * d + h * d + i] / n;
    const want = new Float64Array(d * d);
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) {
      let acc = 0;
      for (let t = 0; t < n; t++) acc += (q[t * H * d + h * d + i] - mu[i]) * (q[t * H * d + h * d + j] - mu[j]);
      want[i * d + j] = acc / n;
    }
    assertClose(mean.subarray(h * d, (h + 1) * d), mu, d, 1e-13, `mean head ${h}`);
    assertClose(cov.subarray(h * d * d, (h + 1) * d * d), want, d * d, 1e-9, `cov head ${h}`);
  }
});

test('gram64 and eaLogits64 reject bad arguments with one-line errors', { skip }, () => {
  const be = native as Backend;
  assert.throws(() => be.gram64!(new Float64Array(15), new Float64Array(16), 4, 4), /gram64: out has 15 doubles, needs 16/);
  assert.throws(() => be.gram64!(new Float64Array(16), new Float64Array(15), 4, 4), /gram64: x has 15 doubles, needs 16/);
  assert.throws(() => be.gram64!(new Float64Array(16), new Float32Array(16) as unknown as Float64Array, 4, 4), /gram64: x must be a Float64Array/);
  const keys = new Float32Array(10 * 8), mus = new Float64Array(2 * 8), quad = new Float64Array(2 * 64);
  assert.throws(() => be.eaLogits64!(new Float64Array(16), keys, 4, 7, 8, 2, mus, quad, 8), /eaLogits64: keys has 80 floats, needs 88/);
  assert.throws(() => be.eaLogits64!(new Float64Array(16), keys, 0, 9, 8, 2, mus, quad, 8), /eaLogits64: stride \(8\) must be at least m \(9\)/);
  assert.throws(() => be.eaLogits64!(new Float64Array(14), keys, 0, 7, 8, 2, mus, quad, 8), /eaLogits64: z has 14 doubles, needs 15/);
  assert.throws(() => be.eaLogits64!(new Float64Array(16), keys, 0, 7, 8, 2, mus, new Float64Array(127), 8), /eaLogits64: quad has 127 doubles, needs 128/);
  assert.throws(() => be.eaLogits64!(new Float64Array(16), keys, 0, 7, 8, 2, mus.subarray(1), null, 8), /eaLogits64: mus has 15 doubles, needs 16/);
  assert.throws(() => be.eaLogits64!(new Float64Array(16), keys, -1, 7, 8, 2, mus, null, 8), /eaLogits64: s0 must be a non-negative integer/);
});

test('EA scores on stories260K: the native kernels keep what the float64 loops keep', { skip }, async () => {
  const model = await loadModel(undefined, { backend: native as Backend });
  const js = new JsBackend();
  const text = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. '.repeat(5);
  const ids = model.tokenizer!.encode(text, { bos: true });
  const layers = eachLayerOnTwoBackends(model, ids, js, (ctx, onJs) => {
    for (const useCovariance of [true, false]) {
      const press = new ExpectedAttentionPress(0.5, { useCovariance });
      const a = press.score(ctx), b = press.score(onJs);
      for (let g = 0; g < a.length; g++) {
        for (let t = 0; t < a[g].length; t++) assert.ok(Math.abs(a[g][t] - b[g][t]) <= 1e-10, `layer ${ctx.layer} head ${g} entry ${t}: ${a[g][t]} vs ${b[g][t]}`);
        const keep = Math.floor(a[g].length / 2);
        assert.deepEqual(topK(a[g], keep), topK(b[g], keep), `kept sets, layer ${ctx.layer} head ${g}`);
      }
    }
  });
  assert.equal(layers, model.config.numLayers);
});
