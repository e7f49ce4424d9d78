/**
 * Which presses `kvpress eval` can run, and what it reports for the unusual ones: composed names
 * (wrapper + scorer), presses that read a question, presses that set their own budget, and
 * decoding presses' achieved ratio.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createBackend } from '../src/backend/index.js';
import { needleInHaystack } from '../src/eval/datasets/niah.js';
import { SeededRandom } from '../src/eval/datasets/random.js';
import { cutBeforeLateMention, MIN_PREFIX_TOKENS } from '../src/eval/datasets/sampled-recall.js';
import { formatValue } from '../src/eval/report-groups.js';
import { writeReport } from '../src/eval/report.js';
import type { EvalOptions } from '../src/eval/options.js';
import type { RunMetrics } from '../src/eval/run-metrics.js';
import { runEval } from '../src/eval/runner.js';
import { removedAtAnswerEnd } from '../src/eval/qa-task.js';
import { loadModel } from '../src/model/load.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { presses } from '../src/presses/index.js';
import { runCli } from './helpers/cli.js';

const backend = createBackend({ threads: 1 });
const model = await loadModel(undefined, { backend });
const tmp = (): string => mkdtempSync(join(tmpdir(), 'kvpress-evalp-'));
const metrics = (dir: string, run: string): RunMetrics => JSON.parse(readFileSync(join(dir, run, 'metrics.json'), 'utf8')) as RunMetrics;
const opts = (output: string, o: Partial<EvalOptions>): EvalOptions => ({ dataset: 'continuation', presses: [], ratios: [0.5], limit: 2, output, backend, ...o });

test('composed names (wrapper + scorer) run like registered ones; a missing calibration file is refused with its reason', async () => {
  const dir = tmp();
  const s = await runEval(opts(dir, { presses: ['chunkkv_snapkv', 'merging_knorm'] }));
  assert.deepEqual(s.ran.map((r) => r.press), ['no_press', 'chunkkv_snapkv', 'merging_knorm']);
  // Merging keeps exactly the budget: ⌊T·(1 − 0.5)⌋ of each context's T entries, T from the run's own items.
  const m = metrics(dir, 'continuation__stories260K__merging_knorm__0.50');
  const items = readFileSync(join(dir, 'continuation__stories260K__merging_knorm__0.50', 'predictions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { contextTokens: number });
  const want = items.reduce((a, it) => a + 1 - Math.floor(it.contextTokens * 0.5) / it.contextTokens, 0) / items.length;
  assert.ok(Math.abs(m.scores.achieved_ratio - want) < 1e-12, `${m.scores.achieved_ratio} vs ${want}`);

  const other = tmp();
  await assert.rejects(runEval(opts(other, { presses: ['lukv_knorm'] })), /press "lukv_knorm": LUKVPress needs budget curves: budgets=FILE, written by `kvpress calibrate --lukv-budgets`/);
  await assert.rejects(runEval(opts(other, { presses: ['chunkkv_knrom'] })), /unknown press "chunkkv_knrom"/);
  assert.equal(existsSync(other) && readdirSync(other).some((f) => f.includes('__')), false, 'a refused grid runs nothing');
  const cli = await runCli(['eval', '--dataset', 'continuation', '--press', 'dms_knorm', '--limit', '1', '--output', other]);
  assert.equal(cli.code, 2);
  assert.match(cli.stderr, /dms_knorm.*set --press-option threshold=X/);
  assert.equal(cli.stderr.trim().split('\n').length, 1, cli.stderr);
});

test('finch is skipped on the story tasks (no question) with the reason recorded, and runs where the task has a question', async () => {
  const dir = tmp();
  for (const dataset of ['continuation', 'name_recall']) {
    const s = await runEval(opts(dir, { dataset, presses: ['finch', 'knorm'] }));
    assert.deepEqual(s.excluded, ['finch']);
    assert.deepEqual(s.planned.map((r) => r.press), ['no_press', 'knorm']);
  }
  const notes = readFileSync(join(dir, 'notes.txt'), 'utf8');
  assert.match(notes, /skipping finch on the continuation task: it compresses the context together with a question, and continuation items are stories with none/);
  assert.match(notes, /skipping finch on the name_recall task/);
  assert.equal(readdirSync(dir).some((f) => f.includes('finch')), false);
  // NIAH has a question: finch reads it and keeps ⌊n·(1 − ratio)⌋ of the n = context + question entries.
  const niah = tmp();
  const s = await runEval(opts(niah, { dataset: 'niah', presses: ['finch'], limit: 1 }));
  assert.deepEqual(s.excluded, []);
  assert.ok(metrics(niah, 'niah__stories260K__finch__0.50').scores.achieved_ratio > 0.45);
});

test('a press that sets its own budget runs once at ratio 0 and reports what it removed', async () => {
  const dir = tmp();
  // lazyThreshold 0: every layer is lazy, so each keeps nInitial + nRecent − nLast = 4 + 16 − 1 entries.
  const pressOptions = [{ press: 'sim_layer_kv', key: 'lazyThreshold', value: '0' }, { press: 'sim_layer_kv', key: 'nRecent', value: '16' }];
  const s = await runEval(opts(dir, { presses: ['sim_layer_kv', 'knorm'], ratios: [0.25, 0.5], pressOptions }));
  assert.deepEqual(s.planned.map((r) => `${r.press}@${r.ratio}`), ['no_press@0', 'sim_layer_kv@0', 'knorm@0.25', 'knorm@0.5']);
  const run = 'continuation__stories260K__sim_layer_kv__0.00';
  const items = readFileSync(join(dir, run, 'predictions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { contextTokens: number });
  const want = items.reduce((a, it) => a + 1 - 19 / it.contextTokens, 0) / items.length;
  assert.ok(Math.abs(metrics(dir, run).scores.achieved_ratio - want) < 1e-12);
  assert.match(readFileSync(join(dir, 'notes.txt'), 'utf8'), /sim_layer_kv takes no compression ratio \(its own settings set the budget\): one run at ratio 0 on continuation/);
  assert.equal(metrics(dir, run).ownBudget, true);
  // The report keeps it out of the ratio columns (a 0.00 column would leave every other press without a mean).
  const md = (await writeReport(dir, join(dir, 'report'))).markdown;
  const text = readFileSync(md, 'utf8');
  assert.match(text, /\| press \| 0\.25 \| 0\.50 \| mean \|\n\|---\|---:\|---:\|---:\|\n\| knorm \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|/);
  assert.ok(text.includes(`### Presses that set their own budget (no ratio: one run each)\n\n| press | achieved ratio | KL divergence (nats/token) | NLL increase (nats/token) |\n|---|---:|---:|---:|\n| sim_layer_kv | ${formatValue(want)} |`), text);
});

test('a decoding press reports the share it removed by the end of the answer, not the prefill\'s 0', async () => {
  const tok = model.tokenizer!;
  const [sample] = needleInHaystack({ tokenizer: tok, maxContextLength: 300, depths: [50], seed: 42 });
  const pipeline = new Pipeline(model);
  const ask = (press: ReturnType<typeof presses.create> | null) =>
    pipeline.run({ context: sample.context, question: sample.question, answerPrefix: sample.answerPrefix, maxNewTokens: 12, press });
  // Without a press the cache at the answer's end holds every fed token: the formula gives exactly 0.
  const plain = ask(null);
  const a = plain.stats.questions[0];
  assert.equal(a.tokensFed, a.questionTokens + a.answerTokens - (a.answerTokens === 12 ? 1 : 0));
  assert.equal(removedAtAnswerEnd(plain.stats, a), 0);
  assert.deepEqual([removedAtAnswerEnd({ ...plain.stats, cacheBytesBefore: 1000, contextTokens: 100 }, { ...a, tokensFed: 60, cacheBytesEnd: 400 })], [0.75]);

  const dir = tmp();
  const interval = [{ key: 'compressionInterval', value: '8' }];
  await runEval(opts(dir, { dataset: 'niah', presses: ['decoding_expected_attention'], targetSizes: [64], pressOptions: interval, limit: 2 }));
  const m = metrics(dir, 'niah__stories260K__decoding_expected_attention__0.00__target64');
  // Every head ends with 64 … 64 + 8 entries of the ≥ 400 tokens seen: well above 0.8 removed.
  assert.ok(m.scores.achieved_ratio > 0.8 && m.scores.achieved_ratio < 0.9, String(m.scores.achieved_ratio));
  assert.equal(metrics(dir, 'niah__stories260K__no_press__0.00').scores.achieved_ratio, 0);
});

test('sampled_recall cuts only where the prefix holds MIN_PREFIX_TOKENS tokens, so every windowed press can run', () => {
  // One "token" per word: the story introduces Tim early and mentions him at word 60 and word 200.
  const words = (n: number) => Array.from({ length: n }, (_, i) => `w${i}`).join(' ');
  const text = `Once there was a boy named Tim. ${words(55)} Tim ran. ${words(135)} Then Tim slept. ${words(20)}`;
  const count = (s: string) => 1 + s.split(/\s+/).filter(Boolean).length;
  const items = Array.from({ length: 8 }, (_, seed) => cutBeforeLateMention(text, new SeededRandom(seed), count));
  // The mention after ~60 words is in the story's first 40 % and too short anyway; only the one after ~200 is cut.
  for (const it of items) {
    assert.ok(it !== null);
    assert.equal(it.answer, 'Tim');
    assert.ok(count(it.prefix) >= MIN_PREFIX_TOKENS && it.prefix.endsWith('Then'), it.prefix.slice(-20));
  }
  // A story whose only late mention comes before MIN_PREFIX_TOKENS tokens gives no item.
  assert.equal(cutBeforeLateMention(`A cat named Max. ${words(30)} Max ate. ${words(10)}`, new SeededRandom(1), count), null);
  // SnapKV's default window of 64 fits inside 60 % of the shortest prefix.
  assert.ok(Math.round(MIN_PREFIX_TOKENS * 0.6) > 64);
});
