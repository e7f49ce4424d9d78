import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { createBackend } from '../src/backend/index.js';
import { continuationStories, nameRecallStories } from '../src/eval/datasets/stories.js';
import { contextBoundary, continuationReference, recallReference, scoreContinuation, scoreRecall } from '../src/eval/fidelity.js';
import { klDivergence, tokenNll } from '../src/eval/metrics.js';
import { formatTick, niceTicks, renderSvg } from '../src/eval/plot.js';
import { formatValue } from '../src/eval/report-groups.js';
import { readRuns } from '../src/eval/report-runs.js';
import { writeReport } from '../src/eval/report.js';
import { formatRatio, runDirName } from '../src/eval/names.js';
import { parsePressOption, parseRatios, parseShard, parseTargetSizes, type EvalOptions } from '../src/eval/options.js';
import { planRuns, shardRuns } from '../src/eval/plan.js';
import { isDecodingName } from '../src/eval/press-setup.js';
import type { RunMetrics } from '../src/eval/run-metrics.js';
import { runEval } from '../src/eval/runner.js';
import type { LayerContext } from '../src/model/layer-context.js';
import { loadModel } from '../src/model/load.js';
import { presses } from '../src/presses/index.js';
import { runCli } from './helpers/cli.js';

// One thread: the 260K-parameter model is too small for threads to pay off.
const backend = createBackend({ threads: 1 });
const model = await loadModel(undefined, { backend });
const V = model.config.vocabSize;
const tmp = (): string => mkdtempSync(join(tmpdir(), 'kvpress-eval-'));

// ───────────────────────────── names, plan, shards ─────────────────────────────

test('run folder names: two decimals at least, never a lossy ratio', () => {
  assert.equal(formatRatio(0), '0.00');
  assert.equal(formatRatio(0.5), '0.50');
  assert.equal(formatRatio(0.875), '0.875');
  assert.equal(runDirName('continuation', 'stories260K', 'knorm', 0.25), 'continuation__stories260K__knorm__0.25');
  assert.equal(runDirName('niah', 'm', 'snapkv', 0.5, true), 'niah__m__snapkv__0.50__query_aware');
});

test('the plan starts with the no-press baseline, then press × ratio in the order given', () => {
  const plan = planRuns('d', 'm', ['a', 'b'], [0.25, 0.5]);
  assert.deepEqual(plan.map((r) => `${r.index}:${r.press}@${r.ratio}`), ['0:no_press@0', '1:a@0.25', '2:a@0.5', '3:b@0.25', '4:b@0.5']);
});

test('shards partition the plan: disjoint, complete, assigned by index mod n', () => {
  const plan = planRuns('d', 'm', ['a', 'b', 'c'], [0.25, 0.5, 0.75]); // 10 runs
  const parts = [1, 2, 3].map((i) => shardRuns(plan, { index: i, count: 3 }));
  assert.deepEqual(parts.map((p) => p.map((r) => r.index)), [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]);
  assert.deepEqual(parts.flat().map((r) => r.index).sort((a, b) => a - b), plan.map((r) => r.index));
});

test('argument parsers accept the documented forms and reject the rest in one line', () => {
  assert.deepEqual(parseShard('2/5'), { index: 2, count: 5 });
  for (const bad of ['0/2', '3/2', '1/0', 'x', '1/2/3', '-1/2']) assert.throws(() => parseShard(bad), /--shard must be i\/n/);
  assert.deepEqual(parseRatios('0.25, 0.5,0.875'), [0.25, 0.5, 0.875]);
  for (const bad of ['1', '0.5,', '-0.1', 'abc', '0.5,0.5']) assert.throws(() => parseRatios(bad), /--ratios/);
  assert.deepEqual(parsePressOption('windowSize=8'), { press: undefined, key: 'windowSize', value: '8' });
  assert.deepEqual(parsePressOption('snapkv.windowSize=8'), { press: 'snapkv', key: 'windowSize', value: '8' });
  assert.throws(() => parsePressOption('windowSize'), /key=value/);
  assert.ok(isDecodingName('decoding_expected_attention') && isDecodingName('prefill_decoding_expected_attention'));
  assert.ok(!isDecodingName('expected_attention') && !isDecodingName('adakv_snapkv'));
});

// ───────────────────────────── fidelity metrics ─────────────────────────────

const story = continuationStories({ count: 1, seed: 7 })[0];
const ref = continuationReference(model, story.id, story.text, 0.6);

test('src/eval has no runtime import cycle (type-only imports aside): each module can be read on its own', () => {
  const root = new URL('../../src/eval/', import.meta.url).pathname;
  const files = (readdirSync(root, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts')).map((f) => join(root, f));
  const edges = new Map<string, string[]>();
  for (const f of files) {
    const src = readFileSync(f, 'utf8');
    // `import type` / `export type` vanish at run time; every other relative import is an edge.
    const targets = [...src.matchAll(/^(?:import|export)\s+(?!type\s)[^;]*?from\s+'(\.[^']+)\.js'/gms)].map((m) => join(dirname(f), `${m[1]}.ts`));
    edges.set(f, targets.filter((t) => files.includes(t)));
  }
  assert.ok(edges.size >= 20, `expected the eval modules, found ${edges.size}`);
  const state = new Map<string, 'open' | 'done'>();
  const visit = (f: string, path: string[]): void => {
    if (state.get(f) === 'done') return;
    if (state.get(f) === 'open') assert.fail(`import cycle: ${[...path.slice(path.indexOf(f)), f].map((p) => p.slice(root.length)).join(' → ')}`);
    state.set(f, 'open');
    for (const t of edges.get(f)!) visit(t, [...path, f]);
    state.set(f, 'done');
  };
  for (const f of files) visit(f, []);
});

test('continuation: the context is the first 60 % of the tokens, BOS included; scoring starts at the second continuation token', () => {
  const n = ref.tokens.length;
  assert.equal(ref.tokens[0], model.tokenizer!.bosId);
  assert.equal(ref.context, Math.round(0.6 * n));
  const s = scoreContinuation(model, ref, null);
  assert.equal(s.scoredTokens, n - ref.context - 1);
  assert.equal(contextBoundary(10, 0.6), 6);
  assert.equal(contextBoundary(3, 0.01), 1);
  assert.equal(contextBoundary(3, 0.99), 2);
});

test('continuation reference NLL equals the NLL of one uncompressed pass over the whole story', () => {
  // Independent of the prefill/continuation split: one forward, rows t predict token t + 1.
  const logits = model.forward(ref.tokens, model.newCache(), { logits: 'all' });
  let nll = 0;
  for (let t = ref.context; t < ref.tokens.length - 1; t++) nll += tokenNll(logits.subarray(t * V, (t + 1) * V), ref.tokens[t + 1]);
  assert.ok(Math.abs(nll - ref.nll) < 1e-3 * ref.tokens.length, `${nll} vs ${ref.nll}`);
});

test('ratio 0 gives KL exactly 0 and NLL increase exactly 0; so does a press that keeps every entry', () => {
  const keepAll = {
    compress(ctx: LayerContext) {
      return Array.from(ctx.cache.lengths, (n) => Int32Array.from({ length: n }, (_, i) => i));
    },
  };
  for (const press of [presses.create('knorm', 0), presses.create('expected_attention', 0), keepAll]) {
    const s = scoreContinuation(model, ref, press);
    assert.equal(s.kl, 0);
    assert.equal(s.nll - s.nllBaseline, 0);
    assert.equal(s.achievedRatio, 0);
  }
});

test('continuation KL under compression equals the mean KL of a token-by-token replay', () => {
  const press = presses.create('knorm', 0.75);
  const s = scoreContinuation(model, ref, press);
  assert.ok(s.kl > 0, 'removing 75 % of the context must move the distributions');
  assert.ok(s.achievedRatio > 0.7 && s.achievedRatio < 0.8, `achieved ${s.achievedRatio}`);
  // Replay: compress the context, then feed the continuation one token at a time, comparing
  // each next-token distribution with a one-token-at-a-time uncompressed replay.
  const { tokens, context } = ref;
  const cache = model.newCache(), base = model.newCache();
  model.forward(tokens.slice(0, context), cache, { logits: 'none', press });
  model.forward(tokens.slice(0, context), base, { logits: 'none' });
  let kl = 0, nll = 0;
  for (let t = context; t < tokens.length - 1; t++) {
    const q = model.forward([tokens[t]], cache, { logits: 'last' }).slice();
    const p = model.forward([tokens[t]], base, { logits: 'last' }).slice();
    kl += klDivergence(p, q);
    nll += tokenNll(q, tokens[t + 1]);
  }
  assert.ok(Math.abs(kl - s.kl) < 1e-3 * (1 + kl), `KL ${s.kl} vs replay ${kl}`);
  assert.ok(Math.abs(nll - s.nll) < 1e-3 * s.scoredTokens, `NLL ${s.nll} vs replay ${nll}`);
});

test('name recall: the reference predictions are the greedy tokens at the name positions; ratio 0 changes nothing', () => {
  const items = nameRecallStories({ count: 3, seed: 3 });
  for (const item of items) {
    const r = recallReference(model, item, 0.6)!;
    assert.ok(r, `${item.id}: name tokens isolated`);
    assert.equal(model.tokenizer!.decode(r.tokens), `${item.prefix} ${item.answer}`);
    assert.equal(model.tokenizer!.decode(r.answerTokens).trim(), item.answer);
    // Independent: one uncompressed pass over prefix + name, argmax where each name token is predicted.
    const n = r.tokens.length, m = r.answerTokens.length;
    const logits = model.forward(r.tokens, model.newCache(), { logits: 'all' });
    const greedy: number[] = [];
    for (let t = n - m - 1; t < n - 1; t++) {
      let best = 0;
      for (let i = 1; i < V; i++) if (logits[t * V + i] > logits[t * V + best]) best = i;
      greedy.push(best);
    }
    assert.deepEqual(r.predicted, greedy);
    const s = scoreRecall(model, r, presses.create('snapkv', 0));
    assert.deepEqual(s.predicted, r.predicted);
    assert.equal(s.answerNll, r.answerNll);
    assert.equal(s.correct, s.baselineCorrect);
  }
});

// ───────────────────────────── the grid, resume, shards, report ─────────────────────────────

const grid = (output: string, extra: Partial<EvalOptions> = {}): EvalOptions => ({
  dataset: 'continuation', presses: ['knorm', 'streaming_llm'], ratios: [0.5, 0.75], limit: 2, output, backend, ...extra,
});

const readMetrics = (dir: string, run: string): RunMetrics => JSON.parse(readFileSync(join(dir, run, 'metrics.json'), 'utf8')) as RunMetrics;

test('smoke grid: 2 presses × 2 ratios + baseline on continuation writes every run; a second invocation skips them', async () => {
  const dir = tmp();
  const first = await runEval(grid(dir));
  assert.equal(first.planned.length, 5);
  assert.equal(first.ran.length, 5);
  const folders = readdirSync(dir).sort();
  assert.deepEqual(folders, [
    'continuation__stories260K__knorm__0.50', 'continuation__stories260K__knorm__0.75', 'continuation__stories260K__no_press__0.00',
    'continuation__stories260K__streaming_llm__0.50', 'continuation__stories260K__streaming_llm__0.75',
  ]);
  for (const f of folders) {
    assert.deepEqual(readdirSync(join(dir, f)).sort(), ['config.json', 'metrics.json', 'predictions.jsonl']);
    const lines = readFileSync(join(dir, f, 'predictions.jsonl'), 'utf8').trim().split('\n');
    assert.equal(lines.length, 2);
    const cfg = JSON.parse(readFileSync(join(dir, f, 'config.json'), 'utf8')) as { settings: { limit: number; seed: number } };
    assert.deepEqual([cfg.settings.limit, cfg.settings.seed], [2, 42]);
  }
  const base = readMetrics(dir, 'continuation__stories260K__no_press__0.00');
  assert.equal(base.scores.kl, 0);
  assert.equal(base.scores.nll_increase, 0);
  const k = readMetrics(dir, 'continuation__stories260K__knorm__0.75');
  assert.equal(k.items, 2);
  assert.ok(k.scores.kl > 0 && k.scores.nll > 0);
  assert.ok(Math.abs(k.scores.achieved_ratio - 0.75) < 0.02);

  const before = statSync(join(dir, 'continuation__stories260K__knorm__0.50', 'metrics.json')).mtimeMs;
  const second = await runEval(grid(dir));
  assert.equal(second.ran.length, 0);
  assert.equal(second.skipped.length, 5);
  assert.equal(statSync(join(dir, 'continuation__stories260K__knorm__0.50', 'metrics.json')).mtimeMs, before);
  // Same folder, other settings: reusing the runs would mix incomparable numbers.
  await assert.rejects(runEval(grid(dir, { limit: 3 })), /run with other settings \(limit 2 ≠ 3\)/);
});

test('decoding presses run over --target-sizes, and a configuration that cannot compress the task is refused', async () => {
  // Plan: a decoding-only press takes target sizes at ratio 0, a prefill+decoding press ratio × size, the others ratios.
  const plan = planRuns('niah', 'm', ['decoding_expected_attention', 'prefill_decoding_expected_attention', 'knorm'], [0.5], false, ['f32'], [64, 128]);
  assert.deepEqual(plan.map((r) => r.dir), [
    'niah__m__no_press__0.00',
    'niah__m__decoding_expected_attention__0.00__target64', 'niah__m__decoding_expected_attention__0.00__target128',
    'niah__m__prefill_decoding_expected_attention__0.50__target64', 'niah__m__prefill_decoding_expected_attention__0.50__target128',
    'niah__m__knorm__0.50',
  ]);
  assert.deepEqual(parseTargetSizes('64, 256'), [64, 256]);
  assert.throws(() => parseTargetSizes('64,0.5'), /--target-sizes must be comma-separated integers ≥ 1, got "0.5"/);
  assert.throws(() => parseTargetSizes('64,64'), /repeated value/);

  const dir = tmp();
  const opts = (o: Partial<EvalOptions>): EvalOptions => ({ dataset: 'niah', presses: ['decoding_expected_attention'], limit: 2, output: dir, backend, ...o });
  await assert.rejects(runEval(opts({})), /decoding_expected_attention compresses to a target size while generating, not by a ratio: give --target-sizes/);
  await assert.rejects(runEval(opts({ presses: ['knorm'], targetSizes: [64] })), /--target-sizes applies to presses with a targetSize option/);
  // NIAH answers are short: the default interval of 512 decoding steps is never reached.
  await assert.rejects(runEval(opts({ targetSizes: [64] })), /at target size 64 cannot compress niah: it compresses every compressionInterval = 512 decoding steps and the longest answer takes \d+/);
  const interval = [{ key: 'compressionInterval', value: '8' }];
  await assert.rejects(runEval(opts({ targetSizes: [64, 100000], pressOptions: interval })), /at target size 100000 cannot compress niah: targetSize 100000 keeps every entry/);
  assert.equal(readdirSync(dir).filter((f) => f.includes('__')).length, 0, 'a refused grid runs nothing');

  const done = await runEval(opts({ targetSizes: [64], pressOptions: interval }));
  assert.deepEqual(done.ran.map((r) => r.dir), ['niah__stories260K__no_press__0.00', 'niah__stories260K__decoding_expected_attention__0.00__target64']);
  const m = readMetrics(dir, 'niah__stories260K__decoding_expected_attention__0.00__target64');
  assert.deepEqual([m.compressionRatio, m.targetSize, m.items], [0, 64, 2]);
});

test('shards run disjoint parts of the grid into one folder; the report merges them', async () => {
  const dir = tmp();
  const a = await runEval(grid(dir, { shard: { index: 1, count: 2 } }));
  assert.deepEqual(a.ran.map((r) => r.index), [0, 2, 4]);
  assert.equal(readRuns(dir).runs.length, 3);
  const b = await runEval(grid(dir, { shard: { index: 2, count: 2 } }));
  assert.deepEqual(b.ran.map((r) => r.index), [1, 3]);
  assert.equal((await runEval(grid(dir))).ran.length, 0);

  const out = join(dir, 'report');
  const r = await writeReport(dir, out);
  assert.equal(r.runs, 5);
  const md = readFileSync(join(out, 'report.md'), 'utf8');
  // One table per score; the KL table has a row per press and a column per ratio.
  const kl = md.slice(md.indexOf('### KL'));
  const rows = kl.split('\n').filter((l) => l.startsWith('| '));
  assert.equal(rows[0], '| press | 0.50 | 0.75 | mean |');
  assert.deepEqual(rows.slice(1, 3).map((l) => l.split(' | ')[0].slice(2)).sort(), ['knorm', 'streaming_llm']);
  assert.match(kl, /No press: 0\n/);
  for (const f of ['continuation__stories260K__kl', 'continuation__stories260K__nll_increase']) {
    assert.match(readFileSync(join(out, `${f}.svg`), 'utf8'), /^<svg[^>]*>[\s\S]*stroke-dasharray[\s\S]*<\/svg>\n$/);
    assert.deepEqual([...readFileSync(join(out, `${f}.png`)).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    assert.ok(md.includes(`](${f}.png)`));
  }
});

test('the report leaves out incomplete runs and says so', async () => {
  const dir = tmp();
  await runEval(grid(dir, { presses: ['knorm'], ratios: [0.5] }));
  const { mkdirSync, writeFileSync } = await import('node:fs');
  mkdirSync(join(dir, 'continuation__stories260K__knorm__0.75'));
  writeFileSync(join(dir, 'continuation__stories260K__knorm__0.75', 'config.json'), '{}');
  const r = await writeReport(dir);
  assert.deepEqual([r.runs, r.incomplete], [2, 1]);
  assert.match(readFileSync(join(dir, 'report.md'), 'utf8'), /1 incomplete run folder left out: continuation__stories260K__knorm__0.75/);
});

// ───────────────────────────── CLI ─────────────────────────────

test('kvpress eval and report from the command line', async () => {
  const dir = tmp();
  const r = await runCli(['eval', '--dataset', 'name_recall', '--press', 'knorm', '--ratios', '0.5', '--limit', '2', '--output', dir]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /2 runs done, 0 already complete/);
  const m = readMetrics(dir, 'name_recall__stories260K__knorm__0.50');
  assert.equal(m.items, 2);
  assert.ok(m.scores.accuracy >= 0 && m.scores.accuracy <= 100);
  const rep = await runCli(['report', dir, '--output', join(dir, 'out')]);
  assert.equal(rep.code, 0, rep.stderr);
  assert.ok(existsSync(join(dir, 'out', 'name_recall__stories260K__accuracy.png')));
});

test('eval errors are one line with exit code 2', async () => {
  const cases: [string[], RegExp][] = [
    [['--dataset', 'contination', '--press', 'knorm'], /unknown dataset "contination" \(did you mean continuation\?\)/],
    [['--dataset', 'continuation', '--press', 'knrom'], /unknown press "knrom" \(did you mean knorm/],
    [['--dataset', 'continuation', '--press', 'knorm', '--ratios', '0.5,1.5'], /--ratios must be/],
    [['--dataset', 'continuation', '--press', 'knorm', '--shard', '3/2'], /--shard must be i\/n/],
    [['--dataset', 'continuation'], /--press is required/],
    [['--dataset', 'continuation', '--press', 'knorm', '--press-option', 'nope=1'], /none of knorm has an option "nope"/],
  ];
  for (const [args, re] of cases) {
    const r = await runCli(['eval', ...args]);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

// ───────────────────────────── plot helpers ─────────────────────────────

test('nice ticks and tick labels', () => {
  assert.deepEqual(niceTicks(0, 0.55), [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
  assert.deepEqual(niceTicks(0, 100), [0, 20, 40, 60, 80, 100]);
  assert.deepEqual(niceTicks(1.2, 1.3), [1.2, 1.22, 1.24, 1.26, 1.28, 1.3]);
  assert.deepEqual([formatTick(0), formatTick(0.875), formatTick(0.30000000000000004), formatTick(2e-5)], ['0', '0.875', '0.3', '2e-5']);
  assert.deepEqual([formatValue(0), formatValue(607), formatValue(0.0123456), formatValue(95.55), formatValue(123.45), formatValue(NaN), formatValue(2.5e-5), formatValue(3e-8)],
    ['0', '607', '0.0123', '95.5', '123.5', '—', '0.000025', '3.00e-8']);
});

test('the SVG escapes labels and draws one path per multi-point series plus the dashed baseline', () => {
  const svg = renderSvg({
    title: 'a < b & c', xLabel: 'x', yLabel: 'y',
    series: [{ label: 'p1', points: [{ x: 0.25, y: 1 }, { x: 0.5, y: 2 }] }, { label: 'p2', points: [{ x: 0.5, y: 3 }] }],
    baseline: { label: 'no press', y: 0.5 },
  });
  assert.ok(svg.includes('a &lt; b &amp; c'));
  assert.equal((svg.match(/<path d="M[^"]*" fill="none"/g) ?? []).length, 1);
  assert.equal((svg.match(/stroke-dasharray="6 4"/g) ?? []).length, 2); // the baseline and its legend entry
});

test('RULER on the 512-token model: tasks that cannot fit are skipped, and the report says which', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvpress-ruler-'));
  const r = await runCli(['eval', '--dataset', 'ruler', '--press', 'knorm', '--ratios', '0.5', '--limit', '1', '--output', dir]);
  assert.equal(r.code, 0, r.stderr);
  // The five tasks whose smallest sample needs more than 512 tokens (557 to 1277 with this tokenizer).
  const skipped = ['niah_multikey_3', 'niah_multiquery', 'vt', 'cwe', 'fwe'];
  const report = await writeReport(dir);
  const text = readFileSync(report.markdown, 'utf8');
  const notes = text.slice(text.indexOf('## Notes'));
  assert.ok(text.includes('## Notes'), text);
  for (const t of skipped) assert.match(notes, new RegExp(`RULER ${t} skipped: context length 512 is too small`));
});
