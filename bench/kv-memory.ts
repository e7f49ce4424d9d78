/**
 * KV cache figures for `npm run bench`: `kvSection` (bench/run.ts calls it) measures, on the
 * small shape with 1 thread, each cache type's MiB at 8192 entries, prefill 2048 and decode at
 * depths 2048 and 8192; f16 at ratio 0.5; attention time against the page size; the memory
 * check; and stories260K's logits and greedy text with an f16 cache against the f32 one.
 *
 * Run as a script it is one memory run (a child process each, so RSS is this run's alone): the
 * small shape prefills `--prompt` random tokens, a StreamingLLM press removes `--ratio` of them
 * (0: none), then `--gen` tokens are decoded. Prints JSON: bytes, allocatedBytes, the bound
 * bytes + positions + one page per (layer, KV head), and the RSS after a full GC.
 * Usage: node --expose-gc dist/bench/kv-memory.js --ratio 0.75 [--prompt 4096] [--gen 512] [--kv-dtype f32]
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBackend } from '../src/backend/index.js';
import { benchModelOfShape } from '../src/bench/shapes.js';
import type { KvDtype } from '../src/cache/format.js';
import { KVCache } from '../src/cache/kv-cache.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import { Model } from '../src/model/model.js';
import { generate } from '../src/pipeline/generate.js';
import { StreamingLLMPress } from '../src/presses/streaming-llm.js';

/** What bench/run.ts's `kvpress bench --json` runner returns (the fields used here). */
export interface BenchJson {
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  kvCacheBytes: number;
}

interface MemoryRun {
  bytes: number;
  allocatedBytes: number;
  bound: number;
  rssBytes: number;
}

const fmt = (x: number, digits = 1) => (x >= 100 ? x.toFixed(0) : x.toFixed(digits));
const ratio = (x: number, ref: number) => `${(x / ref).toFixed(2)}×`;
const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

/** Appends the KV cache section to `md`; returns its figures for latest.json. */
export async function kvSection(md: string[], bench: (args: string[]) => BenchJson, quick: boolean): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  md.push('', '## KV cache types (small, 1 thread)', '');
  md.push(`llama.cpp keeps 180 MiB of f16 cache for 8192 tokens of this shape. Every backend reads the pages in place in their stored type. Speeds: best of ${quick ? 2 : 3} rounds, the types taking turns.`, '');
  md.push('| type | KV @8192 | prefill 2048 | vs f32 | decode @2048 | vs f32 | decode @8192 | vs f32 |', '|---|---|---|---|---|---|---|---|');
  const types: KvDtype[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'];
  // The types take turns over several rounds and each keeps its fastest run: the goals compare
  // types with each other, and a slow spell of the shared machine would otherwise land on
  // whichever type it happened to meet.
  const rounds = quick ? 2 : 3;
  const best = (a: BenchJson | undefined, b: BenchJson, key: 'prefillTokensPerSecond' | 'decodeTokensPerSecond') => (a && a[key] >= b[key] ? a : b);
  const runs: Record<string, { p: BenchJson; d2: BenchJson; d8: BenchJson }> = {};
  for (let round = 0; round < rounds; round++) {
    for (const t of types) {
      const a = ['--shape', 'small', '--threads', '1', '--kv-dtype', t];
      const p = bench([...a, '--prompt-tokens', '2048', '--gen-tokens', '1']);
      const d2 = bench([...a, '--prompt-tokens', '1', '--depth', '2048', '--gen-tokens', '32']);
      const d8 = bench([...a, '--prompt-tokens', '1', '--depth', '8192', '--gen-tokens', '16']);
      const r = runs[t];
      runs[t] = { p: best(r?.p, p, 'prefillTokensPerSecond'), d2: best(r?.d2, d2, 'decodeTokensPerSecond'), d8: best(r?.d8, d8, 'decodeTokensPerSecond') };
    }
  }
  const base = runs.f32;
  for (const t of types) {
    const { p, d2, d8 } = runs[t];
    out[t] = { prefill2048: p, decode2048: d2, decode8192: d8 };
    md.push(`| ${t} | ${mib(d8.kvCacheBytes)} (${ratio(d8.kvCacheBytes, base.d8.kvCacheBytes)}) | ${fmt(p.prefillTokensPerSecond)} | ${ratio(p.prefillTokensPerSecond, base.p.prefillTokensPerSecond)} | ${fmt(d2.decodeTokensPerSecond)} | ${ratio(d2.decodeTokensPerSecond, base.d2.decodeTokensPerSecond)} | ${fmt(d8.decodeTokensPerSecond)} | ${ratio(d8.decodeTokensPerSecond, base.d8.decodeTokensPerSecond)} |`);
  }
  const f16 = runs.f16, q8 = runs.q8_0, q4 = runs.q4_0;
  const goal = (met: boolean) => (met ? 'met' : 'not met');
  const speed = (x: number, ref: number, min: number) => `${ratio(x, ref)} (≥ ${min}×, ${goal(x >= min * ref)})`;
  md.push('', 'Goals: ' + [
    `f16 KV @8192 ${mib(f16.d8.kvCacheBytes)} (= llama.cpp's 180 MiB)`,
    `q8_0 ${ratio(q8.d8.kvCacheBytes, f16.d8.kvCacheBytes)} of f16 (≈ 0.53×)`,
    `q4_0 ${ratio(q4.d8.kvCacheBytes, f16.d8.kvCacheBytes)} of f16 (≈ 0.28×)`,
    `decode f16 vs f32 @2048 ${speed(f16.d2.decodeTokensPerSecond, base.d2.decodeTokensPerSecond, 1)}, @8192 ${speed(f16.d8.decodeTokensPerSecond, base.d8.decodeTokensPerSecond, 1)}`,
    `decode q8_0 vs f16 @2048 ${speed(q8.d2.decodeTokensPerSecond, f16.d2.decodeTokensPerSecond, 0.9)}, @8192 ${speed(q8.d8.decodeTokensPerSecond, f16.d8.decodeTokensPerSecond, 0.9)}`,
    `prefill 2048 vs f32: f16 ${speed(f16.p.prefillTokensPerSecond, base.p.prefillTokensPerSecond, 0.95)}, q8_0 ${speed(q8.p.prefillTokensPerSecond, base.p.prefillTokensPerSecond, 0.95)}`,
  ].join('; ') + '.');
  const half = bench(['--shape', 'small', '--threads', '1', '--kv-dtype', 'f16', '--prompt-tokens', '1', '--depth', '4096', '--gen-tokens', '1']);
  md.push('', `f16 at ratio 0.5 (4096 of 8192 entries kept per head): ${mib(half.kvCacheBytes)} (goal ≤ 91 MiB).`);
  out.f16Ratio05 = half;

  out.pageEntries = pageSizes(md, quick);
  out.memory = memoryCheck(md);
  out.f16Logits = await f16Logits(md);
  return out;
}

/**
 * Decode attention alone (small shape's 9 heads over 3 KV heads of 64, 1 thread, native) at
 * depth 8192 for each page size: the kernel's cost of page boundaries. CPU time (other
 * processes' load does not count), best of several rounds, the sizes interleaved.
 */
export function pageSizes(md: string[], quick: boolean): Record<string, Record<number, number>> {
  const be = createBackend({ threads: 1 });
  if (!be.attentionPaged) return {};
  const H = 9, G = 3, hd = 64, depth = 8192, sizes = [32, 64, 128, 256], types: KvDtype[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'];
  let s = 11;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) - 0.5;
  const q = Float32Array.from({ length: H * hd }, rnd), o = new Float32Array(H * hd), scratch = new Float32Array(depth);
  const k = new Float32Array(depth * G * hd).map(rnd), v = new Float32Array(depth * G * hd).map(rnd);
  const runs: { t: KvDtype; E: number; f: () => void }[] = [];
  for (const t of types) for (const E of sizes) {
    const cache = new KVCache(1, G, hd, { dtype: t, pageEntries: E, memory: be.pageMemory });
    cache.layers[0].append(k, v, Int32Array.from({ length: depth }, (_, i) => i), depth);
    const queryPositions = Int32Array.of(depth - 1);
    runs.push({ t, E, f: () => be.attentionPaged!({ out: o, q, rows: 1, numHeads: H, numKvHeads: G, headDim: hd, cache: cache.layers[0], queryPositions, scale: 0.125, scratch }) });
  }
  const best = runs.map(() => Infinity);
  for (let round = 0; round < (quick ? 3 : 10); round++) {
    runs.forEach((r, i) => {
      r.f();
      const c0 = process.cpuUsage();
      for (let n = 0; n < 20; n++) r.f();
      const u = process.cpuUsage(c0);
      best[i] = Math.min(best[i], (u.user + u.system) / 1000 / 20);
    });
  }
  md.push('', `Decode attention at depth 8192 (small: 9 heads, 3 KV heads of 64; ${be.name}, 1 thread), CPU ms per layer, by entries per page:`, '');
  md.push(`| type | ${sizes.join(' | ')} |`, `|---|${sizes.map(() => '---').join('|')}|`);
  const out: Record<string, Record<number, number>> = {};
  for (const t of types) {
    out[t] = Object.fromEntries(sizes.map((E) => [E, best[runs.findIndex((r) => r.t === t && r.E === E)]]));
    md.push(`| ${t} | ${sizes.map((E) => out[t][E].toFixed(3)).join(' | ')} |`);
  }
  return out;
}

/** Compress a 4096-token prefill at 0.75, decode 512: allocatedBytes against its bound, RSS against the uncompressed run. */
function memoryCheck(md: string[]): Record<string, unknown> {
  const script = fileURLToPath(import.meta.url);
  const mem = (r: number) => JSON.parse(execFileSync(process.execPath, ['--expose-gc', script, '--ratio', String(r)], { encoding: 'utf8' })) as MemoryRun;
  const full = mem(0), comp = mem(0.75);
  const evicted = full.bytes - comp.bytes, fell = full.rssBytes - comp.rssBytes;
  md.push('', 'Compress a 4096-token prefill at 0.75 (StreamingLLM), then decode 512 tokens (f32 cache, small):', '');
  md.push('| run | bytes | allocatedBytes | bound (bytes + positions + a page per head) | RSS |', '|---|---|---|---|---|');
  for (const [name, r] of [['uncompressed', full], ['ratio 0.75', comp]] as const) md.push(`| ${name} | ${mib(r.bytes)} | ${mib(r.allocatedBytes)} | ${mib(r.bound)} | ${mib(r.rssBytes)} |`);
  md.push('', `RSS fell by ${mib(fell)} for ${mib(evicted)} of evicted entries (${((100 * fell) / evicted).toFixed(0)} %; goal ≥ 70 %).`);
  return { full, compressed: comp, rssFellShare: fell / evicted };
}

/**
 * stories260K with an f16 cache against the f32 one: the largest logit difference over the
 * reference prompts and their greedy continuations fed teacher-forced, and the greedy texts.
 */
export async function f16Logits(md: string[]): Promise<Record<string, unknown>> {
  const backend = createBackend({ threads: 1 });
  const f32 = await loadModel(undefined, { backend, kvDtype: 'f32' }), f16 = await loadModel(undefined, { backend, kvDtype: 'f16' });
  const reference = JSON.parse(readFileSync(join(packageRoot(), 'models/stories260K/reference.json'), 'utf8')) as { cases: { prompt: string; promptTokens: number[]; greedyTokens: number[] }[] };
  let maxDiff = 0;
  const texts: { prompt: string; f32: string; f16: string; same: boolean }[] = [];
  for (const c of reference.cases) {
    const ids = [...c.promptTokens, ...c.greedyTokens];
    const a = f32.forward(ids, f32.newCache(), { logits: 'all' }), b = f16.forward(ids, f16.newCache(), { logits: 'all' });
    for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    const n = c.greedyTokens.length;
    const ta = generate(f32, c.promptTokens, { maxNewTokens: n }).text, tb = generate(f16, c.promptTokens, { maxNewTokens: n }).text;
    texts.push({ prompt: c.prompt, f32: ta, f16: tb, same: ta === tb });
  }
  md.push('', `stories260K, f16 cache against f32 (${backend.name}): max |Δlogit| ${maxDiff.toExponential(2)} over the reference prompts and their greedy continuations; greedy text ${texts.every((t) => t.same) ? 'unchanged on every reference prompt' : `differs on ${texts.filter((t) => !t.same).map((t) => JSON.stringify(t.prompt)).join(', ')}`}.`);
  return { maxAbsLogitDiff: maxDiff, texts };
}

/** One memory run (see the file comment). */
async function memoryRun(): Promise<void> {
  const arg = (name: string, fallback: string) => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? process.argv[i + 1] : fallback;
  };
  const ratioArg = Number(arg('ratio', '0.75')), promptTokens = Number(arg('prompt', '4096')), gen = Number(arg('gen', '512'));
  const kvDtype = arg('kv-dtype', 'f32') as KvDtype;
  const backend = createBackend({ threads: 1 });
  const built = await benchModelOfShape('small', backend);
  const model = new Model(built.config, built.weights, { backend, source: built.source, kvDtype });
  const c = model.config;
  let s = 7;
  const ids = Array.from({ length: promptTokens }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) % (c.vocabSize - 3)) + 3);
  const cache = model.newCache();
  const press = ratioArg > 0 ? new StreamingLLMPress(ratioArg) : null;
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
    ratio: ratioArg, promptTokens, gen, kvDtype, entries,
    bytes: cache.bytes(), allocatedBytes: cache.allocatedBytes(),
    bound: cache.bytes() + 4 * entries + heads * cache.pool.pageBytes,
    rssBytes: process.memoryUsage().rss,
  }) + '\n');
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await memoryRun();
