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
  // One chunk per token: fairness is judged by when each token arrives.
  const server = await startServer(['--max-queue', String(CONCURRENT), '--stream-interval-ms', '0']);
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
      // Round-robin decode steps. Requests reach the server over some time, so the first answers can
      // finish before the last ones start; the claim is about answers that run together. Served one
      // after another, at most one would be running at any moment; here most run at once, and any
      // two that overlap for ≥ 10 tokens get the same share of decode steps while both run.
      const full = outcomes.filter((o) => o.finish === 'length');
      assert.ok(full.length >= CONCURRENT / 2, `${full.length} full-length answers`);
      const peak = Math.max(...full.map((o) => full.filter((p) => p.times[0] <= o.times[0] && o.times[0] < p.finishedAt).length));
      assert.ok(peak >= full.length / 2, `at most ${peak} of ${full.length} full-length answers ran at once`);
      const ratios: number[] = [];
      const perAnswer: number[][] = full.map(() => []);
      for (let i = 0; i < full.length; i++) {
        for (let j = i + 1; j < full.length; j++) {
          const from = Math.max(full[i].times[0], full[j].times[0]), to = Math.min(full[i].finishedAt, full[j].finishedAt);
          const a = full[i].times.filter((x) => x >= from && x <= to).length, b = full[j].times.filter((x) => x >= from && x <= to).length;
          if (Math.max(a, b) < 10) continue;
          ratios.push(Math.min(a, b) / Math.max(a, b));
          perAnswer[i].push(a / b);
          perAnswer[j].push(b / a);
        }
      }
      // Times are when the client read a token: SSE writes are batched and a loaded client reads
      // some sockets late, so single pairs can look uneven. A scheduler that favoured one kind of
      // request (context answers or plain ones) would make half the pairs uneven; one that starved
      // an answer would put it behind most of the others.
      ratios.sort((x, y) => x - y);
      const p10 = ratios[Math.floor(ratios.length / 10)];
      assert.ok(p10 >= 0.75, `over ${ratios.length} pairs of answers running together, a tenth got shares more uneven than ${p10.toFixed(2)}`);
      const medians = perAnswer.filter((r) => r.length > 0).map((r) => r.sort((x, y) => x - y)[r.length >> 1]);
      const slowest = Math.min(...medians);
      assert.ok(slowest >= 0.6, `an answer got a median ${slowest.toFixed(2)} of the tokens of those running with it`);
      rssAfter.push(await rss(server.url));
      t.diagnostic(`round ${round}: up to ${peak} of ${full.length} full-length answers ran at once; over ${ratios.length} overlapping pairs 90 % got shares within ${p10.toFixed(2)}, the slowest answer got a median ${slowest.toFixed(2)} of the others' share; RSS ${(rssAfter[round] / 2 ** 20).toFixed(1)} MiB`);
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
