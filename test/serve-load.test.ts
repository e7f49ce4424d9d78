import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { packageRoot } from '../src/model/load.js';
import { startServer } from './helpers/serve.js';

const story = readFileSync(join(packageRoot(), 'examples/story.txt'), 'utf8');
const CONCURRENT = 64, CONTEXTS = 8, MAX_TOKENS = 48, ROUNDS = 4;

interface Outcome {
  status: number;
  done: boolean;
  finish: string | null;
  chunks: number;
  finishedAt: number;
}

/** One streamed request, read chunk by chunk as it arrives. */
async function stream(url: string, body: unknown, t0: number): Promise<Outcome> {
  const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const out: Outcome = { status: res.status, done: false, finish: null, chunks: 0, finishedAt: 0 };
  const decoder = new TextDecoder();
  let buf = '';
  for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(part, { stream: true });
    let at;
    while ((at = buf.indexOf('\n\n')) >= 0) {
      const data = buf.slice(0, at).replace(/^data: /, '');
      buf = buf.slice(at + 2);
      if (data === '[DONE]') out.done = true;
      else {
        const e = JSON.parse(data);
        if (e.error) throw new Error(JSON.stringify(e.error));
        out.chunks++;
        out.finish = e.choices[0]?.finish_reason ?? out.finish;
      }
    }
  }
  out.finishedAt = performance.now() - t0;
  return out;
}

async function rss(url: string): Promise<number> {
  const m = await (await fetch(`${url}/metrics`)).text();
  return Number(/^kvpress_process_resident_memory_bytes (\d+)/m.exec(m)![1]);
}

test(`load: ${ROUNDS} rounds of ${CONCURRENT} concurrent streamed requests (half on ${CONTEXTS} contexts): none fails, progress is fair, RSS stays flat`, async (t) => {
  const server = await startServer(['--max-queue', String(CONCURRENT)]);
  try {
    const pressNames = ['expected_attention', 'knorm', 'snapkv', 'streaming_llm'];
    const ids: string[] = [];
    for (let i = 0; i < CONTEXTS; i++) {
      const r = await fetch(`${server.url}/v1/contexts`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: story, kvpress: { press: pressNames[i % 4], compression_ratio: 0.25 + 0.1 * (i % 4) } }) });
      assert.equal(r.status, 201);
      ids.push(((await r.json()) as any).id);
    }
    const rssAfter: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const t0 = performance.now();
      const outcomes = await Promise.all(Array.from({ length: CONCURRENT }, (_, i) => stream(server.url, {
        model: 'stories260K', max_tokens: MAX_TOKENS, temperature: 1, seed: 1000 * round + i, stream: true,
        // EOS is never sampled with this seed set often enough to matter; 'length' finishers measure fairness.
        messages: [{ role: 'user', content: i % 2 ? 'What did they do next?' : `Once upon a time, ${i}` }],
        ...(i % 2 ? { kvpress: { context_id: ids[i % CONTEXTS] } } : { kvpress: { press: 'knorm', compression_ratio: 0.5 } }),
      }, t0)));
      for (const o of outcomes) {
        assert.equal(o.status, 200);
        assert.ok(o.done, 'every stream ends with [DONE]');
        assert.ok(o.finish === 'length' || o.finish === 'stop');
      }
      // Round-robin decode steps: requests admitted together finish together. Served one after
      // another, the first full-length answer would finish at 1/64 of the last one's time.
      const full = outcomes.filter((o) => o.finish === 'length').map((o) => o.finishedAt).sort((a, b) => a - b);
      assert.ok(full.length >= CONCURRENT / 2, `${full.length} full-length answers`);
      assert.ok(full[0] >= 0.6 * full[full.length - 1], `first full answer at ${full[0].toFixed(0)} ms, last at ${full[full.length - 1].toFixed(0)} ms`);
      rssAfter.push(await rss(server.url));
      t.diagnostic(`round ${round}: full-length answers finished between ${full[0].toFixed(0)} and ${full[full.length - 1].toFixed(0)} ms; RSS ${(rssAfter[round] / 2 ** 20).toFixed(1)} MiB`);
    }
    // Flat: once two rounds have sized the buffers and the heap, later rounds hold no more memory.
    const growth = rssAfter[ROUNDS - 1] / rssAfter[1];
    assert.ok(growth < 1.1, `RSS after each round: ${rssAfter.map((b) => (b / 2 ** 20).toFixed(1)).join(', ')} MiB`);
    const m = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(m, /^kvpress_queue_depth 0$/m);
    assert.match(m, new RegExp(`^kvpress_contexts ${CONTEXTS}$`, 'm'));
  } finally {
    assert.equal(await server.stop(), 0);
  }
});
