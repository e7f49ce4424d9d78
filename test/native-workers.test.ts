import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { createBackend } from '../src/backend/index.js';
import { loadModel } from '../src/model/load.js';
import { generate } from '../src/pipeline/generate.js';

const prompt = 'Once upon a time, there was a little girl', maxNewTokens = 80;

/** Greedy text of the embedded model on `prompt`, in this thread, on the native backend. */
async function greedy(): Promise<() => string> {
  const model = await loadModel(undefined, { backend: createBackend({ prefer: 'native', threads: 1 }) });
  const ids = model.tokenizer!.encode(prompt, { bos: true });
  return () => generate(model, ids, { maxNewTokens, temperature: 0 }).text;
}

if (!isMainThread && workerData === 'generate') {
  // A worker with its own model: it generates once to hold KV slabs of its own, says "ready",
  // and on "go" generates again.
  const run = await greedy();
  run();
  parentPort!.once('message', () => parentPort!.postMessage(run()));
  parentPort!.postMessage('ready');
} else {
  test('native backend: models in several worker threads of one process keep their own KV pages', async (t) => {
    try {
      if (!createBackend({ prefer: 'native', threads: 1 }).pageMemory) return t.skip('no page memory on this platform');
    } catch {
      return t.skip('no native addon');
    }
    const run = await greedy();
    const want = run();
    // Every worker (and this thread) holds slabs before any of them generates again: slab ids
    // given out per thread collided in the addon's process-wide table, and a worker's attention
    // then read another worker's pages.
    const workers = [0, 1].map(() => new Worker(new URL(import.meta.url), { workerData: 'generate' }));
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
      assert.equal(run(), want);
    } finally {
      await Promise.all(workers.map((w) => w.terminate()));
    }
  });
}
