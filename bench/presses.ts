/**
 * Press overhead: the time each press spends choosing what to keep (scoring and selection),
 * as a fraction of the prefill it compresses. `measurePressOverhead()` is what `npm run bench`
 * includes; `node dist/bench/presses.js [--json] [--press NAME ...]` runs it alone on
 * stories260K at T = 512 and on a random SmolLM2-135M-shaped model at T = 4096.
 *
 * Every press scores the same contexts in a single prefill: at each layer's hook each press gets
 * a fresh LayerContext over the layer's still uncompressed cache (so no press inherits another's
 * lazily computed queries) and its keep indices are discarded. The prefill time is the forward
 * pass's wall time minus the time spent in the presses. Three prefills of up to 512 tokens run first as a warm-up.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createBackend } from '../src/backend/index.js';
import { benchTokens } from '../src/bench/model-bench.js';
import { benchModelOfShape } from '../src/bench/shapes.js';
import { LayerContext } from '../src/model/layer-context.js';
import type { Model } from '../src/model/model.js';
import { calibrate } from '../src/presses/expected-attention-calibration.js';
import { presses } from '../src/presses/index.js';
import { PressError, type Press } from '../src/presses/press.js';
import { writeQueryStats } from '../src/presses/stats-format.js';
import { writeSurrogate } from '../src/presses/kvzip-surrogate.js';

export interface PressOverhead {
  press: string;
  /** Milliseconds spent in the press over all layers. */
  ms: number;
  /** ms / prefill milliseconds. */
  fraction: number;
}

export interface PressOverheadResult {
  model: string;
  backend: string;
  tokens: number;
  /** The prefill's own time, without the presses. */
  prefillMs: number;
  presses: PressOverhead[];
}

/** Times every press of `list` on the contexts of one prefill of `tokens` deterministic tokens. */
export function measurePressOverhead(model: Model, tokens: number, list: readonly { name: string; press: Press }[], clock: () => number = () => performance.now()): PressOverheadResult {
  const ids = benchTokens(tokens, model.config.vocabSize);
  const spent = new Float64Array(list.length);
  for (const { press } of list) press.validate?.(model);
  const timer = {
    // A press that reads the attention's column sums gets them from the pass, as in a real prefill.
    attentionColumns: list.some(({ press }) => press.attentionColumns),
    compress(ctx: LayerContext): null {
      list.forEach(({ press }, i) => {
        const own = new LayerContext(ctx.model, ctx.layer, ctx.kvCache, ctx.isPrefill, ctx.rows, ctx.hidden, ctx.positions, ctx.queries, ctx.tokens, ctx.columns);
        const t0 = clock();
        press.compress(own);
        spent[i] += clock() - t0;
      });
      return null;
    },
  };
  // Prefills first, so that no press is timed while its code is still being compiled or its
  // buffers grown: with one 128-token warm-up, stories260K's Expected Attention at T = 512 took
  // 17, 10, then 2.7 ms in three runs; after three warm-ups of up to 512 tokens, 2.2 ms from the first.
  for (let i = 0; i < 3; i++) model.forward(ids.slice(0, Math.min(tokens, 512)), model.newCache(), { logits: 'none', press: timer });
  spent.fill(0);
  model.reserve(tokens, tokens);
  const t0 = clock();
  model.forward(ids, model.newCache(), { logits: 'none', press: timer });
  const total = clock() - t0;
  const prefillMs = total - spent.reduce((a, b) => a + b, 0);
  return {
    model: model.source, backend: model.backend.name, tokens, prefillMs,
    presses: list.map(({ name }, i) => ({ press: name, ms: spent[i], fraction: spent[i] / prefillMs })),
  };
}

/**
 * Every registered press at `ratio` that acts on a prefill, as the registry lists them (a press
 * registered later shows up by itself). Presses whose phase is decoding do nothing in a prefill
 * and are left out; presses that read query statistics get a file calibrated on random
 * tokens (the cost of scoring does not depend on the statistics' values); Expected Attention is
 * also timed with precision=mixed. Returns a cleanup.
 */
export function registeredPresses(model: Model, ratio = 0.5, only?: readonly string[]): { list: { name: string; press: Press }[]; skipped: { name: string; why: string }[]; cleanup: () => void } {
  const acts = (n: string) => (presses.get(n).phase ?? 'prefill') !== 'decoding';
  const names = presses.names().filter((n) => (only ? only.includes(n) : acts(n)));
  let dir: string | null = null;
  const statsFile = () => {
    if (dir) return join(dir, 'stats.json');
    dir = mkdtempSync(join(tmpdir(), 'kvpress-bench-'));
    const n = Math.min(256, model.config.maxPositionEmbeddings);
    writeQueryStats(join(dir, 'stats.json'), calibrate(model, [benchTokens(n, model.config.vocabSize, 3)]));
    return join(dir, 'stats.json');
  };
  // KVzap's cost does not depend on its weights either: a zero MLP of the library's default type.
  let sdir: string | null = null;
  const surrogateFile = () => {
    sdir ??= mkdtempSync(join(tmpdir(), 'kvpress-bench-'));
    const c = model.config, W = 32, z = (n: number) => new Float32Array(n);
    const layers = Array.from({ length: c.numLayers }, () => ({ w1: z(W * c.hiddenSize), b1: z(W), w2: z(c.numKvHeads * W), b2: z(c.numKvHeads) }));
    writeSurrogate(join(sdir, 'kvzap.safetensors'), { type: 'mlp', hiddenSize: c.hiddenSize, numKvHeads: c.numKvHeads, width: W, layers, model: model.source, tokens: 0 });
    return join(sdir, 'kvzap.safetensors');
  };
  const list: { name: string; press: Press }[] = [];
  const skipped: { name: string; why: string }[] = [];
  for (const name of names) {
    const needsStats = 'stats' in presses.get(name).options, needsSurrogate = 'surrogate' in presses.get(name).options;
    // Presses that need a file of their own (budgets, head patterns, gates, adapters), a question
    // or no ratio at all cannot run in a bare prefill: they are listed as skipped with the reason.
    // Finch reads a question at the end of the sequence: the last 32 tokens stand for it.
    const extra = name === 'finch' ? { windowSize: 32 } : {};
    try {
      const press = presses.create(name, acts(name) ? ratio : 0, needsStats ? { stats: statsFile() } : needsSurrogate ? { surrogate: surrogateFile() } : extra);
      if (name === 'think') skipped.push({ name, why: 'it prunes key channels in the cache itself, which the presses timed after it on the same cache would then read' });
      else if (typeof (press as { afterPrefill?: unknown }).afterPrefill === 'function') skipped.push({ name, why: 'its work is a second pass after the prefill, which this per-layer timer does not run; its cost is a multiple of the prefill (README)' });
      else list.push({ name, press });
    } catch (e) {
      if (!(e instanceof PressError)) throw e;
      skipped.push({ name, why: e.message });
    }
  }
  // The flagship's faster numerics, beside its float64 default.
  if (names.includes('expected_attention')) list.push({ name: 'expected_attention precision=mixed', press: presses.create('expected_attention', ratio, { precision: 'mixed' }) });
  return { list, skipped, cleanup: () => { for (const d of [dir, sdir]) if (d) rmSync(d, { recursive: true, force: true }); } };
}

/** CPU milliseconds of the process: with 1 kernel thread, what other load on the machine does not change. */
export const cpuClock = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };

/** The two standard measurements (stories260K at 512 tokens, SmolLM2-135M shape at 4096). */
export async function runPressBench(opts: { only?: string[]; backend?: ReturnType<typeof createBackend>; clock?: () => number; clockName?: string } = {}): Promise<{ markdown: string; json: PressOverheadResult[] }> {
  const backend = opts.backend ?? createBackend();
  const results: PressOverheadResult[] = [];
  const skipped = new Map<string, string>();
  for (const [shape, T] of [['stories260K', 512], ['small', 4096]] as const) {
    const model = await benchModelOfShape(shape, backend);
    const { list, skipped: notRun, cleanup } = registeredPresses(model, 0.5, opts.only);
    for (const { name, why } of notRun) skipped.set(name, why);
    try {
      results.push(measurePressOverhead(model, T, list, opts.clock));
    } finally {
      cleanup();
    }
  }
  const lines = ['| press | ' + results.map((r) => `${r.model}, T=${r.tokens} (prefill ${(r.prefillMs / 1000).toFixed(2)} s, ${r.backend})`).join(' | ') + ' |', '|---|' + results.map(() => '---|').join('')];
  for (const name of new Set(results.flatMap((r) => r.presses.map((p) => p.press)))) {
    lines.push(`| ${name} | ` + results.map((r) => {
      const p = r.presses.find((q) => q.press === name);
      return p ? `${p.ms.toFixed(1)} ms (${(100 * p.fraction).toFixed(1)}%)` : '—';
    }).join(' | ') + ' |');
  }
  if (skipped.size) lines.push('', 'Not timed (they cannot run in a bare prefill): ' + [...skipped].map(([n, why]) => `\`${n}\` (${why.replace(/^press "[^"]+": /, '')})`).join('; ') + '.');
  const how = `${backend.threads} kernel thread${backend.threads === 1 ? '' : 's'}, ${opts.clockName ?? 'wall time'}`;
  return { markdown: `Press overhead: time choosing what to keep, as a share of the prefill (${how}). Goals (issue 12): Expected Attention ≤ 2 %, every other token-scoring press ≤ 10 % at T = 4096; kvzip's extra passes are a multiple of the prefill.\n\n${lines.join('\n')}`, json: results };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const only = args.flatMap((a, i) => (args[i - 1] === '--press' ? [a] : []));
  // --threads N: kernel threads (default: every core); --cpu: time in CPU milliseconds of the
  // process instead of wall time (with --threads 1, what other load on the machine does not change).
  const threads = args.includes('--threads') ? Number(args[args.indexOf('--threads') + 1]) : undefined;
  const clock = args.includes('--cpu') ? cpuClock : undefined;
  const r = await runPressBench({ only: only.length ? only : undefined, backend: threads ? createBackend({ threads }) : undefined, clock, clockName: clock ? 'CPU time of the process' : undefined });
  console.log(args.includes('--json') ? JSON.stringify(r.json, null, 2) : r.markdown);
}
