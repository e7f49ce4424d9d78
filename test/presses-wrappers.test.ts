import assert from 'node:assert/strict';
import { test } from 'node:test';
import { JsBackend } from '../src/backend/js/kernels.js';
import { KVCache } from '../src/cache/kv-cache.js';
import type { ModelConfig } from '../src/model/config.js';
import { LayerContext, type Compressor, type ModelParts } from '../src/model/layer-context.js';
import { loadModel } from '../src/model/load.js';
import { Rope } from '../src/model/rope.js';
import type { LayerWeights } from '../src/model/weights.js';
import { generate } from '../src/pipeline/generate.js';
import { AdaKVPress } from '../src/presses/adakv.js';
import { BlockPress } from '../src/presses/block.js';
import { ChunkPress } from '../src/presses/chunk.js';
import { ComposedPress } from '../src/presses/composed.js';
import { subContext } from '../src/presses/common.js';
import { CriticalAdaKVPress, CriticalKVPress } from '../src/presses/critical.js';
import { KeyRerotationPress } from '../src/presses/key-rerotation.js';
import { KeyDiffPress } from '../src/presses/keydiff.js';
import { KnormPress } from '../src/presses/knorm.js';
import { ObservedAttentionPress } from '../src/presses/observed-attention.js';
import { PerLayerCompressionPress } from '../src/presses/per-layer.js';
import { PressError } from '../src/presses/press.js';
import { ScorerPress } from '../src/presses/scorer.js';
import { SnapKVPress } from '../src/presses/snapkv.js';
import { StreamingLLMPress } from '../src/presses/streaming-llm.js';

// ---------------------------------------------------------------------------------------------
// Hand-built contexts: keys/values [kvHead][t][d], output projection wo [hidden][heads·d].

function handContext(h: { keys: number[][][]; values?: number[][][]; numHeads?: number; wo?: number[][] }): LayerContext {
  const Hkv = h.keys.length, T = h.keys[0].length, d = h.keys[0][0].length, H = h.numHeads ?? Hkv;
  const D = h.wo ? h.wo.length : H * d;
  const config: ModelConfig = {
    architecture: 'llama', hiddenSize: D, intermediateSize: 1, numLayers: 1, numHeads: H, numKvHeads: Hkv, headDim: d,
    vocabSize: 1, maxPositionEmbeddings: 4096, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null,
    tieWordEmbeddings: true, attentionBias: false, qkNorm: false,
  };
  const z = (n: number) => new Float32Array(n);
  const lw: LayerWeights = {
    attnNorm: z(D), wq: z(H * d * D), wk: z(Hkv * d * D), wv: z(Hkv * d * D), wo: h.wo ? Float32Array.from(h.wo.flat()) : z(D * H * d),
    bq: null, bk: null, bv: null, qNorm: null, kNorm: null, ffnNorm: z(D), wGate: z(D), wUp: z(D), wDown: z(D),
  };
  const model: ModelParts = { config, layerWeights: [lw], backend: new JsBackend(), rope: new Rope(config) };
  const kv = new KVCache(1, Hkv, d);
  const pack = (x: number[][][]) => {
    const out = new Float32Array(T * Hkv * d);
    for (let t = 0; t < T; t++) for (let g = 0; g < Hkv; g++) out.set(x[g][t], (t * Hkv + g) * d);
    return out;
  };
  const positions = Int32Array.from({ length: T }, (_, i) => i);
  kv.layers[0].append(pack(h.keys), pack(h.values ?? h.keys), positions, T);
  kv.nextPosition = T;
  return new LayerContext(model, 0, kv, true, T, z(T * D), positions, z(T * H * d));
}

/** A scorer with fixed scores, so wrapper logic is checked against hand-computed selections. */
class FixedPress extends ScorerPress {
  readonly name = 'fixed';
  constructor(private readonly s: number[][], ratio = 0) {
    super(ratio);
  }

  score(): Float64Array[] {
    return this.s.map((x) => Float64Array.from(x));
  }
}

const keptOf = (keep: ArrayLike<number>[] | null) => (keep ?? []).map((k) => Array.from(k));
const unit = (n: number) => Array.from({ length: n }, () => [1, 0]);

// ---------------------------------------------------------------------------------------------
// stories260K (5 layers, 8 heads, 4 KV heads, head_dim 8).

const model = await loadModel();
const STORY = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. '
  + 'One day, she saw a big red ball under a tree. She ran to get it, but a small dog took it first. Lily was sad, but then '
  + 'the dog came back and dropped the ball at her feet.';
const tokens = model.tokenizer!.encode(STORY, { bos: true });
const T = tokens.length;

function prefill(press: Compressor | null): KVCache {
  const cache = model.newCache();
  model.forward(tokens, cache, { logits: 'none', press });
  return cache;
}

const positionsOf = (cache: KVCache) => cache.layers.map((l) => Array.from({ length: l.numKvHeads }, (_, g) => Array.from(l.headPositions(g))));

// ---------------------------------------------------------------------------------------------
// AdaKV.

test('AdaKV: global top-k over heads with each head guaranteed its safeguard share', () => {
  const ctx = handContext({ keys: [unit(4), unit(4)] });
  const scores = [[10, 9, 8, 7], [1, 0.5, 0.2, 0.1]];
  // n_kept = 2 per head, 4 in all; alpha 0.2 → floor(0.4) = 0 safeguarded: head 0 takes everything.
  assert.deepEqual(keptOf(new AdaKVPress(new FixedPress(scores), 0.5).compress(ctx)), [[0, 1, 2, 3], []]);
  // alpha 0.5 → each head keeps its best entry, the other two go to head 0.
  assert.deepEqual(keptOf(new AdaKVPress(new FixedPress(scores), 0.5, 0.5).compress(ctx)), [[0, 1, 2], [0]]);
});

test('AdaKV on stories260K: unequal heads, the plain press\'s total, real eviction, generation works', () => {
  const inner = new SnapKVPress(0, { windowSize: 16 });
  const ada = new AdaKVPress(inner, 0.5);
  const observed: Float64Array[][] = [];
  ada.observer = { onScores: (layer, s) => (observed[layer] = s.map((x) => Float64Array.from(x))) };
  const cache = prefill(ada);
  const plain = prefill(new SnapKVPress(0.5, { windowSize: 16 }));
  const lengths = cache.lengths(), perHead = Math.floor(T * 0.5);
  assert.ok(lengths.some((l) => new Set(l).size > 1), `some layer has unequal heads: ${JSON.stringify(lengths)}`);
  for (const l of lengths) assert.equal(l.reduce((a, b) => a + b, 0), 4 * perHead);
  assert.equal(cache.bytes(), plain.bytes());
  // Memory is really freed: each head holds only the pages its entries fill.
  cache.layers.forEach((l) => l.pages.forEach((p, g) => assert.equal(p.length, Math.ceil(l.lengths[g] / l.pageEntries))));
  // Definition check against the observed inner scores: safeguard kept, and one global threshold.
  positionsOf(cache).forEach((layer, li) => {
    const s = observed[li], safe = Math.floor(perHead * 0.2);
    let minKept = Infinity, maxEvicted = -Infinity;
    layer.forEach((kept, g) => {
      const order = Array.from(s[g].keys()).sort((a, b) => s[g][b] - s[g][a] || a - b);
      for (const t of order.slice(0, safe)) assert.ok(kept.includes(t), `layer ${li} head ${g} keeps safeguarded ${t}`);
      const safeSet = new Set(order.slice(0, safe));
      for (let t = 0; t < T; t++) {
        if (safeSet.has(t)) continue;
        if (kept.includes(t)) minKept = Math.min(minKept, s[g][t]);
        else maxEvicted = Math.max(maxEvicted, s[g][t]);
      }
    });
    assert.ok(minKept >= maxEvicted, `layer ${li}: kept ${minKept} ≥ evicted ${maxEvicted}`);
  });
  const out = generate(model, tokens, { press: new AdaKVPress(new SnapKVPress(0, { windowSize: 16 }), 0.5), maxNewTokens: 24 });
  assert.ok(out.tokens.length > 5 && out.text.trim().length > 0, out.text);
  assert.equal(ada.compressionRatio, 0.5);
  assert.equal(inner.compressionRatio, 0.5);
});

// ---------------------------------------------------------------------------------------------
// CriticalKV / CriticalAdaKV.

test('CriticalKV: stage 1 by the inner score, stage 2 by (s + ε)·mean_h ‖W_O,h v‖₁', () => {
  // 2 query heads, 1 KV head, d = 2, hidden 2. W_O = [[2,0,1,0],[0,0,0,1]]: head 0 maps v → (2v₀, 0),
  // head 1 maps v → (v₀, v₁), so N = (2|v₀| + |v₀| + |v₁|)/2 = 1.5|v₀| + 0.5|v₁|.
  const values = [[[1, 0], [0, 1], [1, 1], [0, 0], [4, 0], [0, 2]]];
  const N = [1.5, 0.5, 2, 0, 6, 1];
  const s = [0.5, 0.4, 0.3, 0.2, 0.1, 0.05];
  const ctx = handContext({ keys: [unit(6)], values, numHeads: 2, wo: [[2, 0, 1, 0], [0, 0, 0, 1]] });
  const p = new CriticalKVPress(new FixedPress([s]), 0.5);
  const got = Array.from(p.score(ctx)[0]);
  // Stage 1 keeps floor(0.5·6·0.5) = 1 entry (index 0) above everything else.
  for (let t = 1; t < 6; t++) {
    assert.ok(Math.abs(got[t] - (s[t] + 1e-4) * N[t]) < 1e-9, `entry ${t}: ${got[t]}`);
    assert.ok(got[0] > got[t]);
  }
  assert.deepEqual(keptOf(p.compress(ctx)), [[0, 2, 4]]);
  assert.equal(p.name, 'critical_fixed');
});

test('CriticalAdaKV: AdaKV budgets, then CriticalKV inside each head', () => {
  // G = 1 and W_O,h = I for both heads, so N = ‖v‖₁.
  const values = [[[1, 0], [1, 0], [0.1, 0], [5, 0]], unit(4)];
  const ctx = handContext({ keys: [unit(4), unit(4)], values, wo: [[1, 0, 1, 0], [0, 1, 0, 1]] });
  const inner = new FixedPress([[0.9, 0.8, 0.7, 0.6], [0.5, 0.1, 0.05, 0.01]]);
  // n_kept 2 per head; safeguard floor(2·0.5) = 1 each; the two remaining slots go to head 0 → budgets 3, 1.
  // Head 0: stage 1 keeps max(1, floor(1.5)) = 1 → [0]; stage 2 (s+ε)·N = 0.8001, 0.07001, 3.0005 → 3, then 1.
  const p = new CriticalAdaKVPress(inner, 0.5, { alphaSafeguard: 0.5 });
  assert.deepEqual(keptOf(p.compress(ctx)), [[0, 1, 3], [0]]);
});

test('CriticalKV and CriticalAdaKV run on stories260K and keep the plain totals', () => {
  const perHead = Math.floor(T * 0.5);
  const crit = prefill(new CriticalKVPress(new SnapKVPress(0, { windowSize: 16 }), 0.5)).lengths();
  assert.deepEqual(crit, crit.map(() => [perHead, perHead, perHead, perHead]));
  const ada = prefill(new CriticalAdaKVPress(new SnapKVPress(0, { windowSize: 16 }), 0.5)).lengths();
  for (const l of ada) assert.equal(l.reduce((a, b) => a + b, 0), 4 * perHead);
});

// ---------------------------------------------------------------------------------------------
// KeyRerotation.

/** HF rotate_half RoPE of a pre-RoPE vector at position p, in float64. */
function rope(x: number[], p: number, invFreq: Float64Array): number[] {
  const half = x.length / 2, out = x.slice();
  for (let j = 0; j < half; j++) {
    const c = Math.cos(p * invFreq[j]), s = Math.sin(p * invFreq[j]);
    out[j] = x[j] * c - x[j + half] * s;
    out[j + half] = x[j + half] * c + x[j] * s;
  }
  return out;
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

test('KeyRerotation: contiguous positions, next position = kept length, logits equal to the shifted originals', () => {
  const original = prefill(null);
  const cache = prefill(new KeyRerotationPress(new KnormPress(), 0.5));
  const n = Math.floor(T * 0.5), hd = 8, inv = model.rope.invFreq;
  assert.equal(cache.nextPosition, n);
  const plainKept = positionsOf(prefill(new KnormPress(0.5)));
  const q = [0.3, -1.2, 0.7, 0.05, -0.4, 0.9, 1.1, -0.6];
  cache.layers.forEach((l, li) => {
    for (let g = 0; g < l.numKvHeads; g++) {
      assert.deepEqual(Array.from(l.headPositions(g)), Array.from({ length: n }, (_, i) => i));
      plainKept[li][g].forEach((old, j) => {
        // A query at the new next position n + 3 against rerotated key j equals the same query
        // at old + (n + 3 − j) against the original key: only the distance counts.
        const now = dot(rope(q, n + 3, inv), l.headKeys(g).subarray(j * hd, (j + 1) * hd));
        const before = dot(rope(q, old + n + 3 - j, inv), original.layers[li].headKeys(g).subarray(old * hd, (old + 1) * hd));
        assert.ok(Math.abs(now - before) < 1e-4, `layer ${li} head ${g} entry ${j}: ${now} vs ${before}`);
      });
    }
  });
  const out = generate(model, tokens, { press: new KeyRerotationPress(new StreamingLLMPress(), 0.5), maxNewTokens: 16 });
  // Generated tokens continue right after the compressed context (the last sampled one is not fed back).
  const next = out.cache.nextPosition;
  assert.ok(next >= n + out.tokens.length - 1 && next <= n + out.tokens.length, `next position ${next}`);
  assert.deepEqual(Array.from(out.cache.layers[4].headPositions(0)), Array.from({ length: next }, (_, i) => i));
  assert.ok(out.text.trim().length > 0);
});

// ---------------------------------------------------------------------------------------------
// Composed, PerLayer.

test('ComposedPress chains presses; its ratio is 1 − Π(1 − r_i)', () => {
  const composed = new ComposedPress([new KnormPress(0.5), new KnormPress(0.2)]);
  assert.ok(Math.abs(composed.compressionRatio - 0.6) < 1e-12);
  assert.throws(() => (composed.compressionRatio = 0.3), /cannot be set/);
  assert.throws(() => new ComposedPress([new ObservedAttentionPress(0.5)]), /cannot contain ObservedAttentionPress/);
  // floor(T·0.5) then floor(·0.8) entries; Knorm scores tokens independently, so the chain keeps
  // exactly what Knorm alone keeps at that size.
  const cache = prefill(composed);
  const n = Math.floor(Math.floor(T * 0.5) * 0.8);
  assert.deepEqual(cache.lengths(), cache.lengths().map(() => [n, n, n, n]));
  assert.equal(Math.floor(T * (1 - 0.6)), n);
  assert.deepEqual(positionsOf(cache), positionsOf(prefill(new KnormPress(0.6))));
});

test('PerLayerCompression applies one ratio per layer; its ratio is their mean', () => {
  const ratios = [0, 0.1, 0.25, 0.5, 0.75];
  const p = new PerLayerCompressionPress(new KnormPress(0.3), ratios);
  assert.equal(p.compressionRatio, 0.32);
  assert.throws(() => (p.compressionRatio = 0.5), /cannot be set/);
  assert.deepEqual(prefill(p).lengths(), ratios.map((r) => Array(4).fill(Math.floor(T * (1 - r)))));
  assert.equal(p.inner.compressionRatio, 0.3);
  assert.throws(() => new PerLayerCompressionPress(new KnormPress(), [0.5, 0.5]).validate(model), (e: Error) => e instanceof PressError && /2 ratios for a model with 5 layers/.test(e.message));
  assert.throws(() => new PerLayerCompressionPress(new KnormPress(), [0.5, 1]), /compressionRatios\[1\] must be in \[0, 1\)/);
});

// ---------------------------------------------------------------------------------------------
// Chunk, Block.

test('subContext holds exactly the chosen rows: hidden states, queries, pre-RoPE queries, keys, values, positions', () => {
  const c = model.config, D = c.hiddenSize, qd = c.numHeads * c.headDim, hd = c.headDim;
  for (const rows of [Int32Array.from([0, 3, 4, 9, 20]), Int32Array.from([5, 6, 7, 8])]) {
    let checked = 0;
    prefill({
      compress(ctx) {
        const sub = subContext(ctx, rows), pre = ctx.preRopeQueries(), subPre = sub.preRopeQueries();
        assert.equal(sub.rows, rows.length);
        rows.forEach((r, i) => {
          assert.deepEqual(sub.hidden.subarray(i * D, (i + 1) * D), ctx.hidden.subarray(r * D, (r + 1) * D));
          assert.deepEqual(sub.queries.subarray(i * qd, (i + 1) * qd), ctx.queries.subarray(r * qd, (r + 1) * qd));
          assertNear(subPre.subarray(i * qd, (i + 1) * qd), pre.subarray(r * qd, (r + 1) * qd));
          assert.equal(sub.positions[i], r);
          for (let g = 0; g < c.numKvHeads; g++) {
            assert.deepEqual(sub.cache.headKeys(g).slice(i * hd, (i + 1) * hd), ctx.cache.headKeys(g).slice(r * hd, (r + 1) * hd));
            assert.deepEqual(sub.cache.headValues(g).slice(i * hd, (i + 1) * hd), ctx.cache.headValues(g).slice(r * hd, (r + 1) * hd));
            assert.equal(sub.cache.headPositions(g)[i], r);
          }
        });
        checked++;
        return null;
      },
    });
    assert.equal(checked, 5);
  }
});

function assertNear(a: ArrayLike<number>, b: ArrayLike<number>): void {
  for (let i = 0; i < b.length; i++) assert.ok(Math.abs(a[i] - b[i]) < 1e-5, `${a[i]} vs ${b[i]}`);
}

/** Per-head key norms of the uncompressed cache, layer by layer. */
const norms = (cache: KVCache) => cache.layers.map((l) => Array.from({ length: l.numKvHeads }, (_, g) =>
  Array.from({ length: l.lengths[g] }, (_, t) => Math.hypot(...l.headKeys(g).subarray(t * 8, (t + 1) * 8)))));

/** Indices of the k smallest values, ascending. */
const smallest = (x: number[], k: number) => Array.from(x.keys()).sort((a, b) => x[a] - x[b] || a - b).slice(0, k).sort((a, b) => a - b);

test('ChunkPress: one chunk equals the plain press; otherwise max(1, floor(len·(1 − r))) per chunk', () => {
  assert.deepEqual(positionsOf(prefill(new ChunkPress(new KnormPress(), 0.5, 4096))), positionsOf(prefill(new KnormPress(0.5))));
  const snap = () => new SnapKVPress(0, { windowSize: 8 });
  assert.deepEqual(positionsOf(prefill(new ChunkPress(snap(), 0.5, T))), positionsOf(prefill(new SnapKVPress(0.5, { windowSize: 8 }))));
  const C = 20, ratio = 0.7, all = norms(prefill(null));
  const expected = all.map((layer) => layer.map((x) => {
    const kept: number[] = [];
    for (let s = 0; s < T; s += C) {
      const part = x.slice(s, s + C);
      kept.push(...smallest(part, Math.max(1, Math.floor(part.length * (1 - ratio)))).map((i) => s + i));
    }
    return kept;
  }));
  assert.deepEqual(positionsOf(prefill(new ChunkPress(new KnormPress(), ratio, C))), expected);
});

test('BlockPress: equals the plain press for one block or token-independent scores; block-wise KeyDiff by brute force', () => {
  assert.deepEqual(positionsOf(prefill(new BlockPress(new KnormPress(), 0.5, 16))), positionsOf(prefill(new KnormPress(0.5))));
  assert.deepEqual(positionsOf(prefill(new BlockPress(new KeyDiffPress(), 0.5, 4096))), positionsOf(prefill(new KeyDiffPress(0.5))));
  const snap = () => new SnapKVPress(0, { windowSize: 4 });
  assert.deepEqual(positionsOf(prefill(new BlockPress(snap(), 0.5, 4096))), positionsOf(prefill(new SnapKVPress(0.5, { windowSize: 4 }))));
  const half = Math.floor(T * 0.5);
  assert.deepEqual(prefill(new BlockPress(snap(), 0.5, 16)).lengths(), Array.from({ length: 5 }, () => [half, half, half, half]));
  // Reference: the block process written out with an independent KeyDiff on the uncompressed keys.
  const B = 16, ratio = 0.6, n = Math.max(1, Math.floor(T * (1 - ratio))), full = prefill(null);
  const keydiff = (keys: number[][]) => {
    const unitKeys = keys.map((k) => k.map((x) => x / Math.hypot(...k)));
    const anchor = unitKeys[0].map((_, d) => unitKeys.reduce((s, k) => s + k[d], 0) / keys.length);
    return keys.map((k) => -dot(k, anchor) / (Math.hypot(...k) * Math.hypot(...anchor)));
  };
  const expected = full.layers.map((l) => Array.from({ length: l.numKvHeads }, (_, g) => {
    const key = (t: number) => Array.from(l.headKeys(g).subarray(t * 8, (t + 1) * 8));
    let kept = Array.from({ length: n }, (_, i) => i);
    for (let s = n; s < T; s += B) {
      const rows = [...kept, ...Array.from({ length: Math.min(B, T - s) }, (_, i) => s + i)];
      const sc = keydiff(rows.map(key));
      kept = smallest(sc.map((x) => -x), n).map((i) => rows[i]);
    }
    return kept;
  }));
  assert.deepEqual(positionsOf(prefill(new BlockPress(new KeyDiffPress(), ratio, B))), expected);
});

test('the public press API refuses wrong arguments with one-line PressErrors', async () => {
  const { createPress, AdaKVPress, CriticalKVPress, ComposedPress, DecodingPress, PerLayerCompressionPress, KnormPress, PressError } = await import('../src/presses/index.js');
  const cases: [() => unknown, RegExp][] = [
    [() => createPress('knorm', 0.5, null as never), /options must be an object of option → value.*got null/],
    [() => createPress(null as never), /a press name must be a string, got null/],
    [() => createPress('knorm', '0.5' as never), /compression ratio must be in \[0, 1\), got the string "0.5"/],
    [() => createPress('knorm', 0.5, { toString: 1 }), /has no option "toString"/],
    [() => new AdaKVPress(null as never, 0.5), /the adakv wrapper wraps a scorer press, got null/],
    [() => new AdaKVPress(null as never), /wraps a scorer press, got null/],
    [() => new CriticalKVPress(undefined as never, 0.5), /CriticalKVPress wraps a scorer press, got undefined/],
    [() => new AdaKVPress(new DecodingPress(new KnormPress()) as never, 0.5), /one with score\(ctx\).*got decoding_knorm/],
    [() => new ComposedPress([null as never]), /ComposedPress \(entry 0\) wraps a press, got null/],
    [() => new PerLayerCompressionPress(null as never, [0.5]), /PerLayerCompressionPress wraps a press, got null/],
    [() => new DecodingPress(42 as never), /DecodingPress wraps a press, got number 42/],
  ];
  for (const [f, re] of cases) assert.throws(f, (e: Error) => e instanceof PressError && re.test(e.message) && !e.message.includes('\n'), String(re));
});

test('wrappers compose with any registered scorer by name: chunkkv_, dms_, merging_', async () => {
  const { createPress, presses: registry, ChunkKVPress, DMSPress, MergingPress, PressError, SnapKVPress, ExpectedAttentionPress } = await import('../src/presses/index.js');
  const c = createPress('chunkkv_snapkv', 0.5, { chunkLength: 10, windowSize: 8 }) as InstanceType<typeof ChunkKVPress>;
  assert.ok(c instanceof ChunkKVPress && c.inner instanceof SnapKVPress);
  assert.equal(c.options.chunkLength, 10);
  assert.equal((c.inner as InstanceType<typeof SnapKVPress>).windowSize, 8);
  assert.equal(c.compressionRatio, 0.5);
  const m = createPress('merging_expected_attention', 0.25, { epsilon: 0.01, mergeFraction: 0.5 }) as InstanceType<typeof MergingPress>;
  assert.ok(m instanceof MergingPress && m.inner instanceof ExpectedAttentionPress);
  assert.equal((m.inner as InstanceType<typeof ExpectedAttentionPress>).epsilon, 0.01);
  assert.ok(createPress('dms_knorm', 0, { threshold: -5 }) instanceof DMSPress);
  assert.throws(() => createPress('chunkkv_merging_knorm', 0.5), (e: Error) => e instanceof PressError && /unknown press/.test(e.message));
  assert.throws(() => createPress('dms_knorm', 0), (e: Error) => e instanceof PressError && /finite threshold/.test(e.message));
  assert.throws(() => createPress('dms_knorm', 0.5, { threshold: 1 }), (e: Error) => e instanceof PressError && /takes no compression ratio/.test(e.message));
  assert.throws(() => createPress('chunkkv_decoding_expected_attention', 0), (e: Error) => e instanceof PressError && /scorer press/.test(e.message));
  assert.throws(() => createPress('chunkkv_snapkvv', 0.5), (e: Error) => e instanceof PressError && /unknown press "chunkkv_snapkvv"/.test(e.message));
  assert.deepEqual(registry.wrappers().map((w) => w.prefix), ['chunkkv', 'dms', 'merging', 'cam', 'lukv']);
});
