import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createBackend } from '../src/backend/index.js';
import type { KVCache } from '../src/cache/kv-cache.js';
import type { LayerContext } from '../src/model/layer-context.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import { generate } from '../src/pipeline/generate.js';
import { Pipeline, PipelineError, type TokenEvent } from '../src/pipeline/pipeline.js';
import { formatStats } from '../src/pipeline/stats.js';
import { DecodingPress, KeyRerotationPress, KnormPress, PrefillDecodingPress, presses, type KeepIndices, type Press } from '../src/presses/index.js';

// The fastest kernels available: every reference below runs on the same model and backend.
const model = await loadModel(undefined, { backend: createBackend() });
const tok = model.tokenizer!;
const story = readFileSync(join(packageRoot(), 'examples/story.txt'), 'utf8');
const pipeline = new Pipeline(model);
const c = model.config;

/** Keeps the entries whose position p has p mod 3 ≠ 1, in every layer and head. */
class DropEveryThird implements Press {
  readonly name = 'drop-every-third';
  compressionRatio = 1 / 3;
  prefillCalls = 0;
  rows: number[] = [];
  compress(ctx: LayerContext): KeepIndices | null {
    if (!ctx.isPrefill) return null;
    this.prefillCalls++;
    this.rows.push(ctx.rows);
    return keepWhere(ctx, (p) => p % 3 !== 1);
  }
}

/** Drops the last `k` context entries: what stays is exactly a shorter context's cache. */
class DropTail implements Press {
  readonly name = 'drop-tail';
  compressionRatio = 0;
  constructor(readonly k: number) {}
  compress(ctx: LayerContext): KeepIndices | null {
    if (!ctx.isPrefill) return null;
    const n = ctx.rows;
    return keepWhere(ctx, (p) => p < n - this.k);
  }
}

/** KV head g keeps the positions p with p mod (g + 2) ≠ 1: different counts per head. */
class PerHeadPress implements Press {
  readonly name = 'per-head';
  compressionRatio = 0.4;
  compress(ctx: LayerContext): KeepIndices | null {
    if (!ctx.isPrefill) return null;
    return Array.from({ length: ctx.config.numKvHeads }, (_, g) => {
      const P = ctx.cache.headPositions(g);
      return Int32Array.from([...P.keys()].filter((i) => P[i] % (g + 2) !== 1));
    });
  }
}

function keepWhere(ctx: LayerContext, pred: (position: number) => boolean): KeepIndices {
  return Array.from({ length: ctx.config.numKvHeads }, (_, g) => {
    const P = ctx.cache.headPositions(g);
    return Int32Array.from([...P.keys()].filter((i) => pred(P[i])));
  });
}

function assertSameCache(a: KVCache, b: KVCache): void {
  assert.equal(a.nextPosition, b.nextPosition);
  assert.deepEqual(a.lengths(), b.lengths());
  assert.equal(a.bytes(), b.bytes());
  // The accessors return per-head transients (shared by clones): copy one side first.
  const bits = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  a.layers.forEach((l, i) => {
    for (let g = 0; g < l.numKvHeads; g++) {
      assert.deepEqual(l.headPositions(g).slice(), b.layers[i].headPositions(g));
      assert.ok(bits(l.headKeys(g).slice()).equals(bits(b.layers[i].headKeys(g))), `keys of layer ${i} head ${g}`);
      assert.ok(bits(l.headValues(g).slice()).equals(bits(b.layers[i].headValues(g))), `values of layer ${i} head ${g}`);
    }
  });
}

const Q1 = 'What did Lily find under the tree?';
const Q2 = 'Who lost his ball?';

test('the answer equals a hand-driven prefill with the press, then generate on the question', () => {
  const ctxIds = tok.encode(story, { bos: true });
  const cache = model.newCache();
  model.forward(ctxIds, cache, { logits: 'none', press: new DropEveryThird() });
  const ref = generate(model, tok.encode(Q1 + '\n'), { cache, maxNewTokens: 40, temperature: 0 });
  assert.ok(ref.tokens.length > 5, 'the reference answer is not trivially short');

  const press = new DropEveryThird();
  const r = pipeline.run({ context: story, question: Q1, press, maxNewTokens: 40 });
  assert.deepEqual(r.answerIds[0], ref.tokens);
  assert.equal(r.answers[0], ref.text);
  // The press ran once per layer, on the context only (never on the question or the answer).
  assert.equal(press.prefillCalls, c.numLayers);
  assert.deepEqual(press.rows, Array(c.numLayers).fill(ctxIds.length));
});

test('without a press, the answer equals plain greedy generation of context + "\\n"-terminated question', () => {
  const prompt = [...tok.encode(story, { bos: true }), ...tok.encode(Q2 + '\n')];
  const ref = generate(model, prompt, { maxNewTokens: 30, temperature: 0 });
  const r = pipeline.run({ context: story, question: Q2, maxNewTokens: 30 });
  assert.deepEqual(r.answerIds[0], ref.tokens);
  assert.equal(r.stats.press, null);
  assert.equal(r.stats.achievedRatio, 0);
});

test('truncation after each answer restores the exact compressed cache, so answers do not depend on order', () => {
  const compressed = pipeline.compress(story, { press: new DropEveryThird() });
  const snapshot = compressed.cache.clone();
  const a1 = compressed.answer(Q1, { maxNewTokens: 30 });
  assertSameCache(compressed.cache, snapshot);
  const a2 = compressed.answer(Q2, { maxNewTokens: 30 });
  assertSameCache(compressed.cache, snapshot);

  const both = pipeline.run({ context: story, questions: [Q1, Q2], press: new DropEveryThird(), maxNewTokens: 30 });
  const second = pipeline.run({ context: story, questions: [Q2], press: new DropEveryThird(), maxNewTokens: 30 });
  assert.deepEqual(both.answers, [a1.text, a2.text]);
  assert.equal(second.answers[0], both.answers[1]);
  assert.notEqual(a1.text, a2.text);
});

test('question positions continue after the uncompressed context, not after the compressed length', () => {
  const k = 150;
  const ctxIds = tok.encode(story, { bos: true });
  const n = ctxIds.length;
  const qIds = tok.encode(Q1 + '\n');
  // Dropping the last k entries leaves exactly the cache of the first n − k tokens.
  const gap = model.newCache();
  model.forward(ctxIds.slice(0, n - k), gap, { logits: 'none' });
  gap.nextPosition = n;
  const right = generate(model, qIds, { cache: gap, maxNewTokens: 30, temperature: 0 });
  const wrong = generate(model, [...ctxIds.slice(0, n - k), ...qIds], { maxNewTokens: 30, temperature: 0 });
  assert.notDeepEqual(right.tokens, wrong.tokens, 'the two position conventions must give different answers here');

  const r = pipeline.run({ context: story, question: Q1, press: new DropTail(k), maxNewTokens: 30 });
  assert.deepEqual(r.answerIds[0], right.tokens);
  assert.equal(r.stats.contextTokens, n);
  assert.deepEqual(r.stats.keptPerLayer, Array(c.numLayers).fill(n - k));
});

test('a press that renumbers positions (KeyRerotation-like) sets where the questions start', () => {
  const k = 150;
  const ctxIds = tok.encode(story, { bos: true });
  const n = ctxIds.length;
  class Renumbering extends DropTail {
    override compress(ctx: LayerContext): KeepIndices | null {
      const keep = super.compress(ctx);
      if (keep) ctx.kvCache.nextPosition = n - k;
      return keep;
    }
  }
  const compressed = pipeline.compress(story, { press: new Renumbering(k) });
  assert.equal(compressed.contextEnd, n - k);
  const plain = generate(model, [...ctxIds.slice(0, n - k), ...tok.encode(Q1 + '\n')], { maxNewTokens: 20, temperature: 0 });
  assert.deepEqual(compressed.answer(Q1, { maxNewTokens: 20 }).ids, plain.tokens);
});

test('stats: context tokens, kept entries, bytes before/after and the achieved ratio, by hand', () => {
  const n = tok.encode(story, { bos: true }).length;
  const kept = n - Math.floor((n + 1) / 3); // positions with p mod 3 = 1 are 1, 4, 7, …
  const r = pipeline.run({ context: story, questions: [Q1, Q2], press: new DropEveryThird(), maxNewTokens: 10 });
  const s = r.stats;
  const perEntry = c.headDim * 2 * 4;
  assert.equal(s.press, 'drop-every-third');
  assert.equal(s.contextTokens, n);
  assert.equal(s.truncatedFrom, null);
  assert.deepEqual(s.keptPerLayer, Array(c.numLayers).fill(kept));
  assert.equal(s.keptPerHead, null);
  assert.equal(s.cacheBytesBefore, n * c.numLayers * c.numKvHeads * perEntry);
  assert.equal(s.cacheBytesAfter, kept * c.numLayers * c.numKvHeads * perEntry);
  assert.ok(Math.abs(s.achievedRatio - (1 - kept / n)) < 1e-12);
  assert.equal(s.questions.length, 2);
  assert.deepEqual(s.questions.map((a) => a.questionTokens), [tok.encode(Q1 + '\n').length, tok.encode(Q2 + '\n').length]);
  assert.deepEqual(s.questions.map((a) => a.answerTokens), r.answerIds.map((a) => a.length));
  assert.ok(s.prefillMs > 0 && s.pressMs > 0 && s.pressMs <= s.prefillMs);
  assert.ok(s.decodeTokensPerSecond > 0);
  const table = formatStats(s);
  assert.match(table, /context tokens +\d+/);
  assert.match(table, new RegExp(`\\n +0 +${kept}\\n`));
});

test('stats list entries per KV head when a press keeps different counts per head', () => {
  const n = tok.encode(story, { bos: true }).length;
  const perHead = Array.from({ length: c.numKvHeads }, (_, g) => {
    let dropped = 0;
    for (let p = 0; p < n; p++) if (p % (g + 2) === 1) dropped++;
    return n - dropped;
  });
  const r = pipeline.run({ context: story, question: Q2, press: new PerHeadPress(), maxNewTokens: 5 });
  assert.deepEqual(r.stats.keptPerHead, Array(c.numLayers).fill(perHead));
  assert.deepEqual(r.stats.keptPerLayer, Array(c.numLayers).fill(perHead.reduce((a, b) => a + b) / c.numKvHeads));
  assert.match(formatStats(r.stats), new RegExp(`per KV head\\n +0 +[\\d.]+  ${perHead.join(' ')}\\n`));
});

test('query-aware: the press sees context + question, and the question is only its suffix', () => {
  const press = new DropEveryThird();
  const ctxIds = tok.encode(story + Q1, { bos: true });
  const r = pipeline.run({ context: story, question: Q1, press, queryAware: true, maxNewTokens: 20 });
  assert.deepEqual(press.rows, Array(c.numLayers).fill(ctxIds.length));
  const cache = model.newCache();
  model.forward(ctxIds, cache, { logits: 'none', press: new DropEveryThird() });
  const ref = generate(model, tok.encode('\n'), { cache, maxNewTokens: 20, temperature: 0 });
  assert.deepEqual(r.answerIds[0], ref.tokens);

  const two = pipeline.run({ context: story, questions: [Q1, Q2], press: new DropEveryThird(), queryAware: true, maxNewTokens: 5 });
  assert.equal(two.stats.compressions, 2);
  assert.equal(two.stats.contextTokens, ctxIds.length + tok.encode(story + Q2, { bos: true }).length);
});

test('answer prefix: the answer continues the prefix, which is not part of it', () => {
  const prompt = [...tok.encode(story, { bos: true }), ...tok.encode(Q2 + '\n' + 'The boy was')];
  const ref = generate(model, prompt, { maxNewTokens: 15, temperature: 0 });
  const r = pipeline.run({ context: story, question: Q2, answerPrefix: 'The boy was', maxNewTokens: 15 });
  assert.deepEqual(r.answerIds[0], ref.tokens);
});

test('streaming: the async iterator and onToken yield the answer tokens in order', async () => {
  const seen: TokenEvent[] = [];
  const it = pipeline.stream({ context: story, questions: [Q1, Q2], press: new DropEveryThird(), maxNewTokens: 12, onToken: (e) => seen.push(e) });
  const events: TokenEvent[] = [];
  let r = await it.next();
  while (!r.done) {
    events.push(r.value);
    r = await it.next();
  }
  const result = r.value;
  assert.deepEqual(events, seen);
  for (const q of [0, 1]) {
    const mine = events.filter((e) => e.question === q);
    assert.deepEqual(mine.map((e) => e.id), result.answerIds[q]);
    assert.equal(mine.map((e) => e.text).join(''), result.answers[q]);
  }
});

test('a long context is truncated to leave room for the question and the answer', () => {
  const long = (story + '\n').repeat(2);
  const all = tok.encode(long, { bos: true }).length;
  const q = tok.encode(Q1 + '\n').length;
  const r = pipeline.run({ context: long, question: Q1, maxNewTokens: 10 });
  assert.equal(r.stats.truncatedFrom, all);
  assert.equal(r.stats.contextTokens, c.maxPositionEmbeddings - q - 10);
  const fixed = pipeline.run({ context: long, question: Q1, maxNewTokens: 10, maxContextLength: 300 });
  assert.equal(fixed.stats.contextTokens, 300);
});

test('bad requests are one-line PipelineErrors', () => {
  const cases: [() => unknown, RegExp][] = [
    [() => pipeline.run({ context: '' }), /^the context is empty$/],
    [() => pipeline.run({ context: ' \n ' }), /^the context is empty$/],
    [() => pipeline.compress(''), /^the context is empty$/],
    [() => pipeline.run({ context: story, question: 'a', questions: ['b'] }), /either question or questions/],
    [() => pipeline.run({ context: story.repeat(2), question: Q1, maxContextLength: 505 }), /the question takes \d+ tokens but only 7 positions remain after the 505-position context \(model window 512\)/],
    [() => pipeline.run({ context: story, question: Q1, maxNewTokens: -1 }), /maxNewTokens must be an integer ≥ 0/],
    [() => pipeline.run({ context: story, maxContextLength: 0 }), /maxContextLength must be an integer ≥ 1/],
  ];
  for (const [f, re] of cases) {
    assert.throws(f, (e: Error) => e instanceof PipelineError && re.test(e.message) && !e.message.includes('\n'));
  }
});

test('KeyRerotationPress: questions start right after the n_kept renumbered entries', () => {
  const n = tok.encode(story, { bos: true }).length;
  const kept = Math.floor(n * 0.5);
  const compressed = pipeline.compress(story, { press: new KeyRerotationPress(new KnormPress(0.5)) });
  assert.equal(compressed.contextEnd, kept);
  assert.deepEqual(compressed.cache.layers[0].headPositions(0), Int32Array.from({ length: kept }, (_, i) => i));
  const cache = model.newCache();
  model.forward(tok.encode(story, { bos: true }), cache, { logits: 'none', press: new KeyRerotationPress(new KnormPress(0.5)) });
  const ref = generate(model, tok.encode(Q1 + '\n'), { cache, maxNewTokens: 20, temperature: 0 });
  assert.deepEqual(compressed.answer(Q1, { maxNewTokens: 20 }).ids, ref.tokens);
});

test('a head-adaptive press from the registry: kept entries per head as the cache holds them', () => {
  const n = tok.encode(story, { bos: true }).length;
  const cache = model.newCache();
  model.forward(tok.encode(story, { bos: true }), cache, { logits: 'none', press: presses.create('adakv_expected_attention', 0.5) });
  const r = pipeline.run({ context: story, question: Q1, press: presses.create('adakv_expected_attention', 0.5), maxNewTokens: 5 });
  assert.ok(r.stats.keptPerHead !== null, 'AdaKV keeps different counts per head');
  assert.deepEqual(r.stats.keptPerHead, cache.lengths());
  // AdaKV redistributes the budget: floor(n/2) entries per head on average in every layer.
  assert.deepEqual(r.stats.keptPerLayer, Array(c.numLayers).fill(Math.floor(n * 0.5)));
});

test('a decoding press acts on the question and the answer only, and refuses several questions', () => {
  const opts = { targetSize: 300, compressionInterval: 4 };
  const make = () => new DecodingPress(new KnormPress(0), opts);
  const ctxIds = tok.encode(story, { bos: true });
  const cache = model.newCache();
  model.forward(ctxIds, cache, { logits: 'none' });
  const ref = generate(model, tok.encode(Q1 + '\n'), { cache, press: make(), maxNewTokens: 30, temperature: 0 });
  const r = pipeline.run({ context: story, question: Q1, press: make(), maxNewTokens: 30 });
  assert.deepEqual(r.answerIds[0], ref.tokens);
  assert.equal(r.stats.cacheBytesAfter, r.stats.cacheBytesBefore, 'nothing is evicted during the context prefill');
  const entries = r.stats.questions[0].cacheBytesEnd / (c.numLayers * c.numKvHeads * c.headDim * 8);
  assert.ok(entries >= 300 && entries <= 300 + 4 - 1, `entries per head at the end: ${entries}`);
  assert.throws(() => pipeline.run({ context: story, questions: [Q1, Q2], press: make() }), /a decoding press \(decoding_knorm\) compresses while it answers, so it cannot answer several questions from one context \(got 2\)/);
  assert.throws(() => pipeline.run({ context: story, questions: [Q1, Q2], press: new PrefillDecodingPress(new KnormPress(0.5), make()) }), /cannot answer several questions/);
});
