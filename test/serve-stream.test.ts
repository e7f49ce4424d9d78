import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadModel } from '../src/model/load.js';
import type { Model } from '../src/model/model.js';
import { generate } from '../src/pipeline/generate.js';
import { Generation } from '../src/serve/decode.js';
import { createServer, STREAM_INTERVAL_MS } from '../src/serve/server.js';
import { readSse } from './helpers/serve.js';

const model = await loadModel(undefined);
const tok = model.tokenizer!;
const PROMPT = 'Once upon a time';

/** The library's streamed pieces for the prompt (generate's onToken), the empty ones left out: what a client must receive. */
function pieces(m: Model, maxNewTokens: number): string[] & { tokens: number } {
  const out: string[] = [];
  const r = generate(m, tok.encode(PROMPT, { bos: true }), { maxNewTokens, temperature: 0, onToken: (_id, text) => void (text && out.push(text)) });
  return Object.assign(out, { tokens: r.tokens.length });
}

/** A server on `m` with the given interval, one streamed chat request to it: its content deltas, finish reason and usage. */
async function streamed(m: Model, streamIntervalMs: number | undefined, body: Record<string, unknown>) {
  const server = createServer({ model: m, modelId: 'stories260K', streamIntervalMs });
  const url = await server.app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const t0 = performance.now();
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'stories260K', messages: [{ role: 'user', content: PROMPT }], temperature: 0, stream: true, stream_options: { include_usage: true }, ...body }),
    });
    assert.equal(res.status, 200);
    const { events, done } = await readSse(res);
    const ms = performance.now() - t0;
    assert.ok(done, 'the stream ends with [DONE]');
    const deltas = events.map((e) => e.choices[0]?.delta?.content).filter((c): c is string => typeof c === 'string' && c !== '');
    return { deltas, ms, finish: events.map((e) => e.choices[0]?.finish_reason).find((f) => f), usage: events.at(-1).usage };
  } finally {
    await server.shutdown(1000);
  }
}

test('TokenStream.pushMany: batches of ids join to the full decode, a character split over byte tokens held back until complete', async () => {
  const { TokenStream } = await import('../src/tokenizer/stream.js');
  const ids = tok.encode('Zoë saw 日本 and a café.', { bos: false });
  assert.ok(ids.some((id) => id >= 3 && id < 259), 'the text needs byte-fallback tokens');
  // Every cut of the ids into two batches: where the first ends inside 日 or 本 (three byte tokens
  // each), its text is held back and comes with the second.
  let heldBack = 0;
  for (let cut = 0; cut <= ids.length; cut++) {
    const s = new TokenStream(tok);
    const a = s.pushMany(ids.slice(0, cut));
    const b = s.pushMany(ids.slice(cut));
    assert.equal(a + b, ' Zoë saw 日本 and a café.', `cut at ${cut}`);
    assert.ok(!a.includes('\uFFFD'), `cut at ${cut}: ${a}`);
    if (cut > 0 && a === '') heldBack++;
  }
  assert.ok(heldBack >= 4, `only ${heldBack} cuts fell inside a character`);
});

test('Generation with textPerToken false: steps carry no text, takeText gives it in pieces that join to generate\'s', () => {
  const ids = tok.encode(PROMPT, { bos: true });
  const ref = generate(model, ids, { maxNewTokens: 60, temperature: 0 });
  const g = new Generation(model, ids, { maxNewTokens: 60, temperature: 0, textPerToken: false });
  let text = '', n = 0;
  for (let t = g.step(); t; t = g.step()) {
    assert.equal(t.text, '');
    // Taken every 7 tokens, as a writer would every interval.
    if (++n % 7 === 0) text += g.takeText();
  }
  text += g.takeText();
  assert.deepEqual(g.tokens, ref.tokens);
  assert.equal(text, ref.text);
  assert.equal(g.takeText(), '');
  g.release();
});

test('stream interval 0: one content chunk per token, exactly the pieces generate streams', async () => {
  const ref = pieces(model, 40);
  const r = await streamed(model, 0, { max_tokens: 40 });
  assert.deepEqual(r.deltas, [...ref]);
  assert.equal(r.usage.completion_tokens, 40);
});

test('default stream interval: the whole answer in fewer chunks, the first token alone and at once, at most one chunk per interval after it', async () => {
  const ref = pieces(model, 512);
  const r = await streamed(model, undefined, { max_tokens: 512 });
  assert.equal(r.deltas.join(''), ref.join(''));
  assert.equal(r.usage.completion_tokens, ref.tokens);
  // The first token is written as soon as it is sampled, in a chunk of its own.
  assert.equal(r.deltas[0], ref[0]);
  // After it, a write needs STREAM_INTERVAL_MS since the last one; the last chunk goes with [DONE].
  assert.ok(r.deltas.length <= 2 + r.ms / STREAM_INTERVAL_MS, `${r.deltas.length} chunks in ${r.ms.toFixed(1)} ms`);
  assert.ok(r.deltas.length < ref.length, `${ref.length} pieces came in ${r.deltas.length} chunks`);
});

test('default stream interval: a stop string is still cut, and no part of it is sent', async () => {
  const greedy = pieces(model, 60).join('');
  const cut = greedy.indexOf(' Lily');
  assert.ok(cut > 0, greedy);
  const r = await streamed(model, undefined, { max_tokens: 60, stop: [' Lily', 'zzz'] });
  assert.equal(r.deltas.join(''), greedy.slice(0, cut));
  assert.equal(r.finish, 'stop');
});

test('a model whose step is longer than the interval sends every token at once, one chunk each', async () => {
  // A step of at least 3 intervals (busy, as a large model's decode step is).
  const stepMs = 3 * STREAM_INTERVAL_MS;
  const slow: Model = Object.create(model);
  slow.forward = (tokens, cache, opts) => {
    const until = performance.now() + stepMs;
    while (performance.now() < until);
    return model.forward(tokens, cache, opts);
  };
  const ref = pieces(model, 6);
  const r = await streamed(slow, undefined, { max_tokens: 6 });
  assert.deepEqual(r.deltas, [...ref]);
});

test('createServer: a stream interval outside 0 … 60000 ms is refused with its value', () => {
  for (const bad of [-1, 1e9, Number.NaN]) {
    assert.throws(() => createServer({ model, modelId: 'stories260K', streamIntervalMs: bad }), /streamIntervalMs must be a number of milliseconds from 0 to 60000, got/);
  }
});
