import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createBackend } from '../src/backend/index.js';
import { benchModelOfShape } from '../src/bench/shapes.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import { createServer, type KvpressServer } from '../src/serve/server.js';
import { postJson } from './helpers/serve.js';

/** The peak of what the server holds, sampled after every scheduler step. */
function peakHeld(server: KvpressServer): { value: number } {
  const peak = { value: 0 };
  const submit = server.scheduler.submit.bind(server.scheduler);
  server.scheduler.submit = (task) => {
    const step = task.step.bind(task);
    task.step = () => {
      const done = step();
      peak.value = Math.max(peak.value, server.kvAllocatedBytes());
      return done;
    };
    submit(task);
  };
  return peak;
}

test('8 concurrent answers on one context hold its pages once: allocated KV ≤ context + 8 private tails', async () => {
  // stories260K with its window widened (as the benchmark has it), so that the context is much
  // larger than an answer's tail.
  const model = await benchModelOfShape('stories260K', createBackend());
  const server = createServer({ model, modelId: 'stories260K' });
  const peak = peakHeld(server);
  const url = await server.app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const post = (path: string, body: unknown) => postJson(url, path, body);
    const story = readFileSync(join(packageRoot(), 'examples/story.txt'), 'utf8').repeat(4);
    const ctx = await post('/v1/contexts', { text: story, kvpress: { press: 'expected_attention', compression_ratio: 0.5 } });
    assert.equal(server.kvAllocatedBytes(), ctx.allocatedBytes);
    const maxTokens = 32;
    const answers = await Promise.all(Array.from({ length: 8 }, () => post('/v1/chat/completions', {
      model: 'stories260K', messages: [{ role: 'user', content: 'What did Lily find?' }], max_tokens: maxTokens, temperature: 0, kvpress: { context_id: ctx.id },
    })));
    const tokens = answers[0].usage.prompt_tokens + maxTokens;
    for (const a of answers) assert.equal(a.choices[0].message.content, answers[0].choices[0].message.content);

    const pool = model.newCache().pool, c = model.config;
    // Private to an answer: the pages of its question and answer, and one copy of the context's
    // last, partly used page, per (layer, KV head); the pool keeps a few idle pages besides.
    const tail = c.numLayers * c.numKvHeads * (Math.ceil(tokens / pool.pageEntries) + 1) * pool.pageBytes;
    const idle = pool.maxIdle * pool.pageBytes;
    const bound = ctx.allocatedBytes + 8 * tail + idle;
    // The property can fail: eight private copies of the context would not fit.
    assert.ok(ctx.allocatedBytes + 8 * ctx.allocatedBytes > bound, `context ${ctx.allocatedBytes} B, bound ${bound} B`);
    assert.ok(peak.value > ctx.allocatedBytes, `the answers held nothing of their own (peak ${peak.value} B)`);
    assert.ok(peak.value <= bound, `peak ${peak.value} B > context ${ctx.allocatedBytes} B + 8 × tail ${tail} B + idle ${idle} B`);
    // Finished answers let their tails go.
    assert.ok(server.kvAllocatedBytes() <= ctx.allocatedBytes + idle, `${server.kvAllocatedBytes()} B held after the answers`);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, new RegExp(`^kvpress_kv_allocated_bytes ${server.kvAllocatedBytes()}$`, 'm'));
  } finally {
    await server.shutdown(1000);
  }
});

test('a streamed answer holds its own cache while it runs and gives every page back once its response is written', async () => {
  const model = await loadModel(undefined, { backend: createBackend() });
  const server = createServer({ model, modelId: 'stories260K' });
  const peak = peakHeld(server);
  const url = await server.app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'stories260K', messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 32, temperature: 0, stream: true }),
    });
    const text = await res.text();
    assert.ok(text.endsWith('data: [DONE]\n\n'), text.slice(-200));
    // While it ran: at least one page per (layer, KV head).
    const pool = model.newCache().pool, c = model.config;
    assert.ok(peak.value >= c.numLayers * c.numKvHeads * pool.pageBytes, `peak ${peak.value} B`);
    // The client has its [DONE]: the answer's cache is gone, nothing is held.
    assert.equal(server.kvAllocatedBytes(), 0);
  } finally {
    await server.shutdown(1000);
  }
});
