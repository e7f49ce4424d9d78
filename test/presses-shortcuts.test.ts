// The shortcuts that make the leverage and CriticalKV presses cheap, each checked against what it
// replaces, computed here independently: pre-RoPE keys rotated back from the prefill's float32 cache
// against the projection of the hidden states, and CriticalKV's projected value norms of the
// entries it does not skip against a float64 product with the output projection.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadNative, NativeBackend } from '../src/backend/native/index.js';
import type { LayerContext } from '../src/model/layer-context.js';
import { Model } from '../src/model/model.js';
import { projectedValueNorms } from '../src/presses/critical.js';
import { preRopeHeadKeys } from '../src/presses/leverage-score.js';
import { mulberry32, randomWeights, tinyConfig } from './fixtures/tiny-models.js';

const T = 48;
const load = loadNative();
const native = load.ok ? new NativeBackend(load.addon, load.info) : null;

function tokens(n: number, vocab: number, seed = 5): number[] {
  const r = mulberry32(seed);
  return Array.from({ length: n }, () => Math.floor(r() * vocab));
}

/** fn(ctx) at every layer's hook of one prefill (the context is valid only there). */
function eachLayer(model: Model, ids: number[], fn: (ctx: LayerContext) => void): void {
  model.forward(ids, model.newCache(), { logits: 'none', press: { compress: (ctx) => { fn(ctx); return null; } } });
}

for (const qkNorm of [false, true]) {
  test(`pre-RoPE keys rotated back from the f32 cache match the projection of the hidden states${qkNorm ? ' (k-norm)' : ''}`, () => {
    const c = tinyConfig({ qkNorm, maxPositionEmbeddings: 4096, ropeTheta: 500 });
    const model = new Model(c, randomWeights(c, 7), { kvDtype: 'f32' });
    const d = c.headDim, Hkv = c.numKvHeads;
    let layers = 0;
    eachLayer(model, tokens(T, c.vocabSize), (ctx) => {
      const projected = ctx.preRopeKeys(), keysOf = preRopeHeadKeys(ctx);
      for (let g = 0; g < Hkv; g++) {
        const { keys, stride } = keysOf(g);
        assert.equal(stride, d, 'the prefill over an f32 cache reads the cache rows');
        for (let t = 0; t < T; t++) {
          // Each pair (a, b) is rotated forth and back in float32: a few roundings of the pair's norm.
          for (let j = 0; j < d / 2; j++) {
            const a = projected[t * Hkv * d + g * d + j], b = projected[t * Hkv * d + g * d + j + d / 2];
            const bound = 4 * 2 ** -24 * Math.hypot(a, b) + 1e-30;
            assert.ok(Math.abs(keys[t * d + j] - a) <= bound, `layer ${ctx.layer} head ${g} row ${t} channel ${j}: ${keys[t * d + j]} vs ${a}`);
            assert.ok(Math.abs(keys[t * d + j + d / 2] - b) <= bound, `layer ${ctx.layer} head ${g} row ${t} channel ${j + d / 2}`);
          }
        }
      }
      layers++;
    });
    assert.equal(layers, c.numLayers);
  });
}

test('pre-RoPE keys are the projection itself where the cache is not the pass\'s float32 rows', () => {
  const c = tinyConfig();
  const ids = tokens(T, c.vocabSize);
  for (const kvDtype of ['bf16', 'q8_0'] as const) {
    const model = new Model(c, randomWeights(c, 7), { kvDtype });
    eachLayer(model, ids, (ctx) => {
      const projected = ctx.preRopeKeys(), keysOf = preRopeHeadKeys(ctx);
      for (let g = 0; g < c.numKvHeads; g++) {
        const { keys, stride } = keysOf(g);
        assert.equal(stride, c.numKvHeads * c.headDim);
        for (let t = 0; t < T; t++) for (let j = 0; j < c.headDim; j++) assert.equal(keys[t * stride + j], projected[t * stride + g * c.headDim + j]);
      }
    });
  }
  // A decoding step: the cache holds more than this pass's rows.
  const model = new Model(c, randomWeights(c, 7), { kvDtype: 'f32' }), cache = model.newCache();
  model.forward(ids, cache, { logits: 'none' });
  let seen = false;
  model.forward([3], cache, { logits: 'none', press: { compress: (ctx) => {
    const { stride } = preRopeHeadKeys(ctx)(0);
    assert.equal(stride, c.numKvHeads * c.headDim);
    seen = true;
    return null;
  } } });
  assert.ok(seen);
});

test('projected value norms: the entries not skipped match a float64 product with W_O, the skipped ones are 0', () => {
  const c = tinyConfig({ numHeads: 4, numKvHeads: 2 });
  const model = new Model(c, randomWeights(c, 9), { kvDtype: 'f32' });
  const d = c.headDim, D = c.hiddenSize, H = c.numHeads, G = H / c.numKvHeads;
  const skip = [Int32Array.from([0, 5, 6, 7, 30, 47]), Int32Array.from({ length: T }, (_, t) => t).filter((t) => t % 3 === 1)];
  eachLayer(model, tokens(T, c.vocabSize), (ctx) => {
    const wo = ctx.weights.wo as Float32Array, all = projectedValueNorms(ctx, null), some = projectedValueNorms(ctx, skip);
    for (let g = 0; g < c.numKvHeads; g++) {
      const V = Float32Array.from(ctx.cache.headValues(g));
      for (let t = 0; t < T; t++) {
        let ref = 0;
        for (let h = g * G; h < (g + 1) * G; h++) {
          for (let i = 0; i < D; i++) {
            let y = 0;
            for (let j = 0; j < d; j++) y += wo[i * H * d + h * d + j] * V[t * d + j];
            ref += Math.abs(y) / G;
          }
        }
        // float32 products of d terms: relative error ≤ d·2⁻²⁴ per output, far below 1e-5.
        assert.ok(Math.abs(all[g][t] - ref) <= 1e-5 * ref, `layer ${ctx.layer} head ${g} entry ${t}: ${all[g][t]} vs ${ref}`);
        if (skip[g].includes(t)) assert.equal(some[g][t], 0);
        else assert.ok(Math.abs(some[g][t] - ref) <= 1e-5 * ref, `skipping: layer ${ctx.layer} head ${g} entry ${t}`);
      }
    }
  });
});

test('native valueNormsL1: ‖block·v‖₁ / divisor added to out, from the definition (panel and tile tails, 1 and 2 threads)', { skip: native ? false : 'native addon not built' }, () => {
  const be = native!, r = mulberry32(13);
  for (const [T, D, hd] of [[13, 37, 8], [301, 576, 64], [6, 16, 3], [1, 1, 1]] as const) {
    const V = Float32Array.from({ length: T * hd }, () => 2 * r() - 1), B = Float32Array.from({ length: D * hd }, () => 2 * r() - 1);
    const want = Array.from({ length: T }, (_, t) => {
      let s = 0;
      for (let i = 0; i < D; i++) {
        let y = 0;
        for (let j = 0; j < hd; j++) y += B[i * hd + j] * V[t * hd + j];
        s += Math.abs(y);
      }
      return 0.5 + s / 3;
    });
    for (const threads of [1, 2]) {
      be.setThreads(threads);
      const out = new Float64Array(T).fill(0.5);
      be.valueNormsL1(out, V, B, T, D, hd, 3);
      // float32 dot products of hd terms of magnitude ≤ 1: each off by ≤ hd·2⁻²⁴·hd in absolute terms.
      for (let t = 0; t < T; t++) assert.ok(Math.abs(out[t] - want[t]) <= (D * hd * hd * 2 ** -24) / 3 + 1e-12, `T=${T} D=${D} hd=${hd} row ${t}: ${out[t]} vs ${want[t]}`);
    }
    be.setThreads(1);
    // Through a row index: every other row, backwards.
    const rows = Int32Array.from({ length: Math.ceil(T / 2) }, (_, i) => T - 1 - 2 * i), out = new Float64Array(rows.length).fill(0.5);
    be.valueNormsL1(out, V, B, rows.length, D, hd, 3, rows);
    rows.forEach((r, i) => assert.ok(Math.abs(out[i] - want[r]) <= (D * hd * hd * 2 ** -24) / 3 + 1e-12, `T=${T} indexed row ${r}`));
  }
  assert.throws(() => be.valueNormsL1(new Float64Array(2), new Float32Array(8), new Float32Array(4), 2, 1, 4, 1, Int32Array.from([0, 2])), /valueNormsL1: values has 8 floats, needs 12/);
  assert.throws(() => be.valueNormsL1(new Float64Array(2), new Float32Array(8), new Float32Array(4), 2, 1, 4, 1, Int32Array.from([0])), /valueNormsL1: rows must be an Int32Array of at least 2 indices/);
});
