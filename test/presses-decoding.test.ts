import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { KVCache } from '../src/cache/kv-cache.js';
import type { LayerContext } from '../src/model/layer-context.js';
import { loadModel } from '../src/model/load.js';
import type { Model } from '../src/model/model.js';
import { generate } from '../src/pipeline/generate.js';
import { CompressionRatioDecodingPress, DecodingPress, PrefillDecodingPress, ratioForTotal } from '../src/presses/decoding.js';
import { ExpectedAttentionPress } from '../src/presses/expected-attention.js';
import { createPress } from '../src/presses/index.js';
import type { Press } from '../src/presses/press.js';
import { ScorerPress } from '../src/presses/scorer.js';

const PROMPT = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.';

let shared: Model | null = null;
async function stories(): Promise<Model> {
  return (shared ??= await loadModel());
}

/**
 * Greedy generation of `steps` tokens (no stop token) that calls `check` with the cache after the
 * prefill and after every decoding forward pass.
 */
async function run(press: Press, steps: number, check: (cache: KVCache, step: number) => void): Promise<void> {
  const model = await stories();
  const prompt = model.tokenizer!.encode(PROMPT, { bos: true });
  const cache = model.newCache();
  let step = 0;
  generate(model, prompt, { press, cache, maxNewTokens: steps + 1, stopIds: [], temperature: 0, onToken: () => check(cache, step++) });
  assert.equal(step, steps + 1);
}

function lengths(cache: KVCache): number[] {
  return cache.layers.flatMap((l) => Array.from(l.lengths));
}

test('DecodingPress keeps every head within [targetSize, targetSize + compressionInterval − 1] over 300 tokens', async () => {
  const target = 64, interval = 16;
  const press = new DecodingPress(new ExpectedAttentionPress(), { targetSize: target, compressionInterval: interval });
  let reached = false, compressions = 0, previous = 0;
  await run(press, 300, (cache) => {
    const ls = lengths(cache);
    assert.ok(ls.every((n) => n === ls[0]), `equal heads: ${ls}`);
    const n = ls[0];
    if (n >= target) reached = true;
    if (reached) assert.ok(n >= target && n <= target + interval - 1, `length ${n} at position ${cache.nextPosition}`);
    if (n < previous) compressions++;
    previous = n;
    // Entries stay in position order.
    for (const l of cache.layers) {
      const p = l.headPositions(0);
      for (let i = 1; i < p.length; i++) assert.ok(p[i] > p[i - 1]);
    }
  });
  assert.ok(reached);
  assert.ok(compressions >= 15, `${compressions} compressions`);
});

/** Keeps the most recent entries and records what each compression was given. */
class RecencySpy extends ScorerPress {
  readonly name = 'recency_spy';
  readonly calls: { layer: number; prefill: boolean; rows: number; positions: number[]; ratio: number; lengths: number[] }[] = [];

  score(ctx: LayerContext): Float64Array[] {
    this.calls.push({ layer: ctx.layer, prefill: ctx.isPrefill, rows: ctx.rows, positions: Array.from(ctx.positions), ratio: this.compressionRatio, lengths: Array.from(ctx.cache.lengths) });
    return Array.from(ctx.cache.lengths, (T, g) => Float64Array.from(ctx.cache.headPositions(g)).subarray(0, T));
  }
}

test('the base press sees the last hiddenStatesBufferSize passes and the current one as its rows, every compressionInterval steps', async () => {
  const spy = new RecencySpy();
  const press = new DecodingPress(spy, { targetSize: 20, compressionInterval: 10, hiddenStatesBufferSize: 4 });
  const model = await stories();
  const prompt = model.tokenizer!.encode(PROMPT, { bos: true });
  await run(press, 60, () => {});
  const layer0 = spy.calls.filter((c) => c.layer === 0);
  assert.equal(layer0.length, 6, 'one compression every 10 decoding steps');
  layer0.forEach((c, i) => {
    // Decoding pass k (1-based) processes position prompt.length + k − 1; at pass 10(i+1) the base
    // press sees, as prefill-like rows in order, the 4 buffered passes and the current one (the
    // buffer is trimmed after each step, as in the library).
    const last = prompt.length + 10 * (i + 1) - 1;
    assert.equal(c.prefill, true);
    assert.deepEqual(c.positions, [last - 4, last - 3, last - 2, last - 1, last]);
    assert.ok(c.lengths.every((n) => Math.floor(n * (1 - c.ratio)) === 20), `ratio ${c.ratio} for ${c.lengths}`);
  });
  assert.equal(spy.compressionRatio, 0, 'the base press gets its own ratio back');
});

test('a decoding pass of at least targetSize tokens compresses at once', async () => {
  const model = await stories();
  const spy = new RecencySpy();
  const press = new DecodingPress(spy, { targetSize: 20, compressionInterval: 1000 });
  const cache = model.newCache();
  const ids = model.tokenizer!.encode(PROMPT, { bos: true });
  model.forward(ids.slice(0, 10), cache, { press });
  assert.deepEqual(lengths(cache), lengths(cache).map(() => 10), 'nothing happens in the prefill');
  model.forward(ids.slice(10, 35), cache, { press });
  assert.ok(lengths(cache).every((n) => n === 20));
  assert.equal(spy.calls.filter((c) => c.layer === 0)[0].rows, 25);
});

test('ratioForTotal: floor(L·(1 − r)) lands exactly on the target', () => {
  for (let L = 2; L < 300; L += 7) {
    for (const target of [1, Math.floor(L / 3), L - 1]) {
      if (target < 1 || target >= L) continue;
      const r = ratioForTotal([L, L, L], 3 * target);
      assert.ok(r > 0 && r < 1);
      assert.equal(Math.floor(L * (1 - r)), target, `L ${L} target ${target}`);
    }
  }
  assert.equal(ratioForTotal([10, 10], 20), 0);
  // Unequal heads (after head-adaptive eviction): the largest total not above the target.
  const ls = [70, 50, 90], r = ratioForTotal(ls, 150);
  const kept = (x: number) => ls.reduce((s, n) => s + Math.floor(n * (1 - x)), 0);
  assert.ok(kept(r) <= 150 && kept(r) >= 148, `kept ${kept(r)}`);
});

test('CompressionRatioDecodingPress keeps floor(seen·(1 − ratio)) entries at each compression', async () => {
  const press = new CompressionRatioDecodingPress(new ExpectedAttentionPress(), 0.5, { compressionInterval: 16 });
  let previous = 0, compressions = 0;
  await run(press, 120, (cache) => {
    const n = lengths(cache)[0];
    if (n < previous) {
      compressions++;
      assert.equal(n, Math.floor(cache.nextPosition * 0.5));
    }
    previous = n;
  });
  assert.ok(compressions >= 5);
});

test('PrefillDecodingPress compresses the prompt with one press and the generation with another', async () => {
  const model = await stories();
  const P = model.tokenizer!.encode(PROMPT, { bos: true }).length;
  const press = new PrefillDecodingPress(new ExpectedAttentionPress(0.5), new DecodingPress(new ExpectedAttentionPress(), { targetSize: 30, compressionInterval: 8 }));
  let first = true;
  await run(press, 60, (cache) => {
    const n = lengths(cache)[0];
    if (first) assert.equal(n, Math.floor(P / 2));
    else assert.ok(n <= 30 + 8 - 1, `length ${n}`);
    first = false;
  });
  assert.equal(press.compressionRatio, 0.5);
});

test("decoding Expected Attention runs in both position modes and 'absolute' keeps the real sinks", async () => {
  for (const positions of ['compat', 'absolute'] as const) {
    const press = createPress('decoding_expected_attention', 0, { targetSize: 40, compressionInterval: 12, positions });
    await run(press, 50, (cache) => {
      for (const l of cache.layers) for (let g = 0; g < l.numKvHeads; g++) assert.deepEqual(Array.from(l.headPositions(g).subarray(0, 4)), [0, 1, 2, 3]);
    });
  }
  // compat drops the first nSink buffered states, so a 3-step buffer leaves no statistics.
  const tooShort = createPress('decoding_expected_attention', 0, { targetSize: 20, compressionInterval: 3 });
  await assert.rejects(run(tooShort, 30, () => {}), /needs more than nSink = 4 tokens to estimate query statistics, got 3/);
});

test('AdaKV as the base press: head-adaptive lengths, total back to heads × targetSize', async () => {
  const target = 40, interval = 10;
  const press = createPress('decoding_adakv_expected_attention_e2', 0, { targetSize: target, compressionInterval: interval });
  let unequal = false, compressions = 0, previous = 0;
  await run(press, 80, (cache) => {
    for (const l of cache.layers) {
      const total = Array.from(l.lengths).reduce((a, b) => a + b, 0);
      if (new Set(l.lengths).size > 1) unequal = true;
      if (total > l.numKvHeads * target) assert.ok(total <= l.numKvHeads * (target + interval - 1), `total ${total}`);
    }
    const total0 = Array.from(cache.layers[0].lengths).reduce((a, b) => a + b, 0);
    if (total0 < previous) {
      compressions++;
      assert.equal(total0, cache.layers[0].numKvHeads * target);
    }
    previous = total0;
  });
  assert.ok(unequal, 'heads hold different numbers of entries');
  assert.ok(compressions >= 4);
});
