/**
 * The attention's column sums computed inside the forward pass (PagedAttentionArgs.columnSums,
 * LayerContext.attentionColumnSums) on every backend, against float64 softmax written here, and
 * observed attention from them against the engine's own attention matrix (attentionProbs) and
 * against the recomputing path.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend, PagedAttentionArgs } from '../src/backend/backend.js';
import { createBackend } from '../src/backend/index.js';
import { JsBackend } from '../src/backend/js/kernels.js';
import { KVCache } from '../src/cache/kv-cache.js';
import { layerWindow } from '../src/model/config.js';
import { LayerContext } from '../src/model/layer-context.js';
import { loadModel } from '../src/model/load.js';
import { Model } from '../src/model/model.js';
import { ObservedAttentionPress } from '../src/presses/observed-attention.js';
import { prefill } from '../src/presses/index.js';
import { rng } from './helpers/random.js';

/** Every backend of this machine, one and two threads (two: per-thread partial sums). */
const backends: Backend[] = [new JsBackend(), ...(['native', 'wasm'] as const).flatMap((prefer) => [1, 2].flatMap((threads) => {
  try {
    const be = createBackend({ prefer, threads });
    return be.name === prefer ? [be] : [];
  } catch {
    return [];
  }
}))];
const label = (be: Backend) => `${be.name} (${be.threads} thread${be.threads > 1 ? 's' : ''})`;

interface Case { hd: number; E: number; lengths: number[]; rows: number; window?: number }

test('paged attention adds each row\'s softmax probabilities into columnSums, and its output does not change', () => {
  const cases: Case[] = [
    // Prefill-like (rows = every entry), several tiles of 32 query vectors, a head shorter than the other.
    { hd: 64, E: 16, lengths: [90, 90], rows: 90 },
    { hd: 64, E: 16, lengths: [120, 120], rows: 120, window: 37 },
    { hd: 8, E: 4, lengths: [41, 30], rows: 30 },
    { hd: 24, E: 8, lengths: [50, 50], rows: 7, window: 9 },
  ];
  let seed = 11;
  for (const c of cases) {
    const r = rng(seed++), G = c.lengths.length, H = 3 * G, hd = c.hd, longest = Math.max(...c.lengths), scale = 0.3 / Math.sqrt(hd) + 0.1;
    const K = Array.from({ length: G }, () => Array.from({ length: longest }, () => Float32Array.from({ length: hd }, () => r(2))));
    const V = Array.from({ length: G }, () => Array.from({ length: longest }, () => Float32Array.from({ length: hd }, () => r(1))));
    const q = Float32Array.from({ length: c.rows * H * hd }, () => r(1));
    const qPos = Int32Array.from({ length: c.rows }, (_, i) => longest - c.rows + i);
    // Reference: float64 softmax of each row over the entries it sees, summed per KV head.
    const stride = longest + 3, want = new Float64Array(G * stride);
    for (let g = 0; g < G; g++) {
      const n = c.lengths[g], off = longest - n;
      for (let i = 0; i < c.rows; i++) for (let h = g * 3; h < g * 3 + 3; h++) {
        const ts: number[] = [];
        for (let j = 0; j < n - c.rows + i + 1; j++) if (c.window === undefined || off + j > qPos[i] - c.window) ts.push(j);
        const z = ts.map((j) => K[g][off + j].reduce((s, x, d) => s + x * q[(i * H + h) * hd + d], 0) * scale);
        const m = Math.max(...z), e = z.map((x) => Math.exp(x - m)), sum = e.reduce((a, b) => a + b, 0);
        ts.forEach((j, k) => (want[g * stride + j] += e[k] / sum));
      }
    }
    for (const be of backends) {
      const cache = new KVCache(1, G, hd, { pageEntries: c.E, memory: be.pageMemory }), l = cache.layers[0];
      for (let t = 0; t < longest; t++) {
        const k = new Float32Array(G * hd), v = new Float32Array(G * hd);
        for (let g = 0; g < G; g++) (k.set(K[g][t], g * hd), v.set(V[g][t], g * hd));
        l.append(k, v, [t], 1);
      }
      l.keep(c.lengths.map((n) => Int32Array.from({ length: n }, (_, i) => longest - n + i)));
      const args = (out: Float32Array): PagedAttentionArgs => ({ out, q, rows: c.rows, numHeads: H, numKvHeads: G, headDim: hd, cache: l, queryPositions: qPos, window: c.window, scale, scratch: new Float32Array(longest) });
      const plain = new Float32Array(c.rows * H * hd), withSums = new Float32Array(c.rows * H * hd);
      be.attentionPaged!(args(plain));
      // Sums go on top of what the array holds: start from 1 everywhere.
      const got = new Float64Array(G * stride).fill(1);
      be.attentionPaged!({ ...args(withSums), columnSums: got, columnStride: stride });
      assert.deepEqual(withSums, plain, `${label(be)}: the output changed with columnSums`);
      const what = `${label(be)} hd ${hd} lengths ${c.lengths} rows ${c.rows} window ${c.window}`;
      for (let g = 0; g < G; g++) {
        for (let t = 0; t < stride; t++) {
          const w = want[g * stride + t] + 1, x = got[g * stride + t];
          // Float32 logits, exponentials and row sums: a few float32 roundings per term.
          assert.ok(Math.abs(x - w) <= 2e-6 * w, `${what}: head ${g} entry ${t}: ${x} vs ${w}`);
        }
      }
      cache.dispose();
    }
  }
});

test('paged attention refuses column sums that do not fit the cache', () => {
  const be = backends.find((b) => b.name === 'native') ?? backends[0];
  const cache = new KVCache(1, 1, 8, { memory: be.pageMemory }), l = cache.layers[0];
  l.append(new Float32Array(16), new Float32Array(16), [0, 1], 2);
  const a: PagedAttentionArgs = { out: new Float32Array(32), q: new Float32Array(32), rows: 2, numHeads: 2, numKvHeads: 1, headDim: 8, cache: l, queryPositions: Int32Array.of(0, 1), scale: 1, scratch: new Float32Array(2) };
  if (be.name !== 'js') {
    assert.throws(() => be.attentionPaged!({ ...a, columnSums: new Float64Array(2), columnStride: 1 }), /columnStride must be an integer ≥ the longest head's 2 entries/);
    assert.throws(() => be.attentionPaged!({ ...a, columnSums: new Float64Array(1), columnStride: 2 }), /columnSums has 1 doubles, needs 2/);
  }
  cache.dispose();
});

/** Observed attention from the engine's attention matrix: Σ over the group and the rows, / (G·(T − t)). */
function fromProbs(ctx: LayerContext): number[][] {
  const c = ctx.config, G = c.numHeads / c.numKvHeads, T = ctx.rows, A = ctx.attentionProbs();
  return Array.from({ length: c.numKvHeads }, (_, g) => Array.from({ length: T }, (_, t) => {
    let s = 0;
    for (let h = g * G; h < (g + 1) * G; h++) for (let r = 0; r < T; r++) s += A[h][r * T + t];
    return s / G / (T - t);
  }));
}

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, rel: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= rel * Math.abs(want[i]) + 1e-12, `${what}[${i}]: ${got[i]} vs ${want[i]}`);
}

test('observed attention reads the prefill\'s own column sums on every backend, equal to the attention matrix and to recomputing them', async () => {
  const base = await loadModel();
  const tokens = Array.from({ length: 150 }, (_, i) => (i * 37 + 11) % base.config.vocabSize);
  // stories260K as it is, and with sliding-window layers 0, 2, 4 and a logit scale of its own (Gemma-like).
  const configs = [base.config, { ...base.config, slidingWindow: 24, slidingLayers: [true, false, true, false, true], queryPreAttnScalar: 5 }];
  for (const config of configs) {
    for (const be of backends) {
      const model = new Model(config, base.weights, { backend: be, tokenizer: base.tokenizer, source: 'stories260K' });
      const press = new ObservedAttentionPress(0.5);
      let layers = 0;
      const what = (ctx: LayerContext) => `${label(be)}${config.slidingWindow ? ' windowed' : ''} layer ${ctx.layer}`;
      prefill(model, tokens, {
        logits: 'none',
        press: {
          name: 'check', compressionRatio: 0.5, attentionColumns: true,
          compress(ctx: LayerContext) {
            for (let g = 0; g < config.numKvHeads; g++) assert.ok(ctx.attentionColumnSums(g), `${what(ctx)}: no column sums from the pass`);
            if (layerWindow(config, ctx.layer) === undefined) assert.equal(ctx.attentionProbs().length, config.numHeads);
            const inPass = press.score(ctx);
            const want = fromProbs(ctx);
            // The same press on a context without the pass's sums recomputes them (pressAttention).
            const recomputed = press.score(new LayerContext(ctx.model, ctx.layer, ctx.kvCache, ctx.isPrefill, ctx.rows, ctx.hidden, ctx.positions, ctx.queries));
            for (let g = 0; g < config.numKvHeads; g++) {
              assertClose(inPass[g], want[g], 1e-5, `${what(ctx)} kv head ${g} (in pass vs attentionProbs)`);
              assertClose(recomputed[g], want[g], 1e-5, `${what(ctx)} kv head ${g} (recomputed vs attentionProbs)`);
            }
            layers++;
            return null;
          },
        },
      });
      assert.equal(layers, config.numLayers);
    }
  }
});

test('a prefill computes column sums only for a press that asks', async () => {
  const model = await loadModel();
  const tokens = Array.from({ length: 40 }, (_, i) => (i * 13 + 5) % model.config.vocabSize);
  const seen: boolean[] = [];
  const probe = (attentionColumns: boolean) => ({
    name: 'probe', compressionRatio: 0, attentionColumns,
    compress(ctx: LayerContext) {
      seen.push(ctx.attentionColumnSums(0) !== null);
      return null;
    },
  });
  prefill(model, tokens, { logits: 'none', press: probe(false) });
  assert.deepEqual(seen.splice(0), [false, false, false, false, false]);
  const cache = prefill(model, tokens, { logits: 'none', press: probe(true) }).cache;
  assert.deepEqual(seen.splice(0), [true, true, true, true, true]);
  // A decoding step (not a prefill) never computes them.
  model.forward([7], cache, { logits: 'none', press: probe(true) });
  assert.deepEqual(seen.splice(0), [false, false, false, false, false]);
});
