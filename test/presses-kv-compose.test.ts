import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Compressor } from '../src/model/layer-context.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import { generate } from '../src/pipeline/generate.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { KVComposePress, prefill } from '../src/presses/index.js';

// KVComposePress's scores, budgets and kept sets are checked against kvpress in golden.test.ts;
// here: its second pass (the cache holds the context twice meanwhile), every entry point that
// prefills (the hook runs inside the forward pass), and a failure leaving no half-compressed cache.

const model = await loadModel();
const tok = model.tokenizer!;
const ids = tok.encode(readFileSync(join(packageRoot(), 'examples/story.txt'), 'utf8').slice(0, 300), { bos: true });
const T = ids.length;

test('kv_compose: the scoring pass sees the context twice, positions T … 2T − 1; then the copy is gone', () => {
  const press = new KVComposePress(0.5);
  let peak = 0, first = -1;
  const probe: Compressor = {
    compress: () => null,
    afterPrefill: (done) => press.afterPrefill({
      ...done,
      forward: (t, o) => done.forward(t, { ...o, press: { compress: (ctx) => { peak = Math.max(peak, ctx.cache.lengths[0]); first = ctx.positions[0]; return o.press.compress(ctx); } } }),
    }),
  };
  const cache = model.newCache();
  model.forward(ids, cache, { press: probe, logits: 'none' });
  assert.equal(peak, 2 * T);
  assert.equal(first, T);
  assert.equal(cache.nextPosition, T);
  const kept = cache.lengths();
  // floor(L·T/2) entries per head over the layers, the same count for every head of a layer.
  assert.equal(kept.reduce((s, l) => s + l[0], 0), Math.floor(model.config.numLayers * T * 0.5));
  for (const l of kept) assert.ok(l.every((n) => n === l[0]));
  // Entries keep their positions (no re-rotation) and come from the context only.
  for (const l of cache.layers) for (let g = 0; g < l.numKvHeads; g++) assert.ok(Array.from(l.headPositions(g)).every((p) => p < T));
});

test('kv_compose compresses the same through prefill, generate and the pipeline', () => {
  const want = prefill(model, ids, { press: new KVComposePress(0.5), logits: 'none' }).cache.lengths();
  const g = generate(model, ids, { press: new KVComposePress(0.5), maxNewTokens: 1 });
  // One answer token: it is never fed back, so generate's cache is the compressed prompt.
  assert.deepEqual(g.cache.lengths(), want);
  const unstructured = prefill(model, ids, { press: new KVComposePress(0.5, { structured: false }), logits: 'none' }).cache.lengths();
  assert.equal(unstructured.flat().reduce((a, b) => a + b, 0), Math.floor(model.config.numLayers * model.config.numKvHeads * T * 0.5));
  const r = new Pipeline(model).run({ context: tok.decode(ids.slice(1)), question: 'Who is it about?', press: new KVComposePress(0.5), maxNewTokens: 4 });
  assert.equal(r.stats.keptPerLayer.reduce((a, b) => a + b, 0), Math.floor(model.config.numLayers * r.stats.contextTokens * 0.5));
});

test('kv_compose after another press evicted: one-line error, the cache emptied as before the prefill', () => {
  const press = new KVComposePress(0.5);
  const evictFirst: Compressor = {
    compress: (ctx) => Array.from({ length: ctx.config.numKvHeads }, () => Int32Array.from({ length: ctx.rows - 1 }, (_, i) => i + 1)),
    afterPrefill: (done) => press.afterPrefill(done),
  };
  const cache = model.newCache();
  assert.throws(() => model.forward(ids, cache, { press: evictFirst, logits: 'none' }), /needs every layer to hold its \d+ entries/);
  assert.equal(cache.nextPosition, 0);
  assert.ok(cache.lengths().flat().every((n) => n === 0));
});
