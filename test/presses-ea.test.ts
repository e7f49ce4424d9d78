/**
 * Expected Attention checked against the spec's formulas (§2.3, §2.4, §2.9), evaluated here
 * independently: dense d×d rotation matrices averaged position by position, pre-RoPE queries
 * from the W_q projection (LayerContext.preRopeQueries), plain float64 softmaxes, and the model's
 * own RoPE kernel for "the mean query placed at position T".
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LayerContext } from '../src/model/layer-context.js';
import { loadModel } from '../src/model/load.js';
import { Model } from '../src/model/model.js';
import { ExpectedAttentionStatsPress } from '../src/presses/expected-attention-stats.js';
import { averagedRope, ExpectedAttentionPress, rotateCovariance, type ExpectedAttentionOptions } from '../src/presses/expected-attention.js';
import { PressError } from '../src/presses/press.js';
import { topK } from '../src/presses/scorer.js';
import type { QueryStats } from '../src/presses/stats-format.js';
import { mulberry32, randomWeights, tinyConfig } from './fixtures/tiny-models.js';

const T = 40;

function tinyModel(numKvHeads: number, seed = 3): Model {
  const c = tinyConfig({ numKvHeads });
  return new Model(c, randomWeights(c, seed));
}

function tokens(n: number, vocab: number, seed = 11): number[] {
  const r = mulberry32(seed);
  return Array.from({ length: n }, (_, i) => (i === 0 ? 1 : 2 + Math.floor(r() * (vocab - 2))));
}

/** Runs a prefill and returns fn(ctx) evaluated inside the hook of `layer` (the context is only valid there). */
function atLayer<R>(model: Model, ids: number[], layer: number, fn: (ctx: LayerContext) => R): R {
  let out: R | undefined;
  model.forward(ids, model.newCache(), { logits: 'none', press: { compress: (ctx) => { if (ctx.layer === layer) out = fn(ctx); return null; } } });
  return out as R;
}

/** Dense mean of the rotation matrices R_p, p ∈ [start, start + n), HF half-split layout. */
function denseRbar(invFreq: Float64Array, start: number, n: number): Float64Array {
  const half = invFreq.length, d = 2 * half, R = new Float64Array(d * d);
  for (let p = start; p < start + n; p++) {
    for (let i = 0; i < half; i++) {
      const c = Math.cos(p * invFreq[i]), s = Math.sin(p * invFreq[i]);
      R[i * d + i] += c / n;
      R[i * d + i + half] -= s / n;
      R[(i + half) * d + i] += s / n;
      R[(i + half) * d + i + half] += c / n;
    }
  }
  return R;
}

function matmul(A: Float64Array, B: Float64Array, d: number, transposeB = false): Float64Array {
  const C = new Float64Array(d * d);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += A[i * d + k] * (transposeB ? B[j * d + k] : B[k * d + j]);
    C[i * d + j] = s;
  }
  return C;
}

function matvec(A: Float64Array, x: ArrayLike<number>, d: number): Float64Array {
  const y = new Float64Array(d);
  for (let i = 0; i < d; i++) for (let k = 0; k < d; k++) y[i] += A[i * d + k] * x[k];
  return y;
}

/** Mean and population covariance of the pre-RoPE queries of head h, rows [from, to), from W_q. */
function momentsFromWq(ctx: LayerContext, h: number, from: number, to: number): { mu: Float64Array; cov: Float64Array } {
  const d = ctx.config.headDim, H = ctx.config.numHeads, q = ctx.preRopeQueries(), n = to - from;
  const mu = new Float64Array(d), cov = new Float64Array(d * d);
  for (let r = from; r < to; r++) for (let i = 0; i < d; i++) mu[i] += q[r * H * d + h * d + i] / n;
  for (let r = from; r < to; r++) for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) {
    cov[i * d + j] += (q[r * H * d + h * d + i] - mu[i]) * (q[r * H * d + h * d + j] - mu[j]) / n;
  }
  return { mu, cov };
}

interface RefOptions { nFuture: number; nSink: number; useCov: boolean; useVnorm: boolean; eps: number }

/** Spec §2.3 line by line, float64, linear probabilities (the tiny model does not underflow). */
function referenceScores(ctx: LayerContext, o: RefOptions): Float64Array[] {
  const c = ctx.config, d = c.headDim, H = c.numHeads, G = H / c.numKvHeads, n = ctx.rows;
  const R = denseRbar(ctx.rope.invFreq, n, o.nFuture);
  const probs: Float64Array[] = [];
  for (let h = 0; h < H; h++) {
    const { mu, cov } = momentsFromWq(ctx, h, o.nSink, n);
    const mub = matvec(R, mu, d), covb = matmul(matmul(R, cov, d), R, d, true);
    const K = ctx.cache.headKeys(Math.floor(h / G)), z = new Float64Array(n - o.nSink);
    for (let j = o.nSink; j < n; j++) {
      let lin = 0, quad = 0;
      for (let a = 0; a < d; a++) {
        lin += mub[a] * K[j * d + a];
        for (let b = 0; b < d; b++) quad += K[j * d + a] * covb[a * d + b] * K[j * d + b];
      }
      z[j - o.nSink] = lin / Math.sqrt(d) + (o.useCov ? quad / (2 * d) : 0);
    }
    const mx = Math.max(...z);
    const e = z.map((v) => Math.exp(v - mx)), sum = e.reduce((a, b) => a + b, 0);
    probs.push(e.map((v) => v / sum));
  }
  const scores: Float64Array[] = [];
  for (let g = 0; g < c.numKvHeads; g++) {
    const s = new Float64Array(n);
    for (let j = o.nSink; j < n; j++) {
      let p = 0;
      for (let k = 0; k < G; k++) p += probs[g * G + k][j - o.nSink] / G;
      if (o.useVnorm) {
        let vv = 0;
        for (let a = 0; a < d; a++) vv += ctx.cache.headValues(g)[j * d + a] ** 2;
        p = (p + o.eps) * Math.sqrt(vv);
      }
      s[j] = p;
    }
    scores.push(s);
  }
  let mx = -Infinity;
  for (const s of scores) for (let j = o.nSink; j < n; j++) mx = Math.max(mx, s[j]);
  for (const s of scores) s.fill(mx + 1, 0, o.nSink);
  return scores;
}

function eaScores(ctx: LayerContext, opts: ExpectedAttentionOptions): Float64Array[] {
  return new ExpectedAttentionPress(0.5, opts).score(ctx);
}

test('averagedRope equals the brute-force mean of dense rotation matrices', () => {
  const invFreq = Float64Array.from([1, 0.3, 0.01, 1e-4, 0]);
  const half = invFreq.length, d = 2 * half;
  for (const [start, n] of [[0, 1], [37, 11], [4096, 512], [100000, 3]] as const) {
    const R = denseRbar(invFreq, start, n), r = averagedRope(invFreq, start, n);
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) {
      let want = 0;
      const a = i % half, b = j % half;
      if (a === b) want = i === j ? r.cos[a] : i < half ? -r.sin[a] : r.sin[a];
      assert.ok(Math.abs(R[i * d + j] - want) < 1e-12, `start ${start} n ${n} [${i}][${j}]: ${R[i * d + j]} vs ${want}`);
    }
  }
  // θ = 0 keeps the channel (identity block); a high frequency averages to almost nothing.
  const r = averagedRope(Float64Array.from([0, 3]), 1000, 512);
  assert.equal(r.cos[0], 1);
  assert.equal(r.sin[0], 0);
  assert.ok(Math.hypot(r.cos[1], r.sin[1]) < 0.01);
});

test('rotateCovariance equals R̄ΣR̄ᵀ with dense matrices', () => {
  const invFreq = Float64Array.from([0.9, 0.2, 0.05, 0.001]), d = 8;
  const rand = mulberry32(5);
  const A = Float64Array.from({ length: d * d }, () => rand() - 0.5);
  const S = matmul(A, A, d, true); // symmetric PSD
  const R = denseRbar(invFreq, 57, 13);
  const want = matmul(matmul(R, S, d), R, d, true);
  const got = rotateCovariance(S, averagedRope(invFreq, 57, 13));
  for (let i = 0; i < d * d; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-12, `entry ${i}`);
});

test('EA scores and kept sets equal the spec formulas evaluated densely (GQA 4:2)', () => {
  const model = tinyModel(2);
  const ids = tokens(T, model.config.vocabSize);
  for (const [opts, ref] of [
    [{}, { nFuture: 512, nSink: 4, useCov: true, useVnorm: true, eps: 0 }],
    [{ epsilon: 1e-2, nFuturePositions: 7, nSink: 2 }, { nFuture: 7, nSink: 2, useCov: true, useVnorm: true, eps: 1e-2 }],
    [{ useCovariance: false, useVnorm: false }, { nFuture: 512, nSink: 4, useCov: false, useVnorm: false, eps: 0 }],
    [{ precision: 'mixed' }, { nFuture: 512, nSink: 4, useCov: true, useVnorm: true, eps: 0 }],
    [{ precision: 'mixed', nFuturePositions: 3 }, { nFuture: 3, nSink: 4, useCov: true, useVnorm: true, eps: 0 }],
  ] as [ExpectedAttentionOptions, RefOptions][]) {
    for (let layer = 0; layer < model.config.numLayers; layer++) {
      const [got, want] = atLayer(model, ids, layer, (ctx) => [eaScores(ctx, opts), referenceScores(ctx, ref)]);
      for (let g = 0; g < want.length; g++) {
        for (let t = 0; t < T; t++) {
          const p = Math.exp(got[g][t]);
          assert.ok(Math.abs(p - want[g][t]) <= 1e-5 * want[g][t], `${JSON.stringify(opts)} layer ${layer} head ${g} t ${t}: ${p} vs ${want[g][t]}`);
        }
        assert.deepEqual(Array.from(topK(got[g], 20)), Array.from(topK(want[g], 20)));
      }
    }
  }
});

test('nFuturePositions 1, no covariance: EA logits are the attention logits of the mean query placed at position T', () => {
  // GQA model: the score is log of the group mean of softmax(rope(μ_h, T)·k/√d) over non-sink keys.
  const model = tinyModel(2);
  const c = model.config, d = c.headDim, H = c.numHeads, G = H / c.numKvHeads, nSink = 4;
  const ids = tokens(T, c.vocabSize, 21);
  for (let layer = 0; layer < c.numLayers; layer++) {
    atLayer(model, ids, layer, (ctx) => {
      const got = eaScores(ctx, { nFuturePositions: 1, useCovariance: false, useVnorm: false });
      // The mean pre-RoPE query of every head, rotated to position T by the engine's RoPE kernel.
      const q = new Float32Array(H * d);
      for (let h = 0; h < H; h++) q.set(Float32Array.from(momentsFromWq(ctx, h, nSink, T).mu), h * d);
      const cos = new Float32Array(d / 2), sin = new Float32Array(d / 2);
      model.rope.tables([T], 1, cos, sin);
      model.backend.rope(q, 1, H, d, cos, sin);
      for (let g = 0; g < c.numKvHeads; g++) {
        const K = ctx.cache.headKeys(g), mean = new Float64Array(T);
        for (let k = 0; k < G; k++) {
          const h = g * G + k;
          const logits = Array.from({ length: T - nSink }, (_, j) => {
            let s = 0;
            for (let a = 0; a < d; a++) s += q[h * d + a] * K[(j + nSink) * d + a];
            return s / Math.sqrt(d);
          });
          const mx = Math.max(...logits), sum = logits.reduce((a, z) => a + Math.exp(z - mx), 0);
          logits.forEach((z, j) => (mean[j + nSink] += Math.exp(z - mx) / sum / G));
        }
        for (let t = nSink; t < T; t++) assert.ok(Math.abs(got[g][t] - Math.log(mean[t])) < 1e-5, `layer ${layer} head ${g} t ${t}`);
      }
    });
  }
});

test('the covariance term equals kᵀΣ̄k/(2d) evaluated directly in float64 (both precisions)', () => {
  const model = tinyModel(4); // one query head per KV head: log-scores are logits up to a constant
  const c = model.config, d = c.headDim, nSink = 4, nFuture = 9;
  const ids = tokens(T, c.vocabSize, 31);
  for (const precision of ['float64', 'mixed'] as const) atLayer(model, ids, 1, (ctx) => {
    const withCov = eaScores(ctx, { nFuturePositions: nFuture, useVnorm: false, precision });
    const without = eaScores(ctx, { nFuturePositions: nFuture, useVnorm: false, useCovariance: false });
    const R = denseRbar(ctx.rope.invFreq, T, nFuture);
    for (let h = 0; h < c.numHeads; h++) {
      const covb = matmul(matmul(R, momentsFromWq(ctx, h, nSink, T).cov, d), R, d, true);
      const K = ctx.cache.headKeys(h);
      const quad = (j: number) => {
        let s = 0;
        for (let a = 0; a < d; a++) for (let b = 0; b < d; b++) s += K[j * d + a] * covb[a * d + b] * K[j * d + b];
        assert.ok(s >= -1e-12, 'Σ̄ is positive semi-definite');
        return s / (2 * d);
      };
      const ref = nSink;
      for (let j = nSink + 1; j < T; j++) {
        const got = (withCov[h][j] - withCov[h][ref]) - (without[h][j] - without[h][ref]);
        assert.ok(Math.abs(got - (quad(j) - quad(ref))) < 1e-6, `head ${h} key ${j}: ${got} vs ${quad(j) - quad(ref)}`);
      }
    }
  });
});

test('sinks always survive; when floor(T(1 − r)) ≤ nSink only sinks survive', () => {
  const model = tinyModel(2);
  const ids = tokens(T, model.config.vocabSize, 41);
  for (const [ratio, want] of [[0.5, 20], [0.95, 2], [0.9, 3], [0.875, 5]] as const) {
    assert.equal(Math.floor(T * (1 - ratio)), want);
    const cache = model.newCache();
    model.forward(ids, cache, { logits: 'none', press: new ExpectedAttentionPress(ratio) });
    for (const l of cache.layers) {
      for (let g = 0; g < l.numKvHeads; g++) {
        const kept = Array.from(l.headPositions(g));
        assert.equal(kept.length, want);
        const sinks = [0, 1, 2, 3].slice(0, Math.min(4, want));
        assert.deepEqual(kept.slice(0, sinks.length), sinks, `ratio ${ratio}: ${kept}`);
      }
    }
  }
});

test('log-space scores rank probabilities that float32 would flush to zero (stories260K)', async () => {
  const model = await loadModel();
  const text = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. One day, she saw a big red ball. '.repeat(6);
  const ids = model.tokenizer!.encode(text, { bos: true });
  const press = new ExpectedAttentionPress(0.5);
  let tiniest = Infinity;
  press.observer = {
    onScores(_l, scores, log) {
      assert.equal(log, true);
      for (const s of scores) {
        const rest = s.slice(4);
        assert.ok(rest.every(Number.isFinite));
        assert.equal(new Set(rest).size, rest.length, 'no ties among non-sink entries');
        tiniest = Math.min(tiniest, ...rest);
      }
    },
  };
  model.forward(ids, model.newCache(), { logits: 'none', press });
  // exp(tiniest) is below float32's smallest subnormal (1.4e-45): float32 would have tied them at 0.
  assert.ok(tiniest < Math.log(1.4e-45), `smallest log-score ${tiniest}`);
});

test("positions: 'compat' uses the rows count and drops the first nSink rows; 'absolute' uses the true next position", () => {
  // A context over the last 12 rows of a 40-token prefill, as a decoding buffer presents them.
  const model = tinyModel(4);
  const c = model.config, d = c.headDim, H = c.numHeads, D = c.hiddenSize, rows = 12, first = T - rows;
  const ids = tokens(T, c.vocabSize, 51);
  atLayer(model, ids, 0, (ctx) => {
    const sub = new LayerContext(ctx.model, ctx.layer, ctx.kvCache, true, rows, ctx.hidden.slice(first * D), ctx.positions.slice(first), ctx.queries.slice(first * H * d));
    for (const [mode, from, at] of [['compat', 4, rows], ['absolute', 0, T]] as const) {
      const got = new ExpectedAttentionPress(0.5, { positions: mode, nFuturePositions: 1, useCovariance: false, useVnorm: false }).score(sub);
      const q = new Float32Array(H * d);
      const pre = sub.preRopeQueries();
      for (let h = 0; h < H; h++) {
        for (let r = from; r < rows; r++) for (let a = 0; a < d; a++) q[h * d + a] += pre[r * H * d + h * d + a] / (rows - from);
      }
      const cos = new Float32Array(d / 2), sin = new Float32Array(d / 2);
      model.rope.tables([at], 1, cos, sin);
      model.backend.rope(q, 1, H, d, cos, sin);
      for (let h = 0; h < H; h++) {
        const K = ctx.cache.headKeys(h);
        const z = (j: number) => { let s = 0; for (let a = 0; a < d; a++) s += q[h * d + a] * K[j * d + a]; return s / Math.sqrt(d); };
        for (let j = 5; j < T; j++) assert.ok(Math.abs((got[h][j] - got[h][4]) - (z(j) - z(4))) < 1e-5, `${mode} head ${h} key ${j}`);
      }
    }
  });
});

test('ExpectedAttentionStatsPress with the prompt\'s own statistics scores as ExpectedAttentionPress', () => {
  const model = tinyModel(2);
  const c = model.config, d = c.headDim, H = c.numHeads;
  const ids = tokens(T, c.vocabSize, 61);
  const stats: QueryStats = { model: 'tiny', numHeads: H, headDim: d, nSink: 4, tokens: T - 4, layers: [] };
  model.forward(ids, model.newCache(), {
    logits: 'none',
    press: {
      compress(ctx) {
        const mean = new Float32Array(H * d), cov = new Float32Array(H * d * d);
        for (let h = 0; h < H; h++) {
          const m = momentsFromWq(ctx, h, 4, T);
          mean.set(Float32Array.from(m.mu), h * d);
          cov.set(Float32Array.from(m.cov), h * d * d);
        }
        stats.layers.push({ mean, cov, qfilter: new Float32Array(H * d) });
        return null;
      },
    },
  });
  const press = new ExpectedAttentionStatsPress(0.5, stats);
  press.validate(model);
  for (let layer = 0; layer < c.numLayers; layer++) {
    const [got, want] = atLayer(model, ids, layer, (ctx) => [press.score(ctx), eaScores(ctx, {})]);
    for (let g = 0; g < want.length; g++) for (let t = 0; t < T; t++) assert.ok(Math.abs(got[g][t] - want[g][t]) < 1e-4, `layer ${layer} head ${g} t ${t}`);
  }
  const other = tinyModel(4);
  assert.throws(() => new ExpectedAttentionStatsPress(0.5, { ...stats, numHeads: 2 }).validate(other), (e: Error) => e instanceof PressError && /are for 2 layers × 2 query heads × head_dim 8, the model has 2 × 4 × 8/.test(e.message));
});

test('options are validated with one-line errors', () => {
  assert.throws(() => new ExpectedAttentionPress(0.5, { nFuturePositions: 0 }), /nFuturePositions must be an integer ≥ 1, got 0/);
  assert.throws(() => new ExpectedAttentionPress(0.5, { epsilon: -1 }), /epsilon must be a finite number ≥ 0/);
  assert.throws(() => new ExpectedAttentionPress(1), /compressionRatio must be in \[0, 1\), got 1/);
  const model = tinyModel(2);
  assert.throws(() => model.forward([1, 2, 3], model.newCache(), { press: new ExpectedAttentionPress(0.5) }), /needs more than nSink = 4 tokens to estimate query statistics, got 3/);
});
