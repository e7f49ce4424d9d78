/**
 * The native scoring kernels of the presses (native/press_kernels.c: windowSoftmaxSums,
 * eaScores64, valueNormsL1) against float64 derivations written here from the formulas, and the
 * presses that use them (SnapKV, PyramidKV, AdaKV, CriticalKV, Finch, Expected Attention) keeping
 * on the native backend exactly what they keep on the TypeScript reference backend.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend } from '../src/backend/backend.js';
import { JsBackend } from '../src/backend/js/kernels.js';
import { loadNative, NativeBackend } from '../src/backend/native/index.js';
import { LayerContext } from '../src/model/layer-context.js';
import { loadModel } from '../src/model/load.js';
import { presses } from '../src/presses/index.js';
import type { ScorerPress } from '../src/presses/scorer.js';
import { mulberry32 } from './fixtures/tiny-models.js';
import { eachLayerOnTwoBackends } from './helpers/layer-pairs.js';

const load = loadNative();
const native = load.ok ? new NativeBackend(load.addon, load.info) : null;
const skip = native ? false : 'native addon not built';

/** Float64 softmax-attention of row r over keys with position ≤ its own, from float64 logits. */
function windowSumsReference(q: Float32Array, qStride: number, h: number, d: number, first: number, w: number, keys: Float32Array, T: number, kpos: Int32Array, rpos: Int32Array, scale: number, weights: Float64Array | null): Float64Array {
  const cols = T - w, acc = new Float64Array(cols);
  for (let r = 0; r < w; r++) {
    const z: number[] = [];
    for (let t = 0; t < T && kpos[t] <= rpos[r]; t++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += q[(first + r) * qStride + h * d + i] * keys[t * d + i];
      z.push(s * scale);
    }
    const mx = Math.max(...z);
    const e = z.map((x) => Math.exp(x - mx)), sum = e.reduce((a, b) => a + b, 0);
    for (let t = 0; t < Math.min(z.length, cols); t++) acc[t] += (e[t] / sum) * (weights ? weights[r] : 1);
  }
  return acc;
}

test('windowSoftmaxSums: exact logits give the float64 softmax sums to 1e-14, underflow to 0 included', { skip }, () => {
  const be = native as Backend;
  // Small integers make every float32 dot product exact and 1/8 is exact: any difference is the
  // kernel's exp, softmax and sums. Range 30 makes logits differ by thousands, so that most
  // probabilities underflow (to subnormals or 0, as Math.exp does).
  for (const [range, T, w, G, withWeights] of [[2, 203, 64, 3, false], [2, 150, 70, 2, true], [30, 97, 5, 1, false]] as const) {
    const d = 64, H = 2 * G, r = mulberry32(T + w), rows = T;
    const int = () => Math.floor(r() * (2 * range + 1)) - range;
    const q = Float32Array.from({ length: rows * H * d }, int), keys = Float32Array.from({ length: T * d }, int);
    // Positions with gaps (as after an eviction) and one key past the last row's position.
    const kpos = Int32Array.from({ length: T }, (_, t) => 2 * t), rpos = Int32Array.from({ length: w }, (_, i) => 2 * (T - w + i) - (i % 3 === 0 ? 1 : 0));
    const weights = withWeights ? Float64Array.from({ length: w }, (_, i) => T - w + i) : null;
    for (const threads of [1, 2]) {
      be.setThreads(threads);
      for (const h0 of [0, G]) {
        const acc = new Float64Array(G * (T - w));
        be.windowSoftmaxSums!(acc, q, H * d, h0, G, d, rows - w, w, keys, T, kpos, rpos, 1 / 8, weights);
        for (let k = 0; k < G; k++) {
          const want = windowSumsReference(q, H * d, h0 + k, d, rows - w, w, keys, T, kpos, rpos, 1 / 8, weights);
          for (let t = 0; t < T - w; t++) {
            const got = acc[k * (T - w) + t];
            assert.ok(Math.abs(got - want[t]) <= 1e-14 * Math.max(want[t], 1e-300) + 1e-320, `range ${range} head ${h0 + k} column ${t}: ${got} vs ${want[t]}`);
          }
        }
      }
    }
  }
  be.setThreads(1);
});

test('windowSoftmaxSums and valueNormsL1 reject bad arguments with one-line errors', { skip }, () => {
  const be = native as Backend;
  const q = new Float32Array(64), keys = new Float32Array(40), pos = new Int32Array(10);
  assert.throws(() => be.windowSoftmaxSums!(new Float64Array(8), q, 8, 0, 1, 8, 2, 12, keys, 10, pos, pos, 1, null), /windowSoftmaxSums: window \(12\) longer than the 10 keys/);
  assert.throws(() => be.windowSoftmaxSums!(new Float64Array(8), q, 8, 0, 1, 8, 2, 2, keys, 10, pos, pos, 1, null), /windowSoftmaxSums: keys has 40 floats, needs 80/);
  assert.throws(() => be.valueNormsL1!(new Float64Array(3), new Float32Array(12), new Float32Array(8), 4, 2, 3, 1), /valueNormsL1: out has 3 doubles, needs 4/);
  assert.throws(() => be.valueNormsL1!(new Float64Array(4), new Float32Array(12), new Float32Array(6), 4, 2, 3, 0), /valueNormsL1: divisor must be > 0, got 0/);
});

test('eaScores64: log of the group-mean softmax probability times the value norm, from its definition', { skip }, () => {
  const be = native as Backend;
  const r = mulberry32(5);
  for (const [G, m, s0, eps] of [[3, 203, 4, 0], [1, 17, 0, 0], [4, 64, 2, 1e-2], [12, 9, 1, 0]] as const) {
    const d = 8, stride = Math.ceil(m / 8) * 8;
    // Logits in [−20, 20]: plain probabilities do not underflow, so the definition can be evaluated directly.
    const z = Float64Array.from({ length: G * stride }, () => 40 * r() - 20);
    const V = Float32Array.from({ length: (s0 + m) * d }, () => 2 * r() - 1);
    for (const useVnorm of [true, false]) {
      const out = new Float64Array(s0 + m).fill(NaN);
      const best = be.eaScores64!(out, z, stride, s0, m, G, V, d, useVnorm, eps);
      let want = -Infinity;
      const p = Array.from({ length: G }, (_, k) => {
        const e = Array.from({ length: m }, (_, t) => Math.exp(z[k * stride + t]));
        const sum = e.reduce((a, b) => a + b, 0);
        return e.map((x) => x / sum);
      });
      for (let t = 0; t < m; t++) {
        let mean = 0;
        for (let k = 0; k < G; k++) mean += p[k][t] / G;
        let norm = 0;
        for (let i = 0; i < d; i++) norm += V[(s0 + t) * d + i] ** 2;
        const s = useVnorm ? Math.log((mean + eps) * Math.sqrt(norm)) : Math.log(mean);
        assert.ok(Math.abs(out[s0 + t] - s) <= 1e-12 * Math.max(1, Math.abs(s)), `G=${G} entry ${t}: ${out[s0 + t]} vs ${s}`);
        want = Math.max(want, s);
      }
      for (let t = 0; t < s0; t++) assert.ok(Number.isNaN(out[t]), 'sinks are left to the caller');
      assert.ok(Math.abs(best - want) <= 1e-12 * Math.max(1, Math.abs(want)), `max ${best} vs ${want}`);
      // The same values as cache pages of E = 5 rows (the last one partly past the entries): the same bits.
      const E = 5, pages = Array.from({ length: Math.ceil((s0 + m) / E) }, (_, p) => {
        const page = new Float32Array(E * d).fill(NaN);
        page.set(V.subarray(p * E * d, Math.min((p + 1) * E, s0 + m) * d));
        return page;
      });
      const paged = new Float64Array(s0 + m).fill(NaN);
      assert.equal(be.eaScores64!(paged, z, stride, s0, m, G, pages, d, useVnorm, eps), best);
      assert.deepEqual(paged, out, `G=${G} m=${m}: paged values`);
    }
  }
  assert.throws(() => be.eaScores64!(new Float64Array(4), new Float64Array(8), 8, 0, 9, 1, new Float32Array(72), 8, true, 0), /eaScores64: m \(9\) must be at most stride \(8\)/);
  const z = new Float64Array(8), out = new Float64Array(8);
  assert.throws(() => be.eaScores64!(out, z, 8, 1, 7, 1, [new Float32Array(12), new Float32Array(12)], 4, true, 0), /eaScores64: 2 value pages of 3 rows hold 6 entries, fewer than s0 \+ m = 8/);
  assert.throws(() => be.eaScores64!(out, z, 8, 0, 4, 1, [new Float32Array(16), new Float32Array(20)], 4, true, 0), /eaScores64: value pages must be of one length: page 1 has 20 floats, page 0 16/);
  assert.throws(() => be.eaScores64!(out, z, 8, 0, 4, 1, [new Float32Array(10)], 4, true, 0), /eaScores64: each value page must hold a whole number \(≥ 1\) of d-float rows \(d = 4\), got 10 floats/);
  assert.throws(() => be.eaScores64!(out, z, 8, 0, 4, 1, [new Float64Array(16) as unknown as Float32Array], 4, true, 0), /eaScores64: values\[0\] must be a Float32Array/);
});

test('valueNormsL1: mean over a group of ‖W_O,h v‖₁, against float64 products', { skip }, () => {
  const be = native as Backend;
  const r = mulberry32(9);
  for (const [T, D, hd] of [[1, 5, 3], [300, 40, 8], [517, 64, 16]] as const) {
    const V = Float32Array.from({ length: T * hd }, () => 2 * r() - 1), B = Float32Array.from({ length: D * hd }, () => 2 * r() - 1);
    const out = new Float64Array(T).fill(0.5);
    be.valueNormsL1!(out, V, B, T, D, hd, 3);
    for (let t = 0; t < T; t++) {
      let l1 = 0;
      for (let i = 0; i < D; i++) {
        let y = 0;
        for (let j = 0; j < hd; j++) y += B[i * hd + j] * V[t * hd + j];
        l1 += Math.abs(y);
      }
      // The products are float32 dot products of hd terms: relative error ≤ hd·2^-24 each.
      const want = 0.5 + l1 / 3;
      assert.ok(Math.abs(out[t] - want) <= hd * 6e-8 * want, `T=${T} row ${t}: ${out[t]} vs ${want}`);
    }
  }
});

test('presses on the native kernels keep exactly what they keep on the TypeScript backend (stories260K)', { skip }, async () => {
  const model = await loadModel(undefined, { backend: native as Backend });
  const js = new JsBackend('reference');
  const ids = Array.from({ length: 180 }, (_, i) => 1 + ((i * 37 + 11) % (model.config.vocabSize - 1)));
  const names = ['snapkv', 'pyramidkv', 'adakv_snapkv', 'critical_snapkv', 'critical_adakv_snapkv', 'finch', 'expected_attention', 'critical_expected_attention', 'adakv_expected_attention'];
  const layers = eachLayerOnTwoBackends(model, ids, js, (ctx, onJs) => {
    const m = ctx.model;
    for (const name of names) {
      for (const ratio of [0.5, 0.75]) {
        const opts = name === 'finch' ? { windowSize: 24, rerotateKeys: false } : {};
        const a = presses.create(name, ratio, opts) as ScorerPress, b = presses.create(name, ratio, opts) as ScorerPress;
        const fresh = new LayerContext({ config: m.config, layerWeights: m.layerWeights, backend: ctx.backend, rope: m.rope }, ctx.layer, ctx.kvCache, ctx.isPrefill, ctx.rows, ctx.hidden, ctx.positions, ctx.queries);
        assert.deepEqual(a.compress(fresh), b.compress(onJs), `${name}@${ratio}, layer ${ctx.layer}`);
      }
    }
  });
  assert.equal(layers, model.config.numLayers);
});
