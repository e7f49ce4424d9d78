import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { createBackend } from '../src/backend/index.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import { generate } from '../src/pipeline/generate.js';

/** The float64 reference's first case: prompt ids and its greedy continuation. */
const reference = (JSON.parse(readFileSync(join(packageRoot(), 'models/stories260K/reference.json'), 'utf8')) as { cases: { promptTokens: number[]; greedyTokens: number[] }[] }).cases[0];

/** Greedy tokens of the embedded model on the reference prompt, in this thread, on the native backend. */
async function greedy(): Promise<() => number[]> {
  const model = await loadModel(undefined, { backend: createBackend({ prefer: 'native', threads: 1 }) });
  return () => generate(model, reference.promptTokens, { maxNewTokens: reference.greedyTokens.length, temperature: 0 }).tokens;
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
    const want = reference.greedyTokens;
    assert.deepEqual(run(), want);
    // Every worker (and this thread) holds slabs before any of them generates again: slab ids
    // given out per thread collided in the addon's process-wide table, and a worker's attention
    // then read another worker's pages.
    const workers = [0, 1].map(() => new Worker(new URL(import.meta.url), { workerData: 'generate' }));
    try {
      const next = (w: Worker) => new Promise<number[] | 'ready'>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      await Promise.all(workers.map(next));
      const answers = await Promise.all(workers.map((w) => {
        const answer = next(w);
        w.postMessage('go');
        return answer;
      }));
      for (const tokens of answers) assert.deepEqual(tokens, want);
      assert.deepEqual(run(), want);
    } finally {
      await Promise.all(workers.map((w) => w.terminate()));
    }
  });
}
