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
  /** When each content chunk arrived, ms after the round started. */
  times: number[];
  finishedAt: number;
}

/** One streamed request, read chunk by chunk as it arrives. */
async function stream(url: string, body: unknown, t0: number): Promise<Outcome> {
  const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const out: Outcome = { status: res.status, done: false, finish: null, chunks: 0, times: [], finishedAt: 0 };
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
        if (e.choices[0]?.delta?.content) out.times.push(performance.now() - t0);
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
      // Round-robin decode steps: every full-length answer has started before any of them ends
      // (served one after another, none would overlap), and while all run, each gets the same
      // share of decode steps.
      const full = outcomes.filter((o) => o.finish === 'length');
      assert.ok(full.length >= CONCURRENT / 2, `${full.length} full-length answers`);
      const from = Math.max(...full.map((o) => o.times[0])), to = Math.min(...full.map((o) => o.finishedAt));
      assert.ok(from < to, `the last full-length answer started at ${from.toFixed(0)} ms, the first ended at ${to.toFixed(0)} ms`);
      const shares = full.map((o) => o.times.filter((x) => x >= from && x <= to).length);
      const lo = Math.min(...shares), hi = Math.max(...shares);
      assert.ok(lo >= 0.6 * hi, `tokens per answer while all ran (${from.toFixed(0)}–${to.toFixed(0)} ms): ${lo} to ${hi}`);
      rssAfter.push(await rss(server.url));
      t.diagnostic(`round ${round}: all ${full.length} full-length answers ran together from ${from.toFixed(0)} to ${to.toFixed(0)} ms, each getting ${lo}–${hi} tokens meanwhile; RSS ${(rssAfter[round] / 2 ** 20).toFixed(1)} MiB`);
    }
    // Flat: once two rounds have sized the buffers and the heap, later rounds hold no more memory.
    const growth = rssAfter[ROUNDS - 1] / rssAfter[1];
    assert.ok(growth < 1.15, `RSS after each round: ${rssAfter.map((b) => (b / 2 ** 20).toFixed(1)).join(', ')} MiB`);
    const m = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(m, /^kvpress_queue_depth 0$/m);
    assert.match(m, new RegExp(`^kvpress_contexts ${CONTEXTS}$`, 'm'));
  } finally {
    assert.equal(await server.stop(), 0);
  }
});
