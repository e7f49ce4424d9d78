import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { createBackend } from '../src/backend/index.js';
import type { KVCache } from '../src/cache/kv-cache.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import { generate } from '../src/pipeline/generate.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { presses } from '../src/presses/index.js';
import { Generation } from '../src/serve/decode.js';
import { StopMatcher } from '../src/serve/stop.js';
import { readSse, startServer, type RunningServer } from './helpers/serve.js';

// The references run in this process on the same backend the server picks.
const model = await loadModel(undefined, { backend: createBackend() });
const tok = model.tokenizer!;
const story = readFileSync(join(packageRoot(), 'examples/story.txt'), 'utf8');
const window = model.config.maxPositionEmbeddings;

let server: RunningServer;
let client: OpenAI;
before(async () => {
  server = await startServer(['--max-queue', '32']);
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
after(async () => {
  assert.equal(await server.stop(), 0, server.stderr());
});

const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });

test('Generation steps give exactly the tokens of generate (greedy and seeded sampling, with a press)', () => {
  const ids = tok.encode('Once upon a time', { bos: true });
  for (const opts of [{ temperature: 0 }, { temperature: 1, topP: 0.9, seed: 7 }]) {
    const ref = generate(model, ids, { maxNewTokens: 40, ...opts, press: presses.create('knorm', 0.5) });
    const g = new Generation(model, ids, { maxNewTokens: 40, ...opts, press: presses.create('knorm', 0.5) });
    let text = '';
    for (let t = g.step(); t; t = g.step()) text += t.text;
    assert.deepEqual(g.tokens, ref.tokens);
    assert.equal(text, ref.text);
    // The reference cache also holds every decoded token but the last.
    const decoded = (ref.tokens.length - 1) * model.config.numLayers * model.config.numKvHeads;
    assert.equal(g.measure!.keptEntries, ref.cache.lengths().flat().reduce((a, b) => a + b, 0) - decoded);
  }
});

test('Generation keeps its cache after the last token until release(), and stop() releases it mid-answer', () => {
  const ids = tok.encode('Once upon a time', { bos: true });
  const caches = new Set<KVCache>();
  const g = new Generation(model, ids, { maxNewTokens: 12, temperature: 0, caches });
  while (g.step());
  assert.equal(caches.size, 1, 'the ended generation let its cache go before release()');
  const [cache] = caches;
  const c = model.config;
  // The prompt and every token fed back (all but the last) are still in it, in every (layer, KV head).
  assert.deepEqual(cache.lengths().flat(), new Array(c.numLayers * c.numKvHeads).fill(ids.length + g.tokens.length - 1));
  g.release();
  assert.equal(caches.size, 0);
  assert.deepEqual(cache.lengths().flat(), new Array(c.numLayers * c.numKvHeads).fill(0));
  g.release();
  const h = new Generation(model, ids, { maxNewTokens: 12, temperature: 0, caches });
  h.step();
  h.step();
  assert.equal(caches.size, 1);
  h.stop();
  assert.equal(caches.size, 0);
  assert.equal(h.step(), null);
});

test('StopMatcher cuts at the earliest stop string and never sends part of one', () => {
  const m = new StopMatcher(['Lily', 'END']);
  const sent = ['Once', ' there was L', 'il', 'y and'].map((p) => m.push(p));
  assert.deepEqual(sent, ['Once', ' there was ', '', '']);
  assert.equal(m.output, 'Once there was ');
  assert.ok(m.stopped);
  const n = new StopMatcher(['xyz']);
  assert.equal(n.push('abx'), 'ab');
  assert.equal(n.push('y'), '');
  assert.equal(n.flush(), 'xy');
});

test('openai client: a chat completion is the library generate() on the same prompt, with usage and the kvpress block', async () => {
  const ref = generate(model, tok.encode('Once upon a time', { bos: true }), { maxNewTokens: 30, temperature: 0 });
  const r = await client.chat.completions.create({ model: 'stories260K', messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 30, temperature: 0 });
  assert.equal(r.choices[0].message.content, ref.text);
  assert.equal(r.choices[0].finish_reason, ref.tokens.length === 30 ? 'length' : 'stop');
  assert.equal(r.usage!.prompt_tokens, 5);
  assert.equal(r.usage!.completion_tokens, ref.tokens.length);
  const kv = (r.usage as any).kvpress;
  assert.equal(kv.press, null);
  assert.equal(kv.entries_kept, kv.entries);
  assert.equal(kv.kv_bytes_before, 5 * model.config.numLayers * model.config.numKvHeads * model.config.headDim * 2 * 4);
});

test('openai client: streamed chat equals the non-streamed answer; a per-request press is applied and reported', async () => {
  const body = { model: 'stories260K', messages: [{ role: 'user' as const, content: story.slice(0, 600) }], max_tokens: 25, temperature: 0, kvpress: { press: 'snapkv', compression_ratio: 0.5, options: { windowSize: 8 } } };
  const plain = await client.chat.completions.create(body as any);
  const stream = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } } as any);
  let text = '', finish = null, usage: any = null;
  for await (const chunk of stream as any) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      finish = c.finish_reason ?? finish;
    }
  }
  assert.equal(text, plain.choices[0].message.content);
  assert.equal(finish, plain.choices[0].finish_reason);
  // The same press in the library: generate with snapkv on the same ids.
  const ids = tok.encode(story.slice(0, 600), { bos: true });
  const ref = generate(model, ids, { maxNewTokens: 25, temperature: 0, press: presses.create('snapkv', 0.5, { windowSize: 8 }) });
  assert.equal(text, ref.text);
  assert.equal(usage.kvpress.press, 'snapkv');
  const decoded = (ref.tokens.length - 1) * model.config.numLayers * model.config.numKvHeads;
  assert.equal(usage.kvpress.entries_kept, ref.cache.lengths().flat().reduce((a, b) => a + b, 0) - decoded);
  assert.ok(Math.abs(usage.kvpress.entries_kept / usage.kvpress.entries - 0.5) < 0.02);
  assert.ok(usage.kvpress.kv_bytes_after < usage.kvpress.kv_bytes_before);
  assert.ok(usage.kvpress.press_ms > 0);
});

test('openai client: completions, seeded sampling is reproducible, stop strings cut the answer', async () => {
  const a = await client.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 20, temperature: 1, seed: 42 });
  const b = await client.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 20, temperature: 1, seed: 42 });
  const ref = generate(model, tok.encode('Once upon a time', { bos: true }), { maxNewTokens: 20, temperature: 1, seed: 42 });
  assert.equal(a.choices[0].text, ref.text);
  assert.equal(b.choices[0].text, ref.text);
  const greedy = generate(model, tok.encode('Once upon a time', { bos: true }), { maxNewTokens: 30, temperature: 0 }).text;
  const cut = greedy.indexOf(' Lily');
  assert.ok(cut > 0, greedy);
  const s = await client.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 30, temperature: 0, stop: [' Lily', 'zzz'] });
  assert.equal(s.choices[0].text, greedy.slice(0, cut));
  assert.equal(s.choices[0].finish_reason, 'stop');
});

test('contexts: compress once, answer with exactly the pipeline (sequential and 8 concurrent answers are identical)', async () => {
  const ctx: any = await client.post('/contexts', { body: { text: story, kvpress: { press: 'expected_attention', compression_ratio: 0.5 } } });
  const ref = new Pipeline(model).compress(story, { press: presses.create('expected_attention', 0.5), reserve: Math.floor(window / 4) });
  assert.equal(ctx.tokens, ref.measure.contextTokens);
  assert.equal(ctx.kept, ref.measure.lengths.flat().reduce((a, b) => a + b, 0));
  assert.equal(ctx.bytes, ref.cache.bytes());
  assert.ok(ctx.allocatedBytes >= ctx.bytes);
  const question = 'What did Lily find?';
  const expected = ref.answer(question, { maxNewTokens: 24 }).text;
  const ask = () => client.chat.completions.create({ model: 'stories260K', messages: [{ role: 'user', content: question }], max_tokens: 24, temperature: 0, kvpress: { context_id: ctx.id } } as any);
  const first = await ask();
  assert.equal(first.choices[0].message.content, expected);
  assert.equal((first.usage as any).kvpress.context_id, ctx.id);
  assert.equal(first.usage!.prompt_tokens, tok.encode(question + '\n', { bos: false }).length);
  const many = await Promise.all(Array.from({ length: 8 }, ask));
  for (const r of many) assert.equal(r.choices[0].message.content, expected);
  // Streamed from the context too.
  const res = await post('/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: question }], max_tokens: 24, temperature: 0, stream: true, kvpress: { context_id: ctx.id } });
  const { events, done } = await readSse(res);
  assert.ok(done);
  assert.equal(events.map((e) => e.choices[0]?.delta?.content ?? '').join(''), expected);

  const got: any = await client.get(`/contexts/${ctx.id}`);
  assert.equal(got.kept, ctx.kept);
  const del: any = await client.delete(`/contexts/${ctx.id}`);
  assert.equal(del.deleted, true);
  await assert.rejects(client.get(`/contexts/${ctx.id}`), (e: any) => e.status === 404 && /deleted/.test(e.error.message));
  await assert.rejects(ask(), (e: any) => e.status === 404 && e.error.param === 'kvpress.context_id');
});

test('contexts are evicted least-recently-used past --max-context-memory, with a clear 404', async () => {
  // 0.5 MiB: two or three stories260K contexts (paged: one or two 64-entry pages per KV head each).
  const small = await startServer(['--max-context-memory', '0.5']);
  try {
    const mk = async () => (await (await fetch(`${small.url}/v1/contexts`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: story.slice(0, 400), kvpress: { press: 'knorm', compression_ratio: 0.5 } }) })).json()) as any;
    const a = await mk(), b = await mk();
    assert.ok(a.allocatedBytes * 2 <= 0.5 * 2 ** 20, `a context takes ${a.allocatedBytes} bytes`);
    // Touch a, so that b is the least recently used when c arrives.
    assert.equal((await fetch(`${small.url}/v1/contexts/${a.id}`)).status, 200);
    const need = Math.floor((0.5 * 2 ** 20) / a.allocatedBytes);
    const more = [];
    for (let i = 2; i < need + 1; i++) more.push(await mk());
    const rb = await fetch(`${small.url}/v1/contexts/${b.id}`);
    assert.equal(rb.status, 404);
    const err = (await rb.json()) as any;
    assert.match(err.error.message, /evicted \(least recently used\).*--max-context-memory/);
    assert.equal(err.error.code, 'context_evicted');
    assert.equal((await fetch(`${small.url}/v1/contexts/${a.id}`)).status, 200);
    const metrics = await (await fetch(`${small.url}/metrics`)).text();
    assert.match(metrics, new RegExp(`kvpress_contexts ${need}\\b`));
  } finally {
    assert.equal(await small.stop(), 0);
  }
});

// Every bad body gets its 4xx in the OpenAI error shape, naming the parameter.
const badBodies: [string, string, unknown, number, string | null, RegExp][] = [
  ['missing messages', '/v1/chat/completions', { model: 'stories260K' }, 400, 'messages', /missing required parameter/],
  ['empty messages', '/v1/chat/completions', { model: 'stories260K', messages: [] }, 400, 'messages', /fewer than 1/],
  ['bad role', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'robot', content: 'x' }] }, 400, 'messages.0.role', /allowed values/],
  ['unknown field', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], frequency_penalty: 1 }, 400, 'frequency_penalty', /unrecognized request argument/],
  ['string max_tokens', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], max_tokens: '5' }, 400, 'max_tokens', /integer/],
  ['negative temperature', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], temperature: -1 }, 400, 'temperature', />= 0/],
  ['top_p 0', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], top_p: 0 }, 400, 'top_p', /> 0/],
  ['n 2', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], n: 2 }, 400, 'n', /<= 1/],
  ['image part', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: [{ type: 'image_url' }] }] }, 400, 'messages.0.content.0.type', /only text parts/],
  ['unknown model', '/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }, 404, 'model', /does not exist; this server serves "stories260K"/],
  ['unknown press', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], kvpress: { press: 'snapk' } }, 400, 'kvpress.press', /unknown press "snapk" \(did you mean snapkv/],
  ['unknown press option', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], kvpress: { press: 'snapkv', options: { windowsize: 8 } } }, 400, 'kvpress.options.windowsize', /has no option "windowsize"/],
  ['bad option value', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], kvpress: { press: 'snapkv', options: { windowSize: -3 } } }, 400, 'kvpress.options.windowSize', /windowSize must be/],
  ['ratio 1', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], kvpress: { press: 'knorm', compression_ratio: 1 } }, 400, 'kvpress.compression_ratio', /ratio must be in \[0, 1\)/],
  ['ratio without press', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], kvpress: { compression_ratio: 0.5 } }, 400, 'kvpress.press', /need kvpress.press/],
  ['unknown kvpress field', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], kvpress: { pres: 'knorm' } }, 400, 'kvpress.pres', /unrecognized/],
  ['unknown context', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], kvpress: { context_id: 'ctx-nope' } }, 404, 'kvpress.context_id', /no context with id ctx-nope/],
  ['context and press', '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], kvpress: { context_id: 'ctx-nope', press: 'knorm' } }, 400, 'kvpress.context_id', /compressed already/],
  ['prompt too long', '/v1/completions', { model: 'stories260K', prompt: 'word '.repeat(2000) }, 400, 'prompt', /more than the model's window of 512/],
  ['prompt not a string', '/v1/completions', { model: 'stories260K', prompt: 42 }, 400, 'prompt', /must be string/],
  ['invalid JSON', '/v1/chat/completions', '{"model": ', 400, null, /JSON/],
  ['context: text and messages', '/v1/contexts', { text: 'a', messages: [{ role: 'user', content: 'b' }] }, 400, 'messages', /exactly one of "text" and "messages"/],
  ['context: empty text', '/v1/contexts', { text: '   ' }, 400, 'text', /the context is empty/],
  ['context: decoding press', '/v1/contexts', { text: story, kvpress: { press: 'decoding_expected_attention' } }, 400, 'kvpress.press', /decoding press/],
  ['context: max_context_length 0', '/v1/contexts', { text: story, max_context_length: 0 }, 400, 'max_context_length', />= 1/],
  ['scores: no press', '/v1/kvpress/scores', { text: 'Once' }, 400, 'press', /missing required parameter: press/],
  ['scores: text too long', '/v1/kvpress/scores', { text: 'word '.repeat(2000), press: 'knorm' }, 400, 'text', /more than the model's window/],
  ['no such route', '/v1/embeddings', { input: 'x' }, 404, null, /no route POST \/v1\/embeddings/],
];

test('every bad body gets its 4xx in the OpenAI error shape', async () => {
  for (const [name, path, body, status, param, message] of badBodies) {
    const r = await post(path, body);
    const j = (await r.json()) as any;
    assert.equal(r.status, status, `${name}: ${JSON.stringify(j)}`);
    assert.deepEqual(Object.keys(j.error).sort(), ['code', 'message', 'param', 'type'], name);
    assert.equal(j.error.param, param, `${name}: ${JSON.stringify(j)}`);
    assert.match(j.error.message, message, name);
    assert.equal(j.error.type, status === 404 ? 'not_found_error' : 'invalid_request_error', name);
  }
  // A 9 MiB body is refused from its Content-Length, before it is read: send the headers and
  // the first bytes only, so that the answer is not lost to a reset upload.
  const huge = await new Promise<{ status: number; body: any }>((resolve, reject) => {
    const req = request(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': String(9 * 2 ** 20) } }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => { resolve({ status: res.statusCode!, body: JSON.parse(text) }); req.destroy(); });
    });
    req.on('error', reject);
    req.write('{"model": "stories260K", "prompt": "');
  });
  assert.equal(huge.status, 413);
  assert.equal(huge.body.error.type, 'request_too_large');
});

test('models, health and metrics', async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['stories260K']);
  const health = (await (await fetch(`${server.url}/health`)).json()) as any;
  assert.equal(health.status, 'ok');
  const m = await (await fetch(`${server.url}/metrics`)).text();
  for (const name of ['kvpress_requests_total', 'kvpress_completion_tokens_total', 'kvpress_queue_depth', 'kvpress_kv_bytes_held', 'kvpress_kv_bytes_saved_total', 'kvpress_contexts', 'kvpress_process_resident_memory_bytes']) {
    assert.match(m, new RegExp(`^${name}`, 'm'), name);
  }
  assert.match(m, /kvpress_requests_total\{route="\/v1\/chat\/completions",status="200"\} \d+/);
});

test('a bounded queue (429), an API key (401), cancellation on disconnect and a graceful SIGTERM', async () => {
  const s = await startServer(['--max-queue', '1', '--api-key', 'sekret']);
  const auth = { authorization: 'Bearer sekret' };
  const at = (path: string, body: unknown, headers: Record<string, string> = auth) => fetch(`${s.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const long = { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 500, temperature: 1, seed: 1, stream: true };
  try {
    assert.equal((await at('/v1/completions', long, {})).status, 401);
    assert.equal((await fetch(`${s.url}/metrics`)).status, 401);
    assert.equal((await fetch(`${s.url}/health`)).status, 200);

    // A streamed request the client abandons after its first chunk is cancelled.
    const ac = new AbortController();
    const first = await fetch(`${s.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify(long), signal: ac.signal });
    const reader = first.body!.getReader();
    await reader.read();
    // While it runs, the queue (1) is full.
    const busy = await at('/v1/completions', { ...long, stream: false });
    assert.equal(busy.status, 429);
    assert.equal(((await busy.json()) as any).error.code, 'queue_full');
    ac.abort();
    let depth = -1;
    for (let i = 0; i < 100 && depth !== 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      depth = Number(/^kvpress_queue_depth (\d+)/m.exec(await (await fetch(`${s.url}/metrics`, { headers: auth })).text())![1]);
    }
    assert.equal(depth, 0, 'the abandoned request is cancelled');
    const tokens = Number(/^kvpress_completion_tokens_total (\d+)/m.exec(await (await fetch(`${s.url}/metrics`, { headers: auth })).text())![1]);
    assert.ok(tokens < 500, `cancelled after ${tokens} tokens`);

    // SIGTERM while a stream runs: the stream finishes with [DONE], the process exits 0.
    const res = await at('/v1/completions', { ...long, max_tokens: 300 });
    const reading = readSse(res);
    await new Promise((r) => setTimeout(r, 30));
    const code = s.stop();
    const { events, done } = await reading;
    assert.ok(done);
    assert.equal(events.at(-1).choices[0].finish_reason, 'length');
    assert.equal(events.map((e) => e.choices[0].text).join('').length > 0, true);
    assert.equal(await code, 0);
  } finally {
    await s.stop();
  }
});
