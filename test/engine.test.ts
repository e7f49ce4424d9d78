import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { LayerContext } from '../src/model/layer-context.js';
import { loadLlama2c } from '../src/model/loaders/llama2c.js';
import { defaultModelPath, loadModel, packageRoot } from '../src/model/load.js';
import { generate } from '../src/pipeline/generate.js';

interface RefCase {
  prompt: string;
  promptTokens: number[];
  greedyTokens: number[];
  greedyText: string;
  logitsAt: Record<string, number[]>;
  meanNllTeacherForced: number;
}
const reference = JSON.parse(readFileSync(join(packageRoot(), 'models/stories260K/reference.json'), 'utf8')) as { cases: RefCase[] };
const model = await loadModel();
const V = model.config.vocabSize;

test('stories260K config is read from the checkpoint header', () => {
  const c = model.config;
  assert.deepEqual([c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize, c.maxPositionEmbeddings], [64, 172, 5, 8, 4, 8, 512, 512]);
  assert.equal(c.tieWordEmbeddings, true);
});

for (const ref of reference.cases) {
  test(`tokenizer reproduces the reference prompt tokens: ${JSON.stringify(ref.prompt.slice(0, 30))}`, () => {
    assert.deepEqual(model.tokenizer!.encode(ref.prompt, { bos: true }), ref.promptTokens);
    assert.equal(model.tokenizer!.decode(ref.greedyTokens), ref.greedyText);
  });

  test(`logits match the float64 reference within 2e-4: ${JSON.stringify(ref.prompt.slice(0, 30))}`, () => {
    const all = [...ref.promptTokens, ...ref.greedyTokens];
    const logits = model.forward(all, model.newCache(), { logits: 'all' });
    let worst = 0;
    for (const [pos, expected] of Object.entries(ref.logitsAt)) {
      assert.equal(expected.length, V);
      for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(logits[Number(pos) * V + i] - expected[i]));
    }
    assert.ok(worst < 2e-4, `max abs logit error ${worst}`);
  });

  test(`teacher-forced mean NLL matches the reference within 1e-4: ${JSON.stringify(ref.prompt.slice(0, 30))}`, () => {
    const all = [...ref.promptTokens, ...ref.greedyTokens];
    const logits = model.forward(all, model.newCache(), { logits: 'all' });
    let total = 0;
    for (let p = 0; p + 1 < all.length; p++) {
      const row = logits.subarray(p * V, (p + 1) * V);
      const max = Math.max(...row);
      let sum = 0;
      for (const x of row) sum += Math.exp(x - max);
      total += max + Math.log(sum) - row[all[p + 1]];
    }
    const nll = total / (all.length - 1);
    assert.ok(Math.abs(nll - ref.meanNllTeacherForced) < 1e-4, `NLL ${nll} vs ${ref.meanNllTeacherForced}`);
  });

  test(`greedy generation reproduces the reference tokens and text: ${JSON.stringify(ref.prompt.slice(0, 30))}`, () => {
    const r = generate(model, ref.promptTokens, { maxNewTokens: ref.greedyTokens.length, temperature: 0 });
    assert.deepEqual(r.tokens, ref.greedyTokens);
    assert.equal(r.text, ref.greedyText);
  });
}

test('incremental decode equals a full-sequence forward at every step (≤ 1e-5)', () => {
  const ids = [...reference.cases[0].promptTokens, ...reference.cases[0].greedyTokens.slice(0, 30)];
  const full = model.forward(ids, model.newCache(), { logits: 'all' });
  const cache = model.newCache();
  const prefix = 4;
  let worst = 0;
  const first = model.forward(ids.slice(0, prefix), cache, { logits: 'all' });
  for (let i = 0; i < prefix * V; i++) worst = Math.max(worst, Math.abs(first[i] - full[i]));
  for (let p = prefix; p < ids.length; p++) {
    const step = model.forward([ids[p]], cache, { logits: 'last' });
    for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(step[i] - full[p * V + i]));
  }
  assert.ok(worst <= 1e-5, `max abs difference ${worst}`);
});

test('chunked prefill equals a single prefill', () => {
  const ids = [...reference.cases[1].promptTokens, ...reference.cases[1].greedyTokens];
  const full = model.forward(ids, model.newCache(), { logits: 'all' });
  const cache = model.newCache();
  model.forward(ids.slice(0, 17), cache, { logits: 'none' });
  const rest = model.forward(ids.slice(17), cache, { logits: 'all' });
  let worst = 0;
  for (let i = 0; i < rest.length; i++) worst = Math.max(worst, Math.abs(rest[i] - full[17 * V + i]));
  assert.ok(worst <= 1e-5, `max abs difference ${worst}`);
});

/** Keeps the last n entries of every head during the prefill only. */
const keepLast = (n: number) => ({
  calls: 0,
  compress(ctx: LayerContext) {
    if (!ctx.isPrefill) return null;
    this.calls++;
    return Array.from(ctx.cache.lengths, (len) => Int32Array.from({ length: Math.min(n, len) }, (_, i) => len - Math.min(n, len) + i));
  },
});

test('a compressor really frees cache memory, keeps positions, and generation continues', () => {
  const prompt = [...reference.cases[0].promptTokens, ...reference.cases[0].greedyTokens.slice(0, 45)];
  const full = generate(model, prompt, { maxNewTokens: 20 });
  const press = keepLast(10);
  const cache = model.newCache();
  model.forward(prompt, cache, { logits: 'none', press });
  assert.equal(press.calls, model.config.numLayers);
  const entryBytes = 2 * model.config.headDim * 4;
  assert.equal(cache.bytes(), model.config.numLayers * model.config.numKvHeads * 10 * entryBytes);
  // Evicted entries are released: what stays allocated is the kept entries (and their positions)
  // plus at most one partly used page per (layer, KV head).
  const heads = model.config.numLayers * model.config.numKvHeads;
  assert.ok(cache.allocatedBytes() <= cache.bytes() + 4 * heads * 10 + heads * cache.pool.pageBytes, 'evicted entries are released');
  assert.deepEqual(Array.from(cache.layers[0].headPositions(0)), Array.from({ length: 10 }, (_, i) => prompt.length - 10 + i));
  assert.equal(cache.nextPosition, prompt.length, 'positions continue from the uncompressed length');

  const compressed = generate(model, prompt, { maxNewTokens: 20, press: keepLast(10) });
  assert.equal(compressed.tokens.length, 20);
  assert.equal(full.cache.bytes() - compressed.cache.bytes(), model.config.numLayers * model.config.numKvHeads * (prompt.length - 10) * entryBytes);
  const words = compressed.text.split(/\s+/).filter(Boolean);
  assert.ok(words.length >= 3, `generated "${compressed.text}"`);
});

test('per-head variable lengths: heads keep different counts and attention still runs', () => {
  const prompt = reference.cases[1].promptTokens;
  const press = {
    compress(ctx: LayerContext) {
      if (!ctx.isPrefill) return null;
      return Array.from(ctx.cache.lengths, (len, g) => Int32Array.from({ length: len - 2 * g }, (_, i) => i + 2 * g));
    },
  };
  const r = generate(model, prompt, { maxNewTokens: 10, press });
  const lengths = r.cache.lengths()[0];
  assert.deepEqual(lengths, [0, 1, 2, 3].map((g) => prompt.length - 2 * g + 9));
  assert.equal(r.tokens.length, 10);
});

test('cache truncate restores the exact state, clone is independent', () => {
  const prompt = reference.cases[0].promptTokens;
  const cache = model.newCache();
  model.forward(prompt, cache, { logits: 'none', press: keepLast(3) });
  const snapshot = cache.clone();
  const bytes = cache.bytes();
  const a = generate(model, [400, 401], { cache, maxNewTokens: 5 });
  cache.truncate(prompt.length);
  assert.equal(cache.bytes(), bytes);
  for (let l = 0; l < cache.layers.length; l++) {
    for (let g = 0; g < model.config.numKvHeads; g++) {
      // The accessors return a per-head transient shared by clones: copy before comparing.
      assert.deepEqual(cache.layers[l].headKeys(g).slice(), snapshot.layers[l].headKeys(g));
      assert.deepEqual(cache.layers[l].headValues(g).slice(), snapshot.layers[l].headValues(g));
      assert.deepEqual(cache.layers[l].headPositions(g).slice(), snapshot.layers[l].headPositions(g));
    }
  }
  const b = generate(model, [400, 401], { cache, maxNewTokens: 5 });
  assert.deepEqual(b.tokens, a.tokens);
  assert.throws(() => cache.truncate(1e9), /outside/);
});

test('sampling is reproducible per seed and respects top-k = 1 as greedy', () => {
  const prompt = reference.cases[0].promptTokens;
  const s1 = generate(model, prompt, { maxNewTokens: 30, temperature: 1, topP: 0.9, seed: 7 });
  const s2 = generate(model, prompt, { maxNewTokens: 30, temperature: 1, topP: 0.9, seed: 7 });
  assert.deepEqual(s1.tokens, s2.tokens);
  const k1 = generate(model, prompt, { maxNewTokens: 30, temperature: 1, topK: 1, seed: 3 });
  assert.deepEqual(k1.tokens, reference.cases[0].greedyTokens.slice(0, 30));
});

test('bad input: clear errors naming the file and the problem', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvpress-'));
  assert.throws(() => loadLlama2c(join(dir, 'missing.bin')), /missing\.bin: cannot open checkpoint \(ENOENT\)/);
  const good = readFileSync(defaultModelPath());
  const truncated = join(dir, 'truncated.bin');
  writeFileSync(truncated, good.subarray(0, 5000));
  assert.throws(() => loadLlama2c(truncated), /truncated\.bin: truncated checkpoint: 5000 bytes, the header describes 1056540/);
  const tiny = join(dir, 'tiny.bin');
  writeFileSync(tiny, good.subarray(0, 10));
  assert.throws(() => loadLlama2c(tiny), /tiny\.bin: truncated checkpoint: 10 bytes/);
  const versioned = join(dir, 'v1.bin');
  const v = Buffer.from(good.subarray(0, 256));
  v.writeUInt32LE(0x616b3432, 0);
  writeFileSync(versioned, v);
  assert.throws(() => loadLlama2c(versioned), /"ak42"/);
  const absurd = join(dir, 'absurd.bin');
  const h = Buffer.from(good.subarray(0, 64));
  h.writeInt32LE(1 << 30, 0);
  writeFileSync(absurd, h);
  assert.throws(() => loadLlama2c(absurd), /absurd\.bin: invalid hiddenSize/);
  assert.throws(() => model.forward([600], model.newCache()), /token id 600 outside the vocabulary/);
  assert.throws(() => model.forward(new Array(513).fill(5), model.newCache(), { logits: 'none' }), /513 tokens exceed the model's context of 512/);
  assert.throws(() => generate(model, []), /prompt is empty/);
});

test('streamed pieces concatenate to the full decode, multi-byte characters included', async () => {
  const { TokenStream } = await import('../src/tokenizer/stream.js');
  const tok = model.tokenizer!;
  const ids = tok.encode('Zoë saw 日本 and a café.', { bos: false });
  assert.ok(ids.some((id) => id >= 3 && id < 259), 'the text needs byte-fallback tokens');
  const stream = new TokenStream(tok);
  const pieces = ids.map((id) => stream.push(id));
  assert.equal(pieces.join(''), ' Zoë saw 日本 and a café.');
  assert.ok(!pieces.some((p) => p.includes('\uFFFD')));
});
