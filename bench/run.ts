/**
 * `npm run bench`: kernel GFLOP/s against an FMA peak probe, prefill and decode speed of
 * stories260K and two random-weight shapes against llama.cpp measured in the same run on the
 * same shapes (bench/llama-cpp.ts; bf16 weights against llama.cpp's f16), decode speed against
 * compression ratio, each press's scoring time, KV-cache bytes and peak RSS. Writes
 * bench/results/latest.md and latest.json. Model runs go through `kvpress bench --json` in a
 * child process each, so that every figure has its own peak RSS and a clean heap.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { backendInfo, createBackend } from '../src/backend/index.js';
import { packageRoot } from '../src/model/load.js';
import { SHAPES as SHAPE_DIMS } from '../src/model/random.js';
import { runKernelBench } from './kernels.js';
import { kvSection } from './kv-memory.js';
import { findLlamaCpp, pairedDecode, runLlamaCpp, shapeGguf, type LlamaFigures } from './llama-cpp.js';
import type { WeightMemory } from './weight-memory.js';
import { cpuClock, runPressBench } from './presses.js';
import { runServeBench } from './serve.js';

const SHAPES = ['stories260K', 'small', 'medium'] as const;
const root = packageRoot();
const quick = process.argv.includes('--quick');

interface BenchJson {
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  kvCacheBytes: number;
  peakRssBytes: number;
  backend: string;
  threads: number;
}

function kvpressBench(args: string[]): BenchJson {
  const out = execFileSync(process.execPath, [join(root, 'bin/kvpress.js'), 'bench', ...args, '--json'], { encoding: 'utf8', maxBuffer: 1 << 24 });
  return JSON.parse(out) as BenchJson;
}

const fmt = (x: number, digits = 1) => (x >= 100 ? x.toFixed(0) : x.toFixed(digits));
const ratio = (x: number, ref: number) => `${(x / ref).toFixed(2)}×`;
/** "ours vs theirs: **ratio**", or ours alone when llama.cpp has no figure. */
const versus = (x: number, ref: number | null | undefined) => (ref ? `${fmt(x)} vs ${fmt(ref)}: **${ratio(x, ref)}**` : `${fmt(x)} vs —`);
const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

/** Bytes of the matrices of a random shape (tied embeddings) at `width` bytes a number. */
function matrixBytes(shape: 'small' | 'medium', width: number): number {
  const s = SHAPE_DIMS[shape], q = s.numHeads * s.headDim, kv = s.numKvHeads * s.headDim;
  return width * (s.vocabSize * s.hiddenSize + s.numLayers * (2 * s.hiddenSize * q + 2 * s.hiddenSize * kv + 3 * s.hiddenSize * s.intermediateSize));
}

async function main(): Promise<void> {
  const started = Date.now();
  const md: string[] = [];
  const json: Record<string, unknown> = {};
  const info = backendInfo();
  md.push(`# kvpress-ts benchmark`, '', `${new Date().toISOString().slice(0, 10)} · ${cpus()[0]?.model ?? 'unknown CPU'} · ${cpus().length} cores · Node ${process.version}`);
  md.push(`Backend: **${info.active}** — ${info.active ? info.backends[info.active].detail : info.reason}. 1 thread is the primary figure (the second core here is often throttled).`, '');

  process.stderr.write('kernels…\n');
  const kernels = await runKernelBench();
  md.push(kernels.markdown.replace(/^### /m, '## '), '');
  json.kernels = kernels.json;

  process.stderr.write('llama.cpp…\n');
  const llama = runLlamaCpp(root, { quick, log: (m) => process.stderr.write(m) });
  json.llamaCpp = llama;
  const ref = (shape: string, type: string): LlamaFigures | undefined => llama.figures[`${shape} ${type}` as keyof typeof llama.figures];

  // Decode is compared with llama.cpp in alternated rounds (see pairedDecode); the tables below
  // take their decode @0 comparisons from here.
  const decodeRun = (weights: string) => () => kvpressBench(['--shape', 'small', '--threads', '1', '--weights', weights, '--prompt-tokens', '1', '--gen-tokens', '32']).decodeTokensPerSecond;
  const paired = pairedDecode(root, [
    { name: 'f32', type: 'f32', ours: decodeRun('f32') },
    { name: 'bf16', type: 'f16', ours: decodeRun('bf16') },
    { name: 'q8_0', type: 'q8_0', ours: decodeRun('q8_0') },
    { name: 'q4_k', type: 'q4_k_m', ours: decodeRun('q4_k') },
  ], { rounds: quick ? 3 : 5, gen: 32, log: (m) => process.stderr.write(m) });
  json.pairedDecode = paired;
  const pairNote = `Decode @0 of the small shape against llama.cpp (1 thread): ${quick ? 3 : 5} rounds alternating our run and one llama-bench repetition (tg32), best of each side: decode streams every weight once a token, and the bandwidth this shared machine grants drifts by 10–20 % within minutes.`;

  const threadCounts = cpus().length > 1 ? [1, 2] : [1];
  const models: Record<string, unknown> = {};
  md.push('## Prefill and decode (tokens/s)', '');
  md.push('Prefill of N tokens from an empty cache; decode of greedy tokens from a cache of the given depth; f32 weights.', '');
  md.push('| model | threads | prefill 512 | prefill 2048 | prefill 8192 | decode @0 | decode @2048 | decode @8192 | KV @8192 | peak RSS |');
  md.push('|---|---|---|---|---|---|---|---|---|---|');
  for (const shape of SHAPES) {
    for (const threads of threadCounts) {
      process.stderr.write(`${shape}, ${threads} thread(s)…\n`);
      const t = ['--shape', shape, '--threads', String(threads)];
      const genFor = (depth: number) => (shape === 'stories260K' ? 256 : shape === 'small' ? (depth > 0 ? 16 : 32) : 8);
      const p512 = kvpressBench([...t, '--prompt-tokens', '512', '--gen-tokens', '0']);
      const p2048 = kvpressBench([...t, '--prompt-tokens', '2048', '--gen-tokens', '0']);
      const p8192 = quick || (shape === 'medium' && threads === 2) ? null : kvpressBench([...t, '--prompt-tokens', '8192', '--gen-tokens', '0']);
      const d0 = kvpressBench([...t, '--prompt-tokens', '1', '--gen-tokens', String(genFor(0))]);
      const d2048 = kvpressBench([...t, '--prompt-tokens', '1', '--depth', '2048', '--gen-tokens', String(genFor(2048))]);
      const d8192 = kvpressBench([...t, '--prompt-tokens', '1', '--depth', '8192', '--gen-tokens', String(genFor(8192))]);
      const rss = Math.max(...[p512, p2048, p8192, d0, d2048, d8192].filter((r): r is BenchJson => r !== null).map((r) => r.peakRssBytes));
      models[`${shape}@${threads}`] = { p512, p2048, p8192, d0, d2048, d8192 };
      md.push(`| ${shape} | ${threads} | ${fmt(p512.prefillTokensPerSecond)} | ${fmt(p2048.prefillTokensPerSecond)} | ${p8192 ? fmt(p8192.prefillTokensPerSecond) : '—'} | ${fmt(d0.decodeTokensPerSecond)} | ${fmt(d2048.decodeTokensPerSecond)} | ${fmt(d8192.decodeTokensPerSecond)} | ${mib(d8192.kvCacheBytes)} | ${mib(rss)} |`);
    }
  }
  json.models = models;
  md.push('', '### Against llama.cpp (1 thread)', '', `${llama.note}. Goals (f32): prefill 512 ≥ 1.25×, decode ≥ 1.0×; decode reads every matrix once a token, so its GB/s is set against the kernels' DRAM-bound decode product above.`, '', `${pairNote} (The medium row's decode is the single run of the table above.)`, '');
  md.push(`At depth 2048 the attention reads the KV cache, so that column compares like with like: ours with \`--kv-dtype f16\` beside llama.cpp's default ${llama.kvType} cache (our f32-cache figure is in the table above).`, '');
  md.push('| model | weights | prefill 512 | prefill 2048 | decode | decode GB/s (ours, llama.cpp) | decode @2048, f16 KV both |', '|---|---|---|---|---|---|---|');
  for (const shape of ['small', 'medium'] as const) {
    const r = models[`${shape}@1`] as Record<string, BenchJson>;
    // Decode at depth with an f16 cache, as llama.cpp keeps it.
    r.d2048KvF16 = kvpressBench(['--shape', shape, '--threads', '1', '--kv-dtype', 'f16', '--prompt-tokens', '1', '--depth', '2048', '--gen-tokens', shape === 'small' ? '16' : '8']);
    const l = ref(shape, 'f32');
    const gb = (tps: number | null | undefined) => (tps ? fmt((tps * matrixBytes(shape, 4)) / 1e9) : '—');
    const d = shape === 'small' ? paired.f32 : { ours: r.d0.decodeTokensPerSecond, llamaCpp: l?.decode };
    md.push(`| ${shape} | f32 vs f32 | ${versus(r.p512.prefillTokensPerSecond, l?.p512)} | ${versus(r.p2048.prefillTokensPerSecond, l?.p2048)} | ${versus(d.ours, d.llamaCpp)} | ${gb(d.ours)}, ${gb(d.llamaCpp)} | ${versus(r.d2048KvF16.decodeTokensPerSecond, l?.decode2048)} |`);
  }
  const quantRows = (['q8_0', 'q4_k_m'] as const).flatMap((t) => (['small', 'medium'] as const).map((shape) => [shape, t, ref(shape, t)] as const)).filter(([, , l]) => l);
  if (quantRows.length) {
    md.push('', 'llama.cpp on quantized weights (llama-quantize from the f32 GGUF), tokens/s:', '', '| model | weights | prefill 512 | prefill 2048 | decode | decode @2048 |', '|---|---|---|---|---|---|');
    const f = (v: number | null | undefined) => (v ? fmt(v) : '—');
    for (const [shape, t, l] of quantRows) md.push(`| ${shape} | ${t.toUpperCase()} | ${f(l!.p512)} | ${f(l!.p2048)} | ${f(l!.decode)} | ${f(l!.decode2048)} |`);
  }

  process.stderr.write('bf16 weights…\n');
  md.push('', '### bf16 weights (1 thread)', '');
  md.push('`--weights bf16`: every matrix held once as bf16, prefill (bf16 GEMM) and decode alike (f32 activations between products and f32 sums), against f32 above and llama.cpp with f16 weights (same run). Goals: prefill 512 ≥ 1.5×, decode ≥ 1.1× at depth 0 and ≥ 1.5× at 2048.', '');
  md.push(`Decode @0 of the small shape: the alternated rounds above (its "vs f32" too). Decode @2048: f32 cache (this checkpoint's \`--kv-dtype auto\`) against our f32-weight run, and with \`--kv-dtype f16\` against llama.cpp's ${llama.kvType} cache, like for like.`, '');
  md.push('| model | prefill 512 bf16 | vs llama.cpp f16 | decode @0 bf16 | vs f32 | vs llama.cpp f16 | decode @2048 bf16 | vs f32 | decode @2048 bf16, f16 KV | vs llama.cpp f16, f16 KV | peak RSS |', '|---|---|---|---|---|---|---|---|---|---|---|');
  const bf16: Record<string, { p512: BenchJson; d0: BenchJson; d2048: BenchJson; d2048KvF16: BenchJson }> = {};
  for (const shape of ['small', 'medium'] as const) {
    const t = ['--shape', shape, '--threads', '1', '--weights', 'bf16', '--prompt-tokens', '1'];
    const gen = shape === 'small' ? '32' : '16';
    const r = {
      p512: kvpressBench(['--shape', shape, '--threads', '1', '--weights', 'bf16', '--prompt-tokens', '512', '--gen-tokens', '0']),
      d0: kvpressBench([...t, '--gen-tokens', gen]), d2048: kvpressBench([...t, '--depth', '2048', '--gen-tokens', gen]),
      d2048KvF16: kvpressBench([...t, '--kv-dtype', 'f16', '--depth', '2048', '--gen-tokens', gen]),
    };
    bf16[shape] = r;
    const f32 = models[`${shape}@1`] as Record<string, BenchJson>;
    const l = ref(shape, 'f16');
    const d2048 = r.d2048.decodeTokensPerSecond, d2048h = r.d2048KvF16.decodeTokensPerSecond;
    const [d0, d0f32, d0Llama] = shape === 'small' ? [paired.bf16.ours, paired.f32.ours, paired.bf16.llamaCpp] : [r.d0.decodeTokensPerSecond, f32.d0.decodeTokensPerSecond, l?.decode];
    const p = r.p512.prefillTokensPerSecond;
    md.push(`| ${shape} | ${fmt(p)} | ${versus(p, l?.p512)} | ${fmt(d0)} | ${ratio(d0, d0f32)} | ${versus(d0, d0Llama)} | ${fmt(d2048)} | ${ratio(d2048, f32.d2048.decodeTokensPerSecond)} | ${fmt(d2048h)} | ${versus(d2048h, l?.decode2048)} | ${mib(Math.max(r.p512.peakRssBytes, r.d0.peakRssBytes, r.d2048.peakRssBytes, r.d2048KvF16.peakRssBytes))} |`);
  }
  json.bf16Weights = bf16;

  process.stderr.write('quantized weights…\n');
  json.quantWeights = quantSection(md, ref, llama.source === 'measured', paired);

  process.stderr.write('weight memory…\n');
  md.push('', '### Weight memory after load (small shape as a llama2.c f32 checkpoint)', '');
  md.push('RSS growth over the load (garbage collected), before any pass, against the bytes of the matrices in the format held. Goal: within ±5 %.', '');
  md.push('| weights | matrices | allocated | RSS growth | RSS / matrices |', '|---|---|---|---|---|');
  const memory: Record<string, WeightMemory> = {};
  for (const w of ['f32', 'bf16'] as const) {
    const r = JSON.parse(execFileSync(process.execPath, ['--expose-gc', join(root, 'dist/bench/weight-memory.js'), '--shape', 'small', '--weights', w], { encoding: 'utf8' })) as WeightMemory;
    memory[w] = r;
    md.push(`| ${w} | ${mib(r.expectedBytes)} | ${mib(r.allocatedBytes)} | ${mib(r.rssGrowthBytes)} | ${(r.rssGrowthBytes / r.expectedBytes).toFixed(3)} |`);
  }
  json.weightMemory = memory;

  process.stderr.write('decode vs compression ratio…\n');
  md.push('', '## Decode speed vs compression ratio (small, depth 8192, 1 thread)', '');
  md.push('The cache holds (1 − ratio) · 8192 entries per head, as after compressing an 8192-token prefill; decode cost depends only on what is kept.', '');
  md.push('| ratio | kept per head | KV cache | decode tok/s | speed-up |', '|---|---|---|---|---|');
  const byRatio: Record<string, BenchJson> = {};
  for (const r of [0, 0.5, 0.75, 0.9]) {
    const kept = Math.floor(8192 * (1 - r));
    byRatio[r] = kvpressBench(['--shape', 'small', '--threads', '1', '--prompt-tokens', '1', '--depth', String(kept), '--gen-tokens', '16']);
    md.push(`| ${r} | ${kept} | ${mib(byRatio[r].kvCacheBytes)} | ${fmt(byRatio[r].decodeTokensPerSecond)} | ${(byRatio[r].decodeTokensPerSecond / byRatio[0].decodeTokensPerSecond).toFixed(2)}× |`);
  }
  json.decodeVsRatio = byRatio;

  process.stderr.write('KV cache types…\n');
  json.kvTypes = await kvSection(md, kvpressBench, quick);

  process.stderr.write('press scoring…\n');
  // Issue 12 states press costs at 1 thread; CPU time keeps a noisy machine out of the ratio.
  const presses = await runPressBench({ backend: createBackend({ threads: 1 }), clock: cpuClock, clockName: 'CPU time of the process' });
  md.push('', '## Press scoring time', '', presses.markdown, '');
  json.presses = presses.json;

  process.stderr.write('serve…\n');
  const serve = await runServeBench({ repeats: quick ? 1 : 3 });
  md.push('', '## Serve', '', serve.markdown, '');
  json.serve = serve.json;

  md.push(`Total benchmark time: ${((Date.now() - started) / 1000).toFixed(0)} s.`, '');
  const dir = join(root, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'latest.md'), md.join('\n'));
  writeFileSync(join(dir, 'latest.json'), JSON.stringify(json, null, 1) + '\n');
  process.stdout.write(md.join('\n') + '\n');
}

/**
 * `--weights q8_0|q4_k` on the small shape (quantized in memory; q4_k takes Q5_0 on the 576-wide
 * rows, as llama-quantize does) against llama.cpp's Q8_0 and Q4_K_M of the same shape in this
 * run, with the goals beside them; then the RSS growth of loading those two GGUF files
 * against their tensor bytes.
 */
function quantSection(md: string[], ref: (shape: string, type: string) => LlamaFigures | undefined, measured: boolean, paired: ReturnType<typeof pairedDecode>): Record<string, unknown> {
  md.push('', '### Quantized weights (small, 1 thread)', '');
  md.push('`--weights q8_0` / `q4_k`: the random small shape quantized in memory (q4_k falls back to Q5_0 on rows that are not whole 256-value blocks, as llama-quantize does for this shape): prefill on dequantized panels in the f32 GEMM, decode on the blocks with int8 activation blocks; against llama.cpp Q8_0 and Q4_K_M of the same shape. Goals: prefill 512 ≥ 1.5×; decode ≥ 1.0× (Q8_0), ≥ 0.9× (Q4_K). Decode: the alternated rounds above.', '');
  md.push('| weights | vs llama.cpp | prefill 512 | goal | decode @0 | goal | peak RSS |', '|---|---|---|---|---|---|---|');
  const out: Record<string, unknown> = {};
  for (const [w, lt, decodeGoal] of [['q8_0', 'q8_0', 1.0], ['q4_k', 'q4_k_m', 0.9]] as const) {
    const t = ['--shape', 'small', '--threads', '1', '--weights', w];
    const p512 = kvpressBench([...t, '--prompt-tokens', '512', '--gen-tokens', '0']);
    const d0 = paired[w];
    const l = ref('small', lt);
    const met = (x: number, r: number | null | undefined, goal: number) => (r ? `${goal.toFixed(1)}× (${x / r >= goal ? 'met' : 'not met'})` : `${goal.toFixed(1)}×`);
    out[w] = { p512, d0, llamaCpp: l ?? null };
    md.push(`| ${w} | ${lt.toUpperCase()} | ${versus(p512.prefillTokensPerSecond, l?.p512)} | ${met(p512.prefillTokensPerSecond, l?.p512, 1.5)} | ${versus(d0.ours, d0.llamaCpp)} | ${met(d0.ours, d0.llamaCpp, decodeGoal)} | ${mib(p512.peakRssBytes)} |`);
  }
  const bin = findLlamaCpp(root);
  md.push('', 'Memory after load of the GGUF files above (RSS growth over the load, garbage collected, backend loaded first). Goal: ≤ tensor bytes + 10 %.', '');
  if (!bin || !measured) {
    md.push('Not measured: the files are made by llama-quantize, which this run did not find.');
    return out;
  }
  md.push('| file | tensor bytes | held | RSS growth | growth / tensor bytes |', '|---|---|---|---|---|');
  const memory: Record<string, WeightMemory> = {};
  for (const lt of ['q8_0', 'q4_k_m'] as const) {
    const path = shapeGguf(bin, 'small', lt);
    const r = JSON.parse(execFileSync(process.execPath, ['--expose-gc', join(root, 'dist/bench/weight-memory.js'), '--gguf', path], { encoding: 'utf8' })) as WeightMemory;
    memory[lt] = r;
    md.push(`| small ${lt.toUpperCase()} | ${mib(r.expectedBytes)} | ${mib(r.allocatedBytes)} | ${mib(r.rssGrowthBytes)} | ${(r.rssGrowthBytes / r.expectedBytes).toFixed(3)} (${r.rssGrowthBytes <= 1.1 * r.expectedBytes ? 'met' : 'not met'}) |`);
  }
  out.memory = memory;
  return out;
}

await main();
