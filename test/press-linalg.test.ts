/**
 * The leverage presses' float64 helpers (native/press_linalg.c and its TypeScript fallback,
 * src/presses/linalg64.ts) against derivations written here from their definitions; Cap against
 * a reference written from the paper's formulas (its mean query is taken from the hidden states);
 * and the presses built on the helpers keeping on the native backend what they keep on the
 * TypeScript one.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend } from '../src/backend/backend.js';
import { JsBackend } from '../src/backend/js/kernels.js';
import type { Linalg64 } from '../src/backend/linalg64.js';
import { loadNative, NativeBackend } from '../src/backend/native/index.js';
import { LayerContext } from '../src/model/layer-context.js';
import { loadModel } from '../src/model/load.js';
import { Model } from '../src/model/model.js';
import { CapPress } from '../src/presses/cap.js';
import { averagedRope, rotateVector } from '../src/presses/expected-attention-kernels.js';
import { presses } from '../src/presses/index.js';
import { jsLinalg64 } from '../src/presses/linalg64.js';
import { cholesky } from '../src/presses/quadratic-forms.js';
import { randomWeights, tinyConfig } from './fixtures/tiny-models.js';
import { eachLayerOnTwoBackends } from './helpers/layer-pairs.js';
import { rng } from './helpers/random.js';

const load = loadNative();
const native = load.ok ? new NativeBackend(load.addon, load.info) : null;
const impls: [string, Linalg64][] = [['typescript', jsLinalg64], ...(native ? [['native', native.linalg64] as [string, Linalg64]] : [])];

const f64 = (r: (s?: number) => number, n: number) => Float64Array.from({ length: n }, () => r());
const near = (a: number, b: number, rel: number, what: string) => assert.ok(Math.abs(a - b) <= rel * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

/** Solves A y = b (A n×n) by Gaussian elimination with partial pivoting. */
function solve(A: Float64Array, b: Float64Array, n: number): Float64Array {
  const M = Array.from({ length: n }, (_, i) => [...A.subarray(i * n, (i + 1) * n), b[i]]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r][c]) > Math.abs(M[p][c])) p = r;
    [M[c], M[p]] = [M[p], M[c]];
    for (let r = c + 1; r < n; r++) {
      const f = M[r][c] / M[c][c];
      for (let j = c; j <= n; j++) M[r][j] -= f * M[c][j];
    }
  }
  const y = new Float64Array(n);
  for (let r = n - 1; r >= 0; r--) {
    let s = M[r][n];
    for (let j = r + 1; j < n; j++) s -= M[r][j] * y[j];
    y[r] = s / M[r][r];
  }
  return y;
}

for (const [name, la] of impls) {
  test(`linalg64 (${name}): gemm, centerRows, scaleRows, rowDots and inverseForm match their definitions`, () => {
    const r = rng(7);
    const [m, n, k] = [5, 7, 9];
    const a = f64(r, m * k), at = new Float64Array(k * m), b = f64(r, k * n), c = new Float64Array(m * n).fill(99);
    for (let i = 0; i < m; i++) for (let p = 0; p < k; p++) at[p * m + i] = a[i * k + p];
    for (const [A, trans] of [[a, false], [at, true]] as const) {
      la.gemm(c, A, b, m, n, k, trans);
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) near(c[i * n + j], Array.from({ length: k }, (_, p) => a[i * k + p] * b[p * n + j]).reduce((x, y) => x + y, 0), 1e-13, `gemm[${i}][${j}]`);
    }
    // Rows of d = 6 inside a stride of 10 (one head of an interleaved tensor).
    const rows = 13, d = 6, stride = 10, src = Float32Array.from({ length: (rows - 1) * stride + d }, () => r(3));
    const row = (t: number) => Array.from(src.subarray(t * stride, t * stride + d));
    const k32 = new Float32Array(rows * d), x = new Float64Array(rows * d), mean = new Float64Array(d);
    la.centerRows(k32, x, mean, src, stride, rows, d);
    for (let j = 0; j < d; j++) {
      const mu = Array.from({ length: rows }, (_, t) => row(t)[j]).reduce((s, v) => s + v, 0) / rows;
      near(mean[j], mu, 1e-14, `mean[${j}]`);
      for (let t = 0; t < rows; t++) {
        assert.equal(k32[t * d + j], row(t)[j]);
        near(x[t * d + j], row(t)[j] - mu, 1e-14, `x[${t}][${j}]`);
      }
    }
    const scale = f64(r, rows);
    la.scaleRows(x, src, stride, rows, d, scale);
    for (let t = 0; t < rows; t++) for (let j = 0; j < d; j++) assert.equal(x[t * d + j], scale[t] * row(t)[j]);
    const g = 3, vecs = f64(r, g * d), dots = new Float64Array((g + 1) * rows);
    la.rowDots(dots, src, stride, rows, d, vecs, g, null, true);
    for (let t = 0; t < rows; t++) {
      near(dots[g * rows + t], row(t).reduce((s, v) => s + v * v, 0), 1e-14, `‖r_${t}‖²`);
      for (let i = 0; i < g; i++) near(dots[i * rows + t], row(t).reduce((s, v, j) => s + v * vecs[i * d + j], 0), 1e-14, `r_${t}·v_${i}`);
    }
    // A subset of rows by index, without the norms (the slot after the dot products untouched).
    const index = Int32Array.from([12, 0, 5]), some = new Float64Array(g * 3 + 1).fill(7);
    la.rowDots(some, src, stride, 3, d, vecs, g, index, false);
    index.forEach((t, u) => { for (let i = 0; i < g; i++) near(some[i * 3 + u], row(t).reduce((s, v, j) => s + v * vecs[i * d + j], 0), 1e-14, `r_${t}·v_${i}`); });
    assert.equal(some[g * 3], 7);
    // W = P(LLᵀ)⁻¹Pᵀ: xᵀWx = (Pᵀx)ᵀ A⁻¹ (Pᵀx) for A = LLᵀ symmetric positive definite.
    const kk = 5, dd = 7, R = f64(r, kk * kk), A = new Float64Array(kk * kk), P = f64(r, dd * kk), W = new Float64Array(dd * dd);
    for (let i = 0; i < kk; i++) for (let j = 0; j < kk; j++) A[i * kk + j] = (i === j ? kk : 0) + R.subarray(i * kk, i * kk + kk).reduce((s, v, q) => s + v * R[j * kk + q], 0);
    la.inverseForm(W, cholesky(A, kk)!, kk, P, dd);
    for (let trial = 0; trial < 4; trial++) {
      const xv = f64(r, dd), ptx = Float64Array.from({ length: kk }, (_, q) => xv.reduce((s, v, i) => s + v * P[i * kk + q], 0));
      const want = solve(A, ptx, kk).reduce((s, v, q) => s + v * ptx[q], 0);
      const got = xv.reduce((s, v, i) => s + v * xv.reduce((t, w, j) => t + W[i * dd + j] * w, 0), 0);
      near(got, want, 1e-12, 'xᵀWx');
    }
    for (let i = 0; i < dd; i++) for (let j = 0; j < dd; j++) assert.equal(W[i * dd + j], W[j * dd + i]);
  });
}

test('linalg64 (native): arrays too short for the arguments are one-line RangeErrors, nothing written', { skip: native ? false : 'native addon not built' }, () => {
  const la = native!.linalg64;
  const out = new Float64Array(8).fill(5);
  assert.throws(() => la.rowDots(out, new Float32Array(10), 4, 3, 4, new Float64Array(4), 1, null, true), /^RangeError: rowDots: src has 10 floats, needs 12$/);
  assert.throws(() => la.rowDots(out, new Float32Array(12), 4, 3, 4, new Float64Array(4), 2, null, true), /^RangeError: rowDots: out has 8 doubles, needs 9$/);
  assert.throws(() => la.rowDots(out, new Float32Array(12), 4, 2, 4, new Float64Array(4), 1, Int32Array.from([0, 3]), false), /^RangeError: rowDots: src has 12 floats, needs 16$/);
  assert.throws(() => la.rowDots(out, new Float32Array(12), 4, 2, 4, new Float64Array(4), 1, Int32Array.from([0, -1]), false), /^RangeError: rowDots: index\[1\] = -1 is negative$/);
  assert.throws(() => la.centerRows(null, out, out, new Float32Array(8), 2, 4, 3), /^RangeError: centerRows: stride 2 is shorter than a row \(3\)$/);
  assert.throws(() => la.gemm(out, new Float64Array(6), new Float64Array(6), 3, 3, 2, false), /^RangeError: gemm64: c has 8 doubles, needs 9$/);
  assert.throws(() => la.inverseForm(out, new Float64Array(4), 2, new Float64Array(5), 3), /^RangeError: inverseForm: w has 8 doubles, needs 9$/);
  assert.deepEqual([...out], Array(8).fill(5));
});

/** CapPress's scores written out from the formulas, the mean query from the projected queries of every row. */
function capReference(ctx: LayerContext, tau: number, nFuture: number, S: number, eps: number): number[][] {
  const c = ctx.config, d = c.headDim, H = c.numHeads, G = H / c.numKvHeads, q = ctx.preRopeQueries(), rows = ctx.rows;
  const rbar = averagedRope(ctx.rope.invFreq, rows, nFuture);
  return Array.from({ length: c.numKvHeads }, (_, g) => {
    const T = ctx.cache.lengths[g], K = ctx.cache.headKeys(g), V = ctx.cache.headValues(g);
    const key = (t: number) => Array.from(K.subarray(t * d, (t + 1) * d)), val = (t: number) => Float64Array.from(V.subarray(t * d, (t + 1) * d));
    const sum = new Array(T - S).fill(0);
    for (let j = 0; j < G; j++) {
      const h = g * G + j, mq = new Float64Array(d);
      for (let r = S; r < rows; r++) for (let i = 0; i < d; i++) mq[i] += q[r * H * d + h * d + i] / (rows - S);
      const anchor = Array.from(rotateVector(mq, rbar));
      const cos = Array.from({ length: T - S }, (_, t) => {
        const k = key(S + t);
        return k.reduce((s, v, i) => s + v * anchor[i], 0) / (Math.hypot(...anchor) * Math.hypot(...k));
      });
      const top = Math.max(...cos), w = cos.map((x) => Math.exp(tau * (x - top)));
      const A = new Float64Array(d * d);
      for (let i = 0; i < d; i++) A[i * d + i] = 1;
      for (let t = 0; t < T - S; t++) {
        const v = val(S + t);
        for (let i = 0; i < d; i++) for (let l = 0; l < d; l++) A[i * d + l] += (w[t] + eps) * v[i] * v[l];
      }
      for (let t = 0; t < T - S; t++) {
        const v = val(S + t);
        sum[t] += (w[t] * solve(A, v, d).reduce((s, y, i) => s + y * v[i], 0)) / G;
      }
    }
    return sum;
  });
}

test('Cap on a model with query biases: scores equal the formulas with the mean of the projected queries (native and TypeScript)', () => {
  const c = tinyConfig({ attentionBias: true, numLayers: 2 });
  const ids = Array.from({ length: 40 }, (_, i) => 1 + ((i * 13 + 5) % (c.vocabSize - 1)));
  for (const backend of [new JsBackend('reference'), ...(native ? [native] : [])] as Backend[]) {
    const model = new Model(c, randomWeights(c, 3), { backend });
    let layers = 0;
    model.forward(ids, model.newCache(), {
      logits: 'none',
      press: {
        compress: (ctx) => {
          const press = new CapPress(0.5, { nSink: 4, nFuturePositions: 16 });
          const got = press.score(ctx), want = capReference(ctx, 5, 16, 4, 1e-6);
          // The reference's queries are float32 products (relative error up to hidden·2⁻²⁴ ≈ 2e-6
          // each), the press's mean query a float64 one: the scores agree to that.
          want.forEach((w, g) => w.forEach((x, t) => near(got[g][4 + t], x, 2e-6, `${backend.name} layer ${ctx.layer} head ${g} entry ${4 + t}`)));
          layers++;
          return null;
        },
      },
    });
    assert.equal(layers, c.numLayers);
  }
});

test('the leverage presses keep on the native helpers exactly what they keep on the TypeScript ones (stories260K)', { skip: native ? false : 'native addon not built' }, async () => {
  const model = await loadModel(undefined, { backend: native as Backend });
  const js = new JsBackend('reference');
  const ids = Array.from({ length: 180 }, (_, i) => 1 + ((i * 37 + 11) % (model.config.vocabSize - 1)));
  const names = ['leverage_score', 'compactor', 'cap', 'keydiff', 'block_keydiff', 'cur'];
  const layers = eachLayerOnTwoBackends(model, ids, js, (ctx, onJs) => {
    const m = ctx.model;
    for (const name of names) {
      for (const ratio of [0.5, 0.75]) {
        const a = presses.create(name, ratio), b = presses.create(name, ratio);
        const fresh = new LayerContext({ config: m.config, layerWeights: m.layerWeights, backend: ctx.backend, rope: m.rope }, ctx.layer, ctx.kvCache, ctx.isPrefill, ctx.rows, ctx.hidden, ctx.positions, ctx.queries);
        assert.deepEqual(a.compress(fresh), b.compress(onJs), `${name}@${ratio}, layer ${ctx.layer}`);
      }
    }
  });
  assert.equal(layers, model.config.numLayers);
});
