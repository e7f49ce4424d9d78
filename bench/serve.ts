/**
 * The serve section of `npm run bench` (also `node dist/bench/serve.js` alone): `kvpress serve`
 * against the library on stories260K (context widened to 32768, 1 thread), the server in a worker
 * thread and the clients on this one, over 127.0.0.1.
 *  - one streamed client's tokens/s against `generate` on the same prompt;
 *  - 8 concurrent answers on one compressed context: total tokens/s against one client's, and
 *    the KV the context and each answer hold;
 *  - time to first token of a question on a compressed 2000-token context against the
 *    question's own prefill.
 */
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { createBackend } from '../src/backend/index.js';
import { benchModelOfShape } from '../src/bench/shapes.js';
import { generate } from '../src/pipeline/generate.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { presses } from '../src/presses/index.js';

const STORY = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her dog Max. One day, Lily found a shiny red ball under a big tree. She was very happy and wanted to show it to her mom. ';

interface StreamTiming {
  tokens: number;
  firstMs: number;
  totalMs: number;
}

/**
 * One streamed request over node:http (undici's fetch adds milliseconds per chunk on the client
 * side, which would be charged to the server).
 */
function streamed(url: string, body: Record<string, unknown>): Promise<StreamTiming> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}`));
      let firstMs = 0, tokens = 0, buf = '';
      res.setEncoding('utf8');
      res.on('data', (part: string) => {
        buf += part;
        let at;
        while ((at = buf.indexOf('\n\n')) >= 0) {
          const data = buf.slice(0, at).slice(6);
          buf = buf.slice(at + 2);
          if (data === '[DONE]') continue;
          const e = JSON.parse(data);
          if (e.choices?.[0]?.delta?.content) {
            if (tokens === 0) firstMs = performance.now() - t0;
            tokens++;
          }
        }
      });
      res.on('end', () => resolve({ tokens, firstMs, totalMs: performance.now() - t0 }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(JSON.stringify({ model: 'stories260K', stream: true, temperature: 0, ...body }));
  });
}

async function post(url: string, path: string, body: unknown): Promise<any> {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  return res.json();
}

const best = <T>(xs: T[], key: (x: T) => number) => xs.reduce((a, b) => (key(b) > key(a) ? b : a));

export async function runServeBench(opts: { repeats?: number } = {}): Promise<{ markdown: string; json: Record<string, unknown> }> {
  const repeats = opts.repeats ?? 3;
  const worker = new Worker(join(fileURLToPath(new URL('.', import.meta.url)), 'serve-worker.js'));
  const url = await new Promise<string>((resolve, reject) => {
    worker.once('message', (m) => resolve(m.url));
    worker.once('error', reject);
  });
  try {
    const model = await benchModelOfShape('stories260K', createBackend({ threads: 1 }));
    const tok = model.tokenizer!;
    const prompt = 'Once upon a time';
    const maxTokens = 512;
    // Streamed tokens count chunks: a chunk holds one token's text (pieces never merge here).
    // Warm-up: the first requests compile the routes' code paths.
    for (let i = 0; i < 6; i++) await streamed(url, { messages: [{ role: 'user', content: prompt }], max_tokens: maxTokens });
    // The library streams text too (onToken), as `kvpress generate` does.
    // Alternated, best of each: the CPU may be shared, and a slow spell then hits both sides.
    const libRuns: ReturnType<typeof generate>[] = [];
    const one: StreamTiming[] = [];
    for (let i = 0; i < repeats + 2; i++) {
      libRuns.push(generate(model, tok.encode(prompt, { bos: true }), { maxNewTokens: maxTokens, temperature: 0, onToken: () => {} }));
      one.push(await streamed(url, { messages: [{ role: 'user', content: prompt }], max_tokens: maxTokens }));
    }
    const lib = best(libRuns, (r) => r.tokens.length / (r.prefillMs + r.decodeMs));
    const libTps = lib.tokens.length / ((lib.prefillMs + lib.decodeMs) / 1000);
    const oneBest = best(one, (s) => s.tokens / s.totalMs);
    const oneTps = oneBest.tokens / (oneBest.totalMs / 1000);

    // 8 concurrent answers on one compressed context.
    const ctxText = STORY.repeat(8);
    const ctx = await post(url, '/v1/contexts', { text: ctxText, kvpress: { press: 'expected_attention', compression_ratio: 0.5 } });
    const question = { messages: [{ role: 'user', content: 'What did Lily find?' }], max_tokens: 256, kvpress: { context_id: ctx.id } };
    const single: StreamTiming[] = [];
    for (let i = 0; i < repeats; i++) single.push(await streamed(url, question));
    const singleBest = best(single, (s) => s.tokens / s.totalMs);
    const singleTps = singleBest.tokens / (singleBest.totalMs / 1000);
    const eights: { tokens: number; ms: number }[] = [];
    for (let i = 0; i < repeats; i++) {
      const t0 = performance.now();
      const all = await Promise.all(Array.from({ length: 8 }, () => streamed(url, question)));
      eights.push({ tokens: all.reduce((s, a) => s + a.tokens, 0), ms: performance.now() - t0 });
    }
    const eightBest = best(eights, (e) => e.tokens / e.ms);
    const eightTps = eightBest.tokens / (eightBest.ms / 1000);
    // What each answer holds: a clone of the context's cache plus its own question and answer.
    const ref = new Pipeline(model).compress(ctxText, { press: presses.create('expected_attention', 0.5), reserve: 8192 });
    const clone = ref.cache.clone();
    const cloneBytes = clone.allocatedBytes();
    const ids = tok.encode('What did Lily find?\n', { bos: false });
    // Pages are taken as entries arrive: the question and a 256-token answer's worth of entries.
    model.forward([...ids, ...new Array<number>(256).fill(ids[ids.length - 1])], clone, { logits: 'none' });
    const tailBytes = clone.allocatedBytes() - cloneBytes;

    // Time to first token on a compressed 2000-token context vs the question's own prefill.
    const long = STORY.repeat(60);
    const ctx2k = await post(url, '/v1/contexts', { text: long, max_context_length: 2000, kvpress: { press: 'expected_attention', compression_ratio: 0.5 } });
    const q2 = { messages: [{ role: 'user', content: 'What did Lily find?' }], max_tokens: 1, kvpress: { context_id: ctx2k.id } };
    const ttft = Math.min(...(await sequential(repeats + 2, () => streamed(url, q2))).map((s) => s.firstMs));
    // The question's own prefill: its forward pass over the compressed context, in the library.
    const qIds = tok.encode('What did Lily find?\n', { bos: false });
    const ref2k = new Pipeline(model).compress(long, { press: presses.create('expected_attention', 0.5), maxContextLength: 2000 });
    const own = Math.min(...Array.from({ length: repeats + 2 }, () => {
      const t0 = performance.now();
      model.forward(qIds, ref2k.cache, { logits: 'last' });
      const ms = performance.now() - t0;
      ref2k.cache.truncate(ref2k.contextEnd);
      return ms;
    }));

    const json = {
      oneClient: { libraryTokensPerSecond: libTps, libraryTokens: lib.tokens.length, streamedTokensPerSecond: oneTps, streamedTokens: oneBest.tokens, ratio: oneTps / libTps },
      concurrentOnContext: { contextTokens: ctx.tokens, oneClientTokensPerSecond: singleTps, eightClientsTokensPerSecond: eightTps, ratio: eightTps / singleTps, contextAllocatedBytes: ctx.allocatedBytes, cloneAllocatedBytes: cloneBytes, tailBytes },
      ttft: { contextTokens: ctx2k.tokens, keptEntries: ctx2k.kept, questionTokens: qIds.length, ttftMs: ttft, questionPrefillMs: own, ratio: ttft / own },
    };
    const f = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
    const markdown = [
      'stories260K (context widened to 32768), 1 kernel thread; the server runs in a worker thread, the clients (node:http) on the main one, over 127.0.0.1, after 6 warm-up requests. Greedy; best of 3 (one client: best of 5, alternated with the library); streamed tokens are counted from the chunks.',
      '',
      '| measure | server | reference | ratio | goal |',
      '|---|---|---|---|---|',
      `| one streamed client, tok/s (request to [DONE]) vs \`generate\` with onToken (prefill + decode), same prompt | ${f(oneTps)} (${oneBest.tokens} tok) | ${f(libTps)} (${lib.tokens.length} tok) | ${(oneTps / libTps).toFixed(2)}× | ≥ 0.95× |`,
      `| 8 concurrent answers on one ${ctx.tokens}-token context (EA 0.5), total tok/s vs one client | ${f(eightTps)} | ${f(singleTps)} | ${(eightTps / singleTps).toFixed(2)}× | ≥ 1.0× |`,
      `| time to first token, question on a compressed ${ctx2k.tokens}-token context (EA 0.5) vs the ${qIds.length}-token question's own prefill on that context in the library, ms | ${ttft.toFixed(2)} | ${own.toFixed(2)} | ${(ttft / own).toFixed(2)}× | ≤ 2× |`,
      '',
      `KV held for 8 concurrent answers: the context's ${ctx.allocatedBytes} allocated bytes, and per answer a \`clone()\` of ${cloneBytes} bytes plus a ${tailBytes}-byte tail for its question and 256 tokens (with a copy-on-write clone the per-answer cost is the tail alone).`,
    ].join('\n');
    return { markdown, json };
  } finally {
    worker.postMessage('stop');
    await new Promise((resolve) => worker.once('exit', resolve));
  }
}

async function sequential<T>(n: number, f: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(await f());
  return out;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const r = await runServeBench({ repeats: process.argv.includes('--quick') ? 1 : 3 });
  process.stdout.write(r.markdown + '\n');
  process.stdout.write(JSON.stringify(r.json) + '\n');
}
