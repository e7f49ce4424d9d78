import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { JsBackend } from '../src/backend/js/kernels.js';
import { KVCache } from '../src/cache/kv-cache.js';
import type { ModelConfig } from '../src/model/config.js';
import { LayerContext, type Compressor, type ModelParts } from '../src/model/layer-context.js';
import { loadModel } from '../src/model/load.js';
import { Rope } from '../src/model/rope.js';
import type { LayerWeights } from '../src/model/weights.js';
import { avgPool1d, groupMean, windowAttention } from '../src/presses/common.js';
import { baselineEntries } from '../src/presses/entries-baselines.js';
import { KeyDiffPress } from '../src/presses/keydiff.js';
import { KnormPress } from '../src/presses/knorm.js';
import { LagKVPress } from '../src/presses/lagkv.js';
import { ObservedAttentionPress } from '../src/presses/observed-attention.js';
import { PressError } from '../src/presses/press.js';
import { PyramidKVPress, roundHalfEven } from '../src/presses/pyramidkv.js';
import { QFilterPress } from '../src/presses/qfilter.js';
import { RandomPress } from '../src/presses/random.js';
import { PressRegistry } from '../src/presses/registry.js';
import { SnapKVPress } from '../src/presses/snapkv.js';
import { writeQueryStats, type QueryStats } from '../src/presses/stats-format.js';
import { StreamingLLMPress } from '../src/presses/streaming-llm.js';
import { TOVAPress } from '../src/presses/tova.js';

// ---------------------------------------------------------------------------------------------
// A hand-built layer context: keys/values [kvHead][t][d], post-RoPE queries [t][head·d].

interface Hand {
  keys: number[][][];
  values?: number[][][];
  queries?: number[][];
  numHeads?: number;
  layer?: number;
  numLayers?: number;
}

function handContext(h: Hand): LayerContext {
  const Hkv = h.keys.length, T = h.keys[0].length, d = h.keys[0][0].length, H = h.numHeads ?? Hkv, D = H * d;
  const L = h.numLayers ?? 1, layer = h.layer ?? 0;
  const config: ModelConfig = {
    architecture: 'llama', hiddenSize: D, intermediateSize: 1, numLayers: L, numHeads: H, numKvHeads: Hkv, headDim: d,
    vocabSize: 1, maxPositionEmbeddings: 4096, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null,
    tieWordEmbeddings: true, attentionBias: false, qkNorm: false,
  };
  const z = (n: number) => new Float32Array(n);
  const lw: LayerWeights = {
    attnNorm: z(D), wq: z(H * d * D), wk: z(Hkv * d * D), wv: z(Hkv * d * D), wo: z(D * H * d), bq: null, bk: null, bv: null,
    qNorm: null, kNorm: null, ffnNorm: z(D), wGate: z(D), wUp: z(D), wDown: z(D),
  };
  const model: ModelParts = { config, layerWeights: Array.from({ length: L }, () => lw), backend: new JsBackend(), rope: new Rope(config) };
  const kv = new KVCache(L, Hkv, d);
  const pack = (x: number[][][]) => {
    const out = new Float32Array(T * Hkv * d);
    for (let t = 0; t < T; t++) for (let g = 0; g < Hkv; g++) out.set(x[g][t], (t * Hkv + g) * d);
    return out;
  };
  const positions = Int32Array.from({ length: T }, (_, i) => i);
  kv.layers[layer].append(pack(h.keys), pack(h.values ?? h.keys), positions, T);
  kv.nextPosition = T;
  const queries = h.queries ? Float32Array.from(h.queries.flat()) : z(T * H * d);
  return new LayerContext(model, layer, kv, true, T, z(T * D), positions, queries);
}

/** Deterministic pseudo-random numbers in [−1, 1) for test inputs (an LCG, independent of the code under test). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}

const randomTensor = (next: () => number, ...shape: number[]): any =>
  shape.length === 1 ? Array.from({ length: shape[0] }, next) : Array.from({ length: shape[0] }, () => randomTensor(next, ...shape.slice(1)));

/** Brute-force causal softmax attention of query row r (post-RoPE, head h) over keys 0..r of `keys` [t][d]. */
function bruteAttention(q: number[], keys: number[][], r: number): number[] {
  const d = q.length;
  const z = keys.slice(0, r + 1).map((k) => k.reduce((s, x, i) => s + x * q[i], 0) / Math.sqrt(d));
  const m = Math.max(...z);
  const e = z.map((x) => Math.exp(x - m));
  const sum = e.reduce((a, b) => a + b, 0);
  return keys.map((_, t) => (t <= r ? e[t] / sum : 0));
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol * Math.max(1, Math.abs(expected[i])), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

const keptOf = (keep: ArrayLike<number>[] | null) => (keep ?? []).map((k) => Array.from(k));

// ---------------------------------------------------------------------------------------------
// Shared helpers.

test('avgPool1d counts the zero padding, as torch avg_pool1d(k, stride 1, padding k//2)', () => {
  assertClose(avgPool1d([1, 2, 3, 4, 5], 3), [1, 2, 3, 4, 3], 1e-12, 'k3');
  assertClose(avgPool1d([5, 0, 0, 0, 0, 10], 5), [1, 1, 1, 2, 2, 2], 1e-12, 'k5');
  assertClose(avgPool1d([2, 4], 1), [2, 4], 1e-12, 'k1');
});

test('groupMean averages consecutive query heads of each KV group', () => {
  const out = groupMean([[1, 2], [3, 4], [10, 20], [30, 40]], 2);
  assert.deepEqual(out.map((x) => Array.from(x)), [[2, 3], [20, 30]]);
});

test('windowAttention equals a brute-force causal softmax, columns outside the window only', () => {
  const next = lcg(1), T = 9, d = 4, H = 4, Hkv = 2, w = 3;
  const keys = randomTensor(next, Hkv, T, d) as number[][][];
  const queries = randomTensor(next, T, H * d) as number[][];
  const ctx = handContext({ keys, queries, numHeads: H });
  const got = windowAttention(ctx, w);
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / 2), expected: number[] = [];
    for (let i = 0; i < w; i++) {
      const r = T - w + i;
      expected.push(...bruteAttention(queries[r].slice(h * d, (h + 1) * d), keys[g], r).slice(0, T - w));
    }
    assertClose(got[h], expected, 1e-6, `head ${h}`);
  }
});

// ---------------------------------------------------------------------------------------------
// The real model: stories260K (5 layers, 8 heads, 4 KV heads, head_dim 8).

const model = await loadModel();
const STORY = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. '
  + 'One day, she saw a big red ball under a tree. She ran to get it, but a small dog took it first. Lily was sad, but then '
  + 'the dog came back and dropped the ball at her feet. Lily smiled and said, "Thank you, little dog!" They played together '
  + 'all day long, and when the sun went down, Lily went home happy. Her mom made her a warm bowl of soup.';
const tokens = model.tokenizer!.encode(STORY, { bos: true });

function prefill(press: Compressor | null, toks: readonly number[] = tokens): KVCache {
  const cache = model.newCache();
  model.forward(toks, cache, { logits: 'none', press });
  return cache;
}

const positionsOf = (cache: KVCache) => cache.layers.map((l) => Array.from({ length: l.numKvHeads }, (_, g) => Array.from(l.headPositions(g))));

test('windowAttention matches the engine\'s own attention probabilities on stories260K', () => {
  const w = 7;
  let checked = 0;
  prefill({
    compress(ctx) {
      const ours = windowAttention(ctx, w), engine = ctx.attentionProbs(w), T = ctx.rows;
      for (let h = 0; h < ours.length; h++) {
        const expected: number[] = [];
        for (let i = 0; i < w; i++) expected.push(...engine[h].subarray(i * T, i * T + T - w));
        assertClose(ours[h], expected, 1e-5, `layer ${ctx.layer} head ${h}`);
      }
      checked++;
      return null;
    },
  });
  assert.equal(checked, 5);
});

// ---------------------------------------------------------------------------------------------
// Presses.

test('Knorm scores −‖k‖ and keeps the lowest-norm keys', () => {
  const ctx = handContext({ keys: [[[3, 4], [1, 0], [0, 2], [6, 8]], [[0, 1], [0, 3], [0, 2], [0, 0.5]]] });
  const p = new KnormPress(0.5);
  assert.deepEqual(p.score(ctx).map((s) => Array.from(s)), [[-5, -1, -2, -10], [-1, -3, -2, -0.5]]);
  assert.deepEqual(keptOf(p.compress(ctx)), [[1, 2], [0, 3]]);
});

test('StreamingLLM keeps exactly the sinks and the most recent tokens', () => {
  const ctx = handContext({ keys: [Array.from({ length: 20 }, () => [1, 0])] });
  assert.deepEqual(keptOf(new StreamingLLMPress(0.5).compress(ctx)), [[0, 1, 2, 3, 14, 15, 16, 17, 18, 19]]);
  // n_kept = floor(20·0.15) = 3 ≤ nSink: only sinks survive.
  assert.deepEqual(keptOf(new StreamingLLMPress(0.85).compress(ctx)), [[0, 1, 2]]);
  assert.throws(() => new StreamingLLMPress(0.5, { nSink: 20 }).score(ctx), /longer than nSink 20/);

  const T = tokens.length, kept = Math.floor(T * 0.25);
  const expected = [0, 1, 2, 3, ...Array.from({ length: kept - 4 }, (_, i) => T - kept + 4 + i)];
  for (const layer of positionsOf(prefill(new StreamingLLMPress(0.75)))) for (const head of layer) assert.deepEqual(head, expected);
});

test('SnapKV: window attention averaged, pooled, group-averaged, window protected with max + 1', () => {
  const next = lcg(2), T = 10, d = 4, H = 4, Hkv = 2, w = 3, k = 3;
  const keys = randomTensor(next, Hkv, T, d) as number[][][];
  const queries = randomTensor(next, T, H * d) as number[][];
  const ctx = handContext({ keys, queries, numHeads: H });
  const n = T - w;
  const perHead = Array.from({ length: H }, (_, h) => {
    const g = Math.floor(h / 2), mean = new Array(n).fill(0);
    for (let i = 0; i < w; i++) {
      const a = bruteAttention(queries[T - w + i].slice(h * d, (h + 1) * d), keys[g], T - w + i);
      for (let t = 0; t < n; t++) mean[t] += a[t] / w;
    }
    return mean.map((_, t) => [t - 1, t, t + 1].reduce((s, j) => s + (j >= 0 && j < n ? mean[j] : 0), 0) / k);
  });
  const perKv = [0, 1].map((g) => perHead[2 * g].map((x, t) => (x + perHead[2 * g + 1][t]) / 2));
  const top = Math.max(...perKv.flat()) + 1;
  const got = new SnapKVPress(0.5, { windowSize: w, kernelSize: k }).score(ctx);
  perKv.forEach((s, g) => assertClose(got[g], [...s, top, top, top], 1e-6, `kv head ${g}`));
  assert.throws(() => new SnapKVPress(0.5).score(ctx), /must be longer than windowSize 64/);
  assert.throws(() => new SnapKVPress(0.5, { kernelSize: 4 }), /kernelSize must be odd/);
});

test('PyramidKV budgets use round-half-to-even, as Python', () => {
  assert.deepEqual([74.5, 75.5, 2.5, 3.5, 0.5, 62.4, 62.6].map(roundHalfEven), [74, 76, 2, 4, 0, 62, 63]);
  // T = 149, ratio 0.5, defaults: max = T − w = 85, min = 64, steps 5.25 → 85, 79.75, 74.5, 69.25, 64.
  const p = new PyramidKVPress(0.5);
  assert.deepEqual([0, 1, 2, 3, 4].map((l) => p.layerBudget(l, 5, 149)), [85, 80, 74, 69, 64]);
  // window 4, beta 2, T = 100: min 25, max 75, steps 12.5 → 75, 62.5, 50, 37.5, 25.
  const q = new PyramidKVPress(0.5, { windowSize: 4, beta: 2 });
  assert.deepEqual([0, 1, 2, 3, 4].map((l) => q.layerBudget(l, 5, 100)), [75, 62, 50, 38, 25]);
  // T = 49: the pyramid does not fit, fallback round(24.5) = 24.
  assert.equal(p.layerBudget(0, 5, 49), 24);
});

test('PyramidKV on stories260K with a 149-token prompt keeps 85, 80, 74, 69, 64 entries per layer', () => {
  const long = model.tokenizer!.encode(`${STORY} ${STORY}`, { bos: true }).slice(0, 149);
  assert.equal(long.length, 149);
  assert.deepEqual(prefill(new PyramidKVPress(0.5), long).lengths(), [85, 80, 74, 69, 64].map((n) => [n, n, n, n]));
});

test('TOVA: the last query\'s attention averaged over all heads, same for every KV head, last token protected', () => {
  const next = lcg(3), T = 6, d = 2, H = 4, Hkv = 2;
  const keys = randomTensor(next, Hkv, T, d) as number[][][];
  const queries = randomTensor(next, T, H * d) as number[][];
  const ctx = handContext({ keys, queries, numHeads: H });
  const mean = new Array(T - 1).fill(0);
  for (let h = 0; h < H; h++) {
    const a = bruteAttention(queries[T - 1].slice(h * d, (h + 1) * d), keys[Math.floor(h / 2)], T - 1);
    for (let t = 0; t < T - 1; t++) mean[t] += a[t] / H;
  }
  const expected = [...mean, Math.max(...mean) + 1];
  const got = new TOVAPress(0.5).score(ctx);
  got.forEach((s, g) => assertClose(s, expected, 1e-6, `kv head ${g}`));
  const kept = keptOf(new TOVAPress(0.5).compress(ctx));
  assert.deepEqual(kept[0], kept[1]);
});

test('ObservedAttention: attention summed over queries / (T − j), averaged over the group', () => {
  const next = lcg(4), T = 5, d = 2, H = 2, Hkv = 1;
  const keys = randomTensor(next, Hkv, T, d) as number[][][];
  const queries = randomTensor(next, T, H * d) as number[][];
  const ctx = handContext({ keys, queries, numHeads: H });
  const expected = new Array(T).fill(0);
  for (let h = 0; h < H; h++) {
    for (let r = 0; r < T; r++) {
      const a = bruteAttention(queries[r].slice(h * d, (h + 1) * d), keys[0], r);
      for (let t = 0; t < T; t++) expected[t] += a[t] / (T - t) / H;
    }
  }
  assertClose(new ObservedAttentionPress(0.5).score(ctx)[0], expected, 1e-6, 'scores');
});

test('ObservedAttention matches the engine\'s full attention matrix on stories260K', () => {
  let checked = 0;
  prefill({
    compress(ctx) {
      const T = ctx.rows, A = ctx.attentionProbs(), got = new ObservedAttentionPress(0.5).score(ctx);
      for (let g = 0; g < 4; g++) {
        const expected = Array.from({ length: T }, (_, t) => {
          let s = 0;
          for (const h of [2 * g, 2 * g + 1]) for (let r = 0; r < T; r++) s += A[h][r * T + t];
          return s / 2 / (T - t);
        });
        assertClose(got[g], expected, 1e-5, `layer ${ctx.layer} kv head ${g}`);
      }
      checked++;
      return null;
    },
  });
  assert.equal(checked, 5);
});

test('KeyDiff: −cos(k, mean of normalised keys)', () => {
  // Normalised keys (1,0),(0,1),(1,0),(1,0): anchor (0.75, 0.25), ‖anchor‖ = 0.790569.
  const ctx = handContext({ keys: [[[2, 0], [0, 3], [1, 0], [5, 0]]] });
  const c1 = 0.75 / Math.hypot(0.75, 0.25), c2 = 0.25 / Math.hypot(0.75, 0.25);
  assertClose(new KeyDiffPress(0.75).score(ctx)[0], [-c1, -c2, -c1, -c1], 1e-12, 'scores');
  assert.deepEqual(keptOf(new KeyDiffPress(0.75).compress(ctx)), [[1]]);
});

test('LagKV: partition scores against the next partition, ranks by default, sinks and tail kept', () => {
  // nSink 1, λ 2, T 7: partitions [1,2] (reference [3,4]) and [3,4] (reference [5,6]); tail [5,6].
  const keys = [[[9, 9], [1, 1], [2, 0], [0, 0], [2, 1], [0, 2], [1, 0]]];
  const ctx = handContext({ keys });
  // Partition [1,2]: min (0,0), range (2,1): (0.5,1) std 0.353553, (1,0) std 0.707107 → softmax 0.412521, 0.587479.
  // Partition [3,4]: min (0,0), range (1,2): (0,0) std 0, (2,0.5) std 1.060660 → softmax 0.257182, 0.742818.
  const cross = new LagKVPress(0.5, { nSink: 1, lagSize: 2, crossScoring: true }).score(ctx)[0];
  assertClose(cross, [1, 0.412521, 0.587479, 0.257182, 0.742818, 1, 1], 1e-5, 'cross');
  const rank = new LagKVPress(0.5, { nSink: 1, lagSize: 2 });
  assertClose(rank.score(ctx)[0], [1, 0, 0.5, 0, 0.5, 1, 1], 1e-12, 'ranks');
  // n_kept = floor(7·0.6) = 4: sink, tail, then the tie at 0.5 goes to the most recent (default)
  // or to the lower position.
  assert.deepEqual(keptOf(new LagKVPress(0.4, { nSink: 1, lagSize: 2 }).compress(ctx)), [[0, 4, 5, 6]]);
  assert.deepEqual(keptOf(new LagKVPress(0.4, { nSink: 1, lagSize: 2, protectedOrder: 'position' }).compress(ctx)), [[0, 2, 5, 6]]);
  // Budget below sinks + tail (3 protected, n_kept 2): 'recent' keeps the sink then the last token.
  assert.deepEqual(keptOf(new LagKVPress(0.7, { nSink: 1, lagSize: 2 }).compress(ctx)), [[0, 6]]);
  assert.deepEqual(keptOf(new LagKVPress(0.7, { nSink: 1, lagSize: 2, protectedOrder: 'position' }).compress(ctx)), [[0, 5]]);
  assert.throws(() => new LagKVPress(0.5, { protectedOrder: 'last' as never }), /protectedOrder must be "recent" or "position"/);
  assert.deepEqual(keptOf(new LagKVPress(0.4, { nSink: 1, lagSize: 2, crossScoring: true }).compress(ctx)), [[0, 4, 5, 6]]);
  // Shorter than nSink + 2λ: linear ramp, i.e. keep the most recent.
  const short = handContext({ keys: [keys[0].slice(0, 4)] });
  assertClose(rank.score(short)[0], [1, 0, 1 / 3, 2 / 3], 1e-12, 'short');
});

test('Random: deterministic per seed, in [0, 1), fresh without a seed', () => {
  const ctx = handContext({ keys: [Array.from({ length: 50 }, () => [1, 0]), Array.from({ length: 50 }, () => [0, 1])] });
  const a = new RandomPress(0.5, { seed: 7 }).score(ctx), b = new RandomPress(0.5, { seed: 7 }).score(ctx);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, new RandomPress(0.5, { seed: 8 }).score(ctx));
  assert.notDeepEqual(a[0], a[1]);
  for (const s of a) for (const x of s) assert.ok(x >= 0 && x < 1);
  const free = new RandomPress(0.5);
  assert.notDeepEqual(free.score(ctx), free.score(ctx));
  assert.deepEqual(positionsOf(prefill(new RandomPress(0.5, { seed: 3 }))), positionsOf(prefill(new RandomPress(0.5, { seed: 3 }))));
});

test('QFilter: s = −(f̄·k) with f̄ the mean filter of the KV group, from memory or a stats file', () => {
  const stats: QueryStats = {
    model: 'hand', numHeads: 2, headDim: 2, nSink: 0, tokens: 1,
    layers: [{ mean: new Float32Array(4), cov: new Float32Array(8), qfilter: Float32Array.from([1, 0, 0, 1]) }],
  };
  const ctx = handContext({ keys: [[[1, 1], [-1, 0], [2, -4]]], numHeads: 2 });
  assertClose(new QFilterPress(0.5, stats).score(ctx)[0], [-1, 0.5, 1], 1e-12, 'scores');
  const dir = mkdtempSync(join(tmpdir(), 'qfilter-'));
  try {
    const path = join(dir, 'stats.json');
    writeQueryStats(path, stats);
    assert.deepEqual(keptOf(new QFilterPress(0.5, path).compress(ctx)), [[2]]);
  } finally {
    rmSync(dir, { recursive: true });
  }
  assert.throws(() => new QFilterPress(0.5, stats).validate(model), (e: Error) => e instanceof PressError && /run `kvpress calibrate` on this model/.test(e.message));
});

// ---------------------------------------------------------------------------------------------
// Registry entries.

test('baseline registry entries: Python names, defaults, and each one runs on stories260K', () => {
  const registry = new PressRegistry().register(...baselineEntries);
  assert.deepEqual(registry.names(), ['random', 'knorm', 'streaming_llm', 'snapkv', 'tova', 'observed_attention', 'keydiff', 'lagkv', 'pyramidkv', 'qfilter',
    'adakv_snapkv', 'critical_snapkv', 'critical_adakv_snapkv', 'block_keydiff']);
  assert.equal(registry.get('snapkv').options.windowSize.default, 64);
  assert.equal(registry.get('lagkv').options.lagSize.default, 128);
  assert.equal(registry.get('adakv_snapkv').options.alphaSafeguard.default, 0.2);
  assert.throws(() => registry.create('qfilter', 0.5), (e: Error) => e instanceof PressError && /kvpress calibrate/.test(e.message));
  assert.throws(() => registry.create('snapkv', 0.5, { kernelSize: '4' }), (e: Error) => e instanceof PressError && /odd/.test(e.message));
  const T = tokens.length, perHead = Math.floor(T * 0.5);
  for (const name of registry.names()) {
    if (name === 'qfilter') continue;
    const press = registry.create(name, 0.5, name.includes('snapkv') ? { windowSize: '16' } : {});
    const lengths = prefill(press).lengths();
    const totals = lengths.map((l) => l.reduce((a, b) => a + b, 0));
    if (name === 'pyramidkv') assert.ok(lengths.every((l) => l.every((n) => n < T)), name);
    else assert.deepEqual(totals, lengths.map(() => 4 * perHead), name);
  }
});
