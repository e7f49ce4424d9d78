/**
 * One memory run for `npm run bench` (a child process each, so RSS is this run's alone): the
 * small shape prefills `--prompt` random tokens, a StreamingLLM press removes `--ratio` of them
 * (0: none), then 512 tokens are decoded. Prints JSON: bytes, allocatedBytes, the bound
 * bytes + positions + one page per (layer, KV head), and the RSS after a full GC.
 * Usage: node --expose-gc dist/bench/kv-memory.js --ratio 0.75 [--prompt 4096] [--gen 512] [--kv-dtype f32]
 */
import { createBackend } from '../src/backend/index.js';
import { benchModelOfShape } from '../src/bench/shapes.js';
import type { KvDtype } from '../src/cache/format.js';
import { Model } from '../src/model/model.js';
import { StreamingLLMPress } from '../src/presses/streaming-llm.js';

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const ratio = Number(arg('ratio', '0.75')), promptTokens = Number(arg('prompt', '4096')), gen = Number(arg('gen', '512'));
const kvDtype = arg('kv-dtype', 'f32') as KvDtype;
const backend = createBackend({ threads: 1 });
const built = await benchModelOfShape('small', backend);
const model = new Model(built.config, built.weights, { backend, source: built.source, kvDtype });
const c = model.config;
let s = 7;
const ids = Array.from({ length: promptTokens }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) % (c.vocabSize - 3)) + 3);
const cache = model.newCache();
const press = ratio > 0 ? new StreamingLLMPress(ratio) : null;
model.forward(ids, cache, { logits: 'none', press });
let next = 3;
for (let i = 0; i < gen; i++) {
  const logits = model.forward([next], cache);
  next = logits.indexOf(Math.max(...logits));
}
(globalThis as { gc?: () => void }).gc?.();
const entries = cache.lengths().flat().reduce((a, b) => a + b, 0);
const heads = c.numLayers * c.numKvHeads;
process.stdout.write(JSON.stringify({
  ratio, promptTokens, gen, kvDtype, entries,
  bytes: cache.bytes(), allocatedBytes: cache.allocatedBytes(),
  bound: cache.bytes() + 4 * entries + heads * cache.pool.pageBytes,
  rssBytes: process.memoryUsage().rss,
}) + '\n');
