import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Backend } from '../src/backend/backend.js';
import { JsBackend } from '../src/backend/js/kernels.js';
import type { KVCache } from '../src/cache/kv-cache.js';
import { BatchDecoder } from '../src/model/batch-decode.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import { Model } from '../src/model/model.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { presses } from '../src/presses/index.js';
import { createServer } from '../src/serve/server.js';
import { fastBackends } from './helpers/backends.js';
import { postJson } from './helpers/serve.js';

const story = readFileSync(join(packageRoot(), 'examples/story.txt'), 'utf8');

/** Prompts of different lengths, so that the rows of a batch sit at different positions. */
const PROMPTS = ['Once upon a time', 'The little dog ran to the park and', 'Lily had a red ball. She', 'One day, a bird', 'Tom and his mom went to the shop to buy'];

const argmax = (l: Float32Array) => l.reduce((b, x, i) => (x > l[b] ? i : b), 0);

async function storiesOn(backend: Backend, weights?: 'bf16' | 'q8_0'): Promise<Model> {
  const m = await loadModel(undefined, { backend });
  return new Model(m.config, m.weights, { backend, tokenizer: m.tokenizer, source: 'stories260K', weights });
}

for (const backend of [new JsBackend(), ...fastBackends]) {
  for (const weights of [undefined, 'bf16', 'q8_0'] as const) {
    test(`BatchDecoder on ${backend.name}, ${weights ?? 'f32'} weights: every row's logits are bit-identical to its own single-row forward, 24 greedy steps`, async () => {
      const model = await storiesOn(backend, weights);
      const tok = model.tokenizer!;
      const single = PROMPTS.map(() => model.newCache()), batched = PROMPTS.map(() => model.newCache());
      const next: number[] = [];
      PROMPTS.forEach((p, r) => {
        const ids = tok.encode(p, { bos: true });
        next.push(argmax(model.forward(ids, single[r])));
        model.forward(ids, batched[r]);
      });
      const decoder = new BatchDecoder(model);
      const seen = new Set<number>();
      for (let s = 0; s < 24; s++) {
        const rows = decoder.step(next, batched);
        for (let r = 0; r < PROMPTS.length; r++) {
          const own = model.forward([next[r]], single[r]);
          assert.deepEqual(rows[r], own, `step ${s}, row ${r} (position ${batched[r].nextPosition - 1})`);
          assert.equal(batched[r].nextPosition, single[r].nextPosition);
          next[r] = argmax(own);
          seen.add(next[r]);
        }
      }
      // The rows really differ (a batch that copied one row into all would fail above, but make it plain).
      assert.ok(seen.size > 10, `only ${seen.size} distinct tokens`);
      for (const c of [...single, ...batched]) c.dispose();
    });
  }
}

test('BatchDecoder on copy-on-write clones of one compressed context: each clone decodes as alone, the context is untouched', async () => {
  const model = await storiesOn(fastBackends[0] ?? new JsBackend());
  const pipeline = new Pipeline(model);
  const ctx = pipeline.compress(story, { press: presses.create('expected_attention', 0.5), reserve: 64 });
  const lengthsBefore = JSON.stringify(ctx.cache.lengths());
  const tok = model.tokenizer!;
  const questions = ['Who was in the story?', 'What happened at the end?', 'Where did they go?'];
  const alone: KVCache[] = [], together: KVCache[] = [];
  const next: number[] = [];
  for (const q of questions) {
    const ids = tok.encode(q, { bos: false });
    const a = ctx.cache.clone(), b = ctx.cache.clone();
    next.push(argmax(model.forward(ids, a)));
    model.forward(ids, b);
    alone.push(a);
    together.push(b);
  }
  const decoder = new BatchDecoder(model);
  for (let s = 0; s < 16; s++) {
    const rows = decoder.step(next, together);
    for (let r = 0; r < questions.length; r++) {
      const own = model.forward([next[r]], alone[r]);
      assert.deepEqual(rows[r], own);
      next[r] = argmax(own);
    }
  }
  assert.equal(JSON.stringify(ctx.cache.lengths()), lengthsBefore);
});

test('BatchDecoder: a bad step leaves every cache as it was, and bad arguments get a clear error', async () => {
  const model = await storiesOn(new JsBackend());
  const caches = [model.newCache(), model.newCache()];
  model.forward([1, 400, 401], caches[0]);
  model.forward([1, 402], caches[1]);
  const decoder = new BatchDecoder(model);
  const before = caches.map((c) => ({ next: c.nextPosition, lengths: JSON.stringify(c.lengths()) }));
  assert.throws(() => decoder.step([5, model.config.vocabSize], caches), /token id 512 outside the vocabulary \[0, 512\)/);
  assert.throws(() => decoder.step([5, 6], [caches[0], caches[0]]), /a cache appears twice/);
  assert.throws(() => decoder.step([5], caches), /1 tokens for 2 caches/);
  // A failure inside the pass, after both caches took the token in the first layers, rolls every cache back.
  const be = model.backend, siluMul = be.siluMul;
  let calls = 0;
  be.siluMul = (gate, up, n) => {
    if (++calls === 2) throw new Error('kernel failed');
    siluMul.call(be, gate, up, n);
  };
  try {
    assert.throws(() => decoder.step([5, 6], caches), /kernel failed/);
  } finally {
    be.siluMul = siluMul;
  }
  caches.forEach((c, r) => assert.deepEqual({ next: c.nextPosition, lengths: JSON.stringify(c.lengths()) }, before[r]));
  // And the next good step is exactly the single-row one.
  const other = model.newCache();
  model.forward([1, 400, 401], other);
  assert.deepEqual(decoder.step([7, 8], caches)[0], model.forward([7], other));
});

test('server: concurrent greedy answers decode in batches and each equals its answer alone (contexts and plain prompts)', async () => {
  const m = await loadModel(undefined, { backend: fastBackends[0] ?? new JsBackend() });
  const model = new Model({ ...m.config, maxPositionEmbeddings: 4096 }, m.weights, { backend: m.backend, tokenizer: m.tokenizer, source: 'stories260K' });
  const server = createServer({ model, modelId: 'stories260K' });
  const url = await server.app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const post = (path: string, body: unknown) => postJson(url, path, body);
    const ctx = await post('/v1/contexts', { text: story, kvpress: { press: 'expected_attention', compression_ratio: 0.5 } });
    const bodies = [
      ...['What did Lily find?', 'Who was there?', 'What happened next?', 'Where was the ball?'].map((q) => ({ messages: [{ role: 'user', content: q }], kvpress: { context_id: ctx.id } })),
      ...PROMPTS.slice(0, 4).map((p) => ({ messages: [{ role: 'user', content: p }] })),
    ].map((b) => ({ model: 'stories260K', max_tokens: 40, temperature: 0, ...b }));
    const alone: string[] = [];
    for (const b of bodies) alone.push((await post('/v1/chat/completions', b)).choices[0].message.content);
    assert.equal(server.batch.rows, 0, 'one request at a time never batches');
    const together = await Promise.all(bodies.map((b) => post('/v1/chat/completions', b)));
    assert.deepEqual(together.map((a) => a.choices[0].message.content), alone);
    // Most decode steps of the 8 answers ran in batches (a few run before the others arrive).
    const decodeSteps = together.reduce((s, a) => s + a.usage.completion_tokens - 1, 0);
    assert.ok(server.batch.rows >= decodeSteps / 2, `${server.batch.rows} of ${decodeSteps} decode steps batched`);
    assert.ok(server.batch.rows / server.batch.batches > 2, `${server.batch.rows} rows in ${server.batch.batches} batches`);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, new RegExp(`^kvpress_batched_decode_steps_total ${server.batch.rows}$`, 'm'));
  } finally {
    await server.shutdown(1000);
  }
});
