import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { createBackend } from '../src/backend/index.js';
import { loadModel } from '../src/model/load.js';
import { generate } from '../src/pipeline/generate.js';

test('native backend: models in several worker threads of one process keep their own KV pages', async (t) => {
  let backend;
  try {
    backend = createBackend({ prefer: 'native', threads: 1 });
  } catch {
    return t.skip('no native addon');
  }
  if (!backend.pageMemory) return t.skip('no page memory on this platform');
  const prompt = 'Once upon a time, there was a little girl', maxNewTokens = 80;
  const model = await loadModel(undefined, { backend });
  const want = generate(model, model.tokenizer!.encode(prompt, { bos: true }), { maxNewTokens, temperature: 0 }).text;
  // Every worker (and this thread) holds slabs before any of them generates again: slab ids
  // given out per thread collided in the addon's process-wide table, and a worker's attention
  // then read another worker's pages.
  const workers = [0, 1].map(() => new Worker(new URL('./helpers/generate-worker.js', import.meta.url), { workerData: { prompt, maxNewTokens } }));
  try {
    const next = (w: Worker) => new Promise<string>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    await Promise.all(workers.map(next));
    const texts = await Promise.all(workers.map((w) => {
      const text = next(w);
      w.postMessage('go');
      return text;
    }));
    for (const text of texts) assert.equal(text, want);
    assert.equal(generate(model, model.tokenizer!.encode(prompt, { bos: true }), { maxNewTokens, temperature: 0 }).text, want);
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
});
