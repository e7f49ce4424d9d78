/**
 * `npm run bench`: kernel GFLOP/s against an FMA peak probe, prefill and decode speed of
 * stories260K and two random-weight shapes against llama.cpp's figures (and decode from bf16
 * weights against llama.cpp's f16 figures), decode speed against
 * compression ratio, each press's scoring time, KV-cache bytes and peak RSS. Writes
 * bench/results/latest.md and latest.json. Model runs go through `kvpress bench --json` in a
 * child process each, so that every figure has its own peak RSS and a clean heap.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { backendInfo } from '../src/backend/index.js';
import { packageRoot } from '../src/model/load.js';
import { runKernelBench } from './kernels.js';
import { kvSection } from './kv-memory.js';
import { runPressBench } from './presses.js';
import { runServeBench } from './serve.js';

/** llama.cpp 3f545be, fp32 weights, llama-bench, 1 thread, on this machine kind (issue #3). */
const LLAMA_CPP: Record<string, { p512: number; p2048: number; decode: number; decode2048: number }> = {
  stories260K: { p512: 2071, p2048: 529, decode: 5808, decode2048: 259 },
  small: { p512: 390, p2048: 320, decode: 35.8, decode2048: 28.5 },
  medium: { p512: 110, p2048: 102, decode: 7.9, decode2048: 7.0 },
};
/** llama.cpp with f16 weights (same build and machine kind): what bf16 decode weights compete with. */
/** llama.cpp with f16 weights; small prefill 512 from issue #10 (620 tok/s, same machine kind). */
const LLAMA_CPP_F16: Record<string, { p512: number | null; decode: number; decode2048: number }> = {
  small: { p512: 620, decode: 93, decode2048: 35.5 },
  medium: { p512: null, decode: 19.5, decode2048: 12.6 },
};
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
const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

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

  const threadCounts = cpus().length > 1 ? [1, 2] : [1];
  const models: Record<string, unknown> = {};
  md.push('## Prefill and decode (tokens/s)', '');
  md.push('Prefill of N tokens from an empty cache; decode of greedy tokens from a cache of the given depth. llama.cpp: 3f545be, fp32, `llama-bench`, 1 thread, same machine kind. Goals: prefill ≥ 1.5×, decode ≥ 1.0×.', '');
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
  md.push('', '### Against llama.cpp (1 thread)', '');
  md.push('| model | prefill 512 | prefill 2048 | decode | decode @2048 |', '|---|---|---|---|---|');
  for (const shape of SHAPES) {
    const r = models[`${shape}@1`] as Record<string, BenchJson>;
    const ref = LLAMA_CPP[shape];
    md.push(`| ${shape} | ${fmt(r.p512.prefillTokensPerSecond)} vs ${ref.p512}: **${ratio(r.p512.prefillTokensPerSecond, ref.p512)}** | ${fmt(r.p2048.prefillTokensPerSecond)} vs ${ref.p2048}: **${ratio(r.p2048.prefillTokensPerSecond, ref.p2048)}** | ${fmt(r.d0.decodeTokensPerSecond)} vs ${ref.decode}: **${ratio(r.d0.decodeTokensPerSecond, ref.decode)}** | ${fmt(r.d2048.decodeTokensPerSecond)} vs ${ref.decode2048}: **${ratio(r.d2048.decodeTokensPerSecond, ref.decode2048)}** |`);
  }

  process.stderr.write('bf16 weights…\n');
  md.push('', '### bf16 weights (1 thread)', '');
  md.push('`--weights bf16`: every matrix held once as bf16, prefill (bf16 GEMM) and decode alike (f32 activations between products and f32 sums), against f32 above and llama.cpp with f16 weights.', '');
  md.push('| model | prefill 512 bf16 | vs llama.cpp f16 | decode @0 bf16 | vs f32 | vs llama.cpp f16 | decode @2048 bf16 | vs f32 | vs llama.cpp f16 | peak RSS |', '|---|---|---|---|---|---|---|---|---|---|');
  const bf16: Record<string, { p512: BenchJson; d0: BenchJson; d2048: BenchJson }> = {};
  for (const shape of ['small', 'medium'] as const) {
    const t = ['--shape', shape, '--threads', '1', '--weights', 'bf16', '--prompt-tokens', '1'];
    const gen = shape === 'small' ? '32' : '16';
    const r = {
      p512: kvpressBench(['--shape', shape, '--threads', '1', '--weights', 'bf16', '--prompt-tokens', '512', '--gen-tokens', '0']),
      d0: kvpressBench([...t, '--gen-tokens', gen]), d2048: kvpressBench([...t, '--depth', '2048', '--gen-tokens', gen]),
    };
    bf16[shape] = r;
    const f32 = models[`${shape}@1`] as Record<string, BenchJson>;
    const ref = LLAMA_CPP_F16[shape];
    const d0 = r.d0.decodeTokensPerSecond, d2048 = r.d2048.decodeTokensPerSecond;
    const p = r.p512.prefillTokensPerSecond;
    md.push(`| ${shape} | ${fmt(p)} | ${ref.p512 === null ? '—' : `${fmt(p)} vs ${ref.p512}: **${ratio(p, ref.p512)}**`} | ${fmt(d0)} | ${ratio(d0, f32.d0.decodeTokensPerSecond)} | ${fmt(d0)} vs ${ref.decode}: **${ratio(d0, ref.decode)}** | ${fmt(d2048)} | ${ratio(d2048, f32.d2048.decodeTokensPerSecond)} | ${fmt(d2048)} vs ${ref.decode2048}: **${ratio(d2048, ref.decode2048)}** | ${mib(Math.max(r.p512.peakRssBytes, r.d0.peakRssBytes, r.d2048.peakRssBytes))} |`);
  }
  json.bf16Weights = bf16;

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
  const presses = await runPressBench();
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

await main();
