import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Model } from '../src/model/model.js';
import { calibrate, topEigenvector } from '../src/presses/expected-attention-calibration.js';
import { kvHeadFilters, readQueryStats, writeQueryStats, type QueryStats } from '../src/presses/stats-format.js';
import { mulberry32, randomWeights, tempDir, tinyConfig } from './fixtures/tiny-models.js';

/** A random orthonormal basis (Gram–Schmidt), columns of a d×d row-major matrix. */
function orthonormal(d: number, seed: number): Float64Array {
  const r = mulberry32(seed), V = new Float64Array(d * d);
  for (let c = 0; c < d; c++) {
    const v = Array.from({ length: d }, () => r() - 0.5);
    for (let p = 0; p < c; p++) {
      let dot = 0;
      for (let i = 0; i < d; i++) dot += v[i] * V[i * d + p];
      for (let i = 0; i < d; i++) v[i] -= dot * V[i * d + p];
    }
    const n = Math.hypot(...v);
    for (let i = 0; i < d; i++) V[i * d + c] = v[i] / n;
  }
  return V;
}

test('topEigenvector finds the eigenvector of the largest eigenvalue, even with a small gap', () => {
  for (const [d, gap] of [[8, 1], [16, 1e-3], [64, 0.05]] as const) {
    const V = orthonormal(d, d);
    const lambda = Array.from({ length: d }, (_, i) => (i === 3 ? 5 + gap : 5 - i * 0.01 - (i === 0 ? 0.001 : 0)));
    const S = new Float64Array(d * d);
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) for (let k = 0; k < d; k++) S[i * d + j] += V[i * d + k] * lambda[k] * V[j * d + k];
    const u = topEigenvector(S, d);
    let dot = 0;
    for (let i = 0; i < d; i++) dot += u[i] * V[i * d + 3];
    assert.ok(Math.abs(Math.abs(dot) - 1) < 1e-9, `d ${d}: |cos| = ${Math.abs(dot)}`);
  }
});

test('calibrate: mean and sample covariance of pre-RoPE queries, Q-Filters from post-RoPE queries', () => {
  const c = tinyConfig();
  const model = new Model(c, randomWeights(c, 7));
  const r = mulberry32(9);
  const samples = [30, 17, 3, 25].map((n) => [1, ...Array.from({ length: n - 1 }, () => 2 + Math.floor(r() * 60))]);
  const stats = calibrate(model, samples, { nSink: 4 });
  const d = c.headDim, H = c.numHeads;
  // Reference: gather every query vector beyond the sinks, straight from the forward passes.
  const pre: number[][][][] = [], post: number[][][][] = []; // [layer][head][vector][d]
  for (const ids of samples) {
    model.forward(ids, model.newCache(), {
      logits: 'none',
      press: {
        compress(ctx) {
          const q = ctx.preRopeQueries();
          pre[ctx.layer] ??= Array.from({ length: H }, () => []);
          post[ctx.layer] ??= Array.from({ length: H }, () => []);
          for (let t = 4; t < ctx.rows; t++) for (let h = 0; h < H; h++) {
            pre[ctx.layer][h].push(Array.from(q.subarray((t * H + h) * d, (t * H + h + 1) * d)));
            post[ctx.layer][h].push(Array.from(ctx.queries.subarray((t * H + h) * d, (t * H + h + 1) * d)));
          }
          return null;
        },
      },
    });
  }
  const N = 26 + 13 + 0 + 21;
  assert.equal(stats.tokens, N);
  assert.equal(stats.nSink, 4);
  for (let l = 0; l < c.numLayers; l++) {
    for (let h = 0; h < H; h++) {
      const X = pre[l][h];
      assert.equal(X.length, N);
      const mu = Array.from({ length: d }, (_, i) => X.reduce((s, x) => s + x[i], 0) / N);
      for (let i = 0; i < d; i++) {
        assert.ok(Math.abs(stats.layers[l].mean[h * d + i] - mu[i]) < 1e-5);
        for (let j = 0; j < d; j++) {
          const cov = X.reduce((s, x) => s + (x[i] - mu[i]) * (x[j] - mu[j]), 0) / (N - 1);
          assert.ok(Math.abs(stats.layers[l].cov[(h * d + i) * d + j] - cov) < 1e-5, `layer ${l} head ${h} cov[${i}][${j}]`);
        }
      }
      // The filter f: unit, −f maximises ‖Qv‖ (power iteration on QᵀQ), queries project negatively on f.
      const f = Array.from(stats.layers[l].qfilter.subarray(h * d, (h + 1) * d));
      assert.ok(Math.abs(Math.hypot(...f) - 1) < 1e-6);
      const Y = post[l][h];
      let v = Array.from({ length: d }, (_, i) => 1 + i);
      for (let it = 0; it < 3000; it++) {
        const w = new Array(d).fill(0);
        for (const y of Y) {
          const p = y.reduce((s, yi, i) => s + yi * v[i], 0);
          for (let i = 0; i < d; i++) w[i] += p * y[i];
        }
        const n = Math.hypot(...w);
        v = w.map((x) => x / n);
      }
      const cos = Math.abs(f.reduce((s, fi, i) => s + fi * v[i], 0));
      assert.ok(cos > 1 - 1e-6, `layer ${l} head ${h}: |cos(f, v1)| = ${cos}`);
      const meanProj = Y.reduce((s, y) => s + y.reduce((a, yi, i) => a + yi * f[i], 0), 0) / Y.length;
      assert.ok(meanProj < 0, 'stored as −u, u oriented along the queries');
    }
  }
  assert.throws(() => calibrate(model, [[1, 2, 3, 4, 5]]), /needs at least 2 tokens beyond the first 4 of each sample, got 1/);
});

test('query statistics round-trip through JSON and safetensors; bad files are named', () => {
  const dir = tempDir('stats');
  const r = mulberry32(3), H = 3, d = 4;
  const rnd = (n: number) => Float32Array.from({ length: n }, () => r() - 0.5);
  const stats: QueryStats = {
    model: 'm', numHeads: H, headDim: d, nSink: 4, tokens: 99,
    layers: [0, 1].map(() => ({ mean: rnd(H * d), cov: rnd(H * d * d), qfilter: rnd(H * d) })),
  };
  for (const ext of ['json', 'safetensors']) {
    const p = join(dir, `s.${ext}`);
    writeQueryStats(p, stats);
    assert.deepEqual(readQueryStats(p), stats);
  }
  const kv = kvHeadFilters(stats, 1, 1);
  for (let i = 0; i < d; i++) {
    const want = (stats.layers[1].qfilter[i] + stats.layers[1].qfilter[d + i] + stats.layers[1].qfilter[2 * d + i]) / 3;
    assert.ok(Math.abs(kv[i] - want) < 1e-7);
  }
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ hello: 1 }));
  assert.throws(() => readQueryStats(bad), /bad\.json: not a query statistics file \(expected "format": "kvpress-query-stats"/);
  writeFileSync(bad, JSON.stringify({ format: 'kvpress-query-stats', numHeads: 1, headDim: 2, layers: [{ mean: [[1, 2]], cov: [[[1, 0], [0]]], qfilter: [[1, 0]] }] }));
  assert.throws(() => readQueryStats(bad), /bad\.json: layer 0 cov holds 3 numbers, expected 4/);
  assert.throws(() => readQueryStats(join(dir, 's.txt')), /s\.txt: query statistics must be a \.json or \.safetensors file/);
});
