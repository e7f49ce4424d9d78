/**
 * The evaluation grid: one dataset, every press × compression ratio plus the no-press
 * baseline, each run written to its own folder
 *
 *   DIR/<dataset>__<model>__<press>__<ratio>[__query_aware]/
 *     predictions.jsonl   one JSON object per item
 *     config.json         what was run
 *     metrics.json        the scores — written last, so a run is complete iff it exists
 *
 * Runs are independent: complete ones are skipped (resume), and `shard i/n` takes every n-th
 * run of the plan so machines sharing DIR split a grid without coordination.
 */
import { KV_DTYPES, type KvDtype } from '../cache/format.js';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { defaultModelPath, loadModel } from '../model/load.js';
import { Model } from '../model/model.js';
import { isDecodingPress, Pipeline } from '../pipeline/pipeline.js';
import { presses as registry } from '../presses/index.js';
import type { Press } from '../presses/press.js';
import { closeMatches } from '../presses/registry.js';
import { loadJsonl } from './datasets/jsonl.js';
import { needleInHaystack } from './datasets/niah.js';
import { generateRuler, RULER_TASKS } from './datasets/ruler.js';
import { sampledRecallStories } from './datasets/sampled-recall.js';
import { continuationStories, nameRecallStories } from './datasets/stories.js';
import type { Sample } from './datasets/types.js';
import {
  continuationReference,
  DEFAULT_CONTEXT_FRACTION,
  recallReference,
  scoreContinuation,
  scoreRecall,
  summarizeContinuation,
  summarizeRecall,
  type ContinuationReference,
  type RecallReference,
} from './fidelity.js';
import { aime25Metrics, longbenchScore, math500Metrics, niahRouge, rulerScores, stringMatchPart } from './metrics.js';

/** The baseline run's press name; it always runs, at ratio 0. */
export const NO_PRESS = 'no_press';
export const DEFAULT_RATIOS: readonly number[] = [0.25, 0.5, 0.75, 0.875];
export const DEFAULT_SEED = 42;
export const DATASETS = ['continuation', 'name_recall', 'sampled_recall', 'ruler', 'niah', 'jsonl:PATH'] as const;

/** Items per run when --limit is not given (RULER: samples per task). */
const DEFAULT_LIMITS: Record<string, number> = { continuation: 100, name_recall: 200, sampled_recall: 200, ruler: 10 };
/** NIAH needle depths, one sample each (--limit keeps the first N). */
const NIAH_DEPTHS = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
/** RULER / NIAH default target length; the model's window caps it. */
const DEFAULT_CONTEXT_LENGTH = 4096;

/** How the report shows one score. */
export interface ScoreInfo {
  label: string;
  /** Absent for descriptive numbers (token counts, achieved ratios). */
  better?: 'higher' | 'lower';
  /** Drawn as a plot (the headline scores); every score gets a table. */
  plot: boolean;
  /** Short y-axis label for the plot (default: the label). */
  axis?: string;
  /** Fixed plot range, e.g. [0, 100] for percentages. */
  range?: [number, number];
}

/** The content of metrics.json. */
export interface RunMetrics {
  dataset: string;
  model: string;
  press: string;
  compressionRatio: number;
  queryAware: boolean;
  /** KV cache type of the run; absent in runs written before the axis existed (f32). */
  kvDtype?: KvDtype;
  items: number;
  scores: Record<string, number>;
  scoreInfo: Record<string, ScoreInfo>;
  seconds: number;
}

/** One cell of the grid. `index` is its place in the full plan (the shard key). */
export interface RunSpec {
  index: number;
  press: string;
  ratio: number;
  /** Element type of the compressed run's KV cache (the references stay f32). */
  kvDtype: KvDtype;
  dir: string;
}

/** A press option from the command line: `key=value` for every press that has `key`, or `press.key=value`. */
export interface PressOptionArg {
  press?: string;
  key: string;
  value: string;
}

export interface EvalOptions {
  /** continuation, name_recall, sampled_recall, ruler, niah or jsonl:PATH. */
  dataset: string;
  presses: readonly string[];
  ratios?: readonly number[];
  /**
   * KV cache types of the compressed runs (default ['f32']): the grid is repeated per type, each
   * with its own no-press run; the uncompressed references stay f32, so KL and ΔNLL measure
   * type and press together.
   */
  kvDtypes?: readonly KvDtype[];
  /** Model path (llama2.c .bin or Hugging Face directory); default the embedded stories260K. */
  model?: string;
  /** Items per run (RULER: samples per task). */
  limit?: number;
  /** Default "results". */
  output?: string;
  /** 1-based: shard `index` of `count` runs plan entries index, index+count, … (0-based: index−1, …). */
  shard?: { index: number; count: number };
  pressOptions?: readonly PressOptionArg[];
  /** continuation / name_recall / sampled_recall: share of the tokens compressed (default 0.6). */
  contextFraction?: number;
  /** ruler / niah: target context length in tokens (default min(4096, the model's window)). */
  contextLength?: number;
  /** ruler / niah / jsonl: append the question to the context before compression. */
  queryAware?: boolean;
  seed?: number;
  backend?: Backend;
  onProgress?: (p: EvalProgress) => void;
  /** Notices worth a line on stderr (skipped presses, finished runs). */
  onNotice?: (line: string) => void;
}

export interface EvalProgress {
  run: RunSpec;
  /** Runs finished by this invocation, and runs it will execute in all. */
  runsDone: number;
  runsTotal: number;
  item: number;
  items: number;
  elapsedMs: number;
  /** Estimated time left, null until the first item is done. */
  etaMs: number | null;
}

export interface EvalSummary {
  output: string;
  /** The whole grid, this shard's part of it, what was already complete and what ran now. */
  planned: RunSpec[];
  mine: RunSpec[];
  skipped: RunSpec[];
  ran: RunSpec[];
  /** Decoding presses left out of a prefill-only dataset. */
  excluded: string[];
}

/** A mistake in what was asked (unknown dataset or press, bad ratio or shard): one line, exit 2. */
export class EvalError extends Error {}

// ───────────────────────────── names and the plan ─────────────────────────────

/** "0.25", "0.875", "0.00": at least two decimals (as the Python library's .2f), never lossy. */
export function formatRatio(r: number): string {
  let d = 2;
  while (d < 6 && Number(r.toFixed(d)) !== r) d++;
  return r.toFixed(d);
}

/** A name safe in a folder name (the path separators and oddities become "-"). */
function slug(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^-+|-+$/g, '') || 'x';
}

/** The model as named in run folders: the checkpoint's file name without extension, or the directory's name. */
export function modelName(path: string | undefined): string {
  const p = path ?? defaultModelPath();
  const isDir = existsSync(p) && statSync(p).isDirectory();
  return slug(isDir ? basename(p.replace(/[/\\]+$/, '')) : basename(p, extname(p)));
}

interface DatasetRef {
  kind: 'continuation' | 'name_recall' | 'sampled_recall' | 'ruler' | 'niah' | 'jsonl';
  /** As it appears in folder names: jsonl:data/hotpotqa.jsonl → jsonl-hotpotqa. */
  label: string;
  path?: string;
}

export function parseDataset(name: string): DatasetRef {
  if (name.startsWith('jsonl:')) {
    const path = name.slice('jsonl:'.length);
    if (path === '') throw new EvalError('jsonl dataset needs a file: --dataset jsonl:PATH');
    if (!existsSync(path)) throw new EvalError(`${path}: no such dataset file`);
    return { kind: 'jsonl', label: `jsonl-${slug(basename(path, extname(path)))}`, path };
  }
  if (name === 'continuation' || name === 'name_recall' || name === 'sampled_recall' || name === 'ruler' || name === 'niah') return { kind: name, label: name };
  const close = closeMatches(name, ['continuation', 'name_recall', 'sampled_recall', 'ruler', 'niah', 'jsonl']);
  throw new EvalError(`unknown dataset "${name}"${close.length ? ` (did you mean ${close.join(', ')}?)` : ''}; datasets: ${DATASETS.join(', ')}`);
}

/** The run's folder; a cache type other than f32 adds `__kv_<type>` (f32 runs keep their old names). */
export function runDirName(dataset: string, model: string, press: string, ratio: number, queryAware = false, kvDtype: KvDtype = 'f32'): string {
  return `${dataset}__${model}__${press}__${formatRatio(ratio)}${queryAware ? '__query_aware' : ''}${kvDtype === 'f32' ? '' : `__kv_${kvDtype}`}`;
}

/** Per KV cache type: the baseline first, then each press at each ratio, in the order given. */
export function planRuns(dataset: string, model: string, pressNames: readonly string[], ratios: readonly number[], queryAware = false, kvDtypes: readonly KvDtype[] = ['f32']): RunSpec[] {
  const cells = kvDtypes.flatMap((kvDtype) => [{ press: NO_PRESS, ratio: 0, kvDtype }, ...pressNames.flatMap((press) => ratios.map((ratio) => ({ press, ratio, kvDtype })))]);
  return cells.map((c, index) => ({ index, ...c, dir: runDirName(dataset, model, c.press, c.ratio, queryAware, c.kvDtype) }));
}

/** Shard i of n (1-based) takes the runs whose plan index ≡ i − 1 (mod n). */
export function shardRuns(runs: readonly RunSpec[], shard: { index: number; count: number } | undefined): RunSpec[] {
  if (!shard) return [...runs];
  return runs.filter((r) => r.index % shard.count === shard.index - 1);
}

/** Parses "i/n" with 1 ≤ i ≤ n. */
export function parseShard(s: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(s.trim());
  const index = m ? Number(m[1]) : NaN, count = m ? Number(m[2]) : NaN;
  if (!m || !(count >= 1) || !(index >= 1 && index <= count)) throw new EvalError(`--shard must be i/n with 1 ≤ i ≤ n (e.g. 1/4), got "${s}"`);
  return { index, count };
}

/** Parses "0.25,0.5": distinct numbers in [0, 1). */
export function parseRatios(s: string): number[] {
  const parts = s.split(',').map((p) => p.trim());
  const ratios = parts.map((p) => (p === '' ? NaN : Number(p)));
  const bad = parts.find((_, i) => !(ratios[i] >= 0 && ratios[i] < 1));
  if (bad !== undefined) throw new EvalError(`--ratios must be comma-separated numbers in [0, 1), got "${bad}" in "${s}"`);
  if (new Set(ratios).size !== ratios.length) throw new EvalError(`--ratios has a repeated value: "${s}"`);
  return ratios;
}

/** Parses "key=value" or "press.key=value". */
export function parsePressOption(s: string): PressOptionArg {
  const m = /^(?:([A-Za-z0-9_]+)\.)?([A-Za-z][A-Za-z0-9_]*)=(.*)$/.exec(s);
  if (!m) throw new EvalError(`--press-option must be key=value or press.key=value, got "${s}"`);
  return { press: m[1], key: m[2], value: m[3] };
}

// ───────────────────────────── files ─────────────────────────────

/** Writes through a temporary file and a rename, so readers never see half a file. */
function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

const json = (v: unknown): string => JSON.stringify(v, (_, x) => (typeof x === 'number' && !Number.isFinite(x) ? null : x), 2) + '\n';

/** A run is complete iff its metrics.json exists (it is written last). */
export function isComplete(output: string, run: RunSpec): boolean {
  return existsSync(join(output, run.dir, 'metrics.json'));
}

/** What must match for a complete run to be reused. */
interface Settings {
  limit: number | null;
  seed: number;
  contextFraction: number | null;
  contextLength: number | null;
  pressOptions: Record<string, string>;
}

function checkSameSettings(output: string, run: RunSpec, want: Settings): void {
  const file = join(output, run.dir, 'config.json');
  let have: Settings;
  try {
    have = (JSON.parse(readFileSync(file, 'utf8')) as { settings: Settings }).settings;
  } catch (e) {
    throw new EvalError(`${file}: unreadable (${(e as Error).message.split('\n')[0]}); delete the run folder to redo it`);
  }
  const diff = (Object.keys(want) as (keyof Settings)[]).filter((k) => JSON.stringify(have?.[k] ?? null) !== JSON.stringify(want[k]));
  if (diff.length) {
    const what = diff.map((k) => `${k} ${JSON.stringify(have?.[k] ?? null)} ≠ ${JSON.stringify(want[k])}`).join(', ');
    throw new EvalError(`${join(output, run.dir)} is complete but was run with other settings (${what}); use another --output or delete it`);
  }
}

// ───────────────────────────── tasks ─────────────────────────────

/** A dataset bound to a model: evaluates every item under one press. */
interface Task {
  readonly size: number;
  evaluate(press: Press | null, onItem: (done: number) => void, kvDtype: KvDtype): { predictions: unknown[]; scores: Record<string, number>; scoreInfo: Record<string, ScoreInfo> };
}

const pct = (label: string, plot: boolean): ScoreInfo => ({ label, better: 'higher', plot, range: [0, 100] });

/** Continuation fidelity; the uncompressed passes are computed once and shared by all runs. */
class ContinuationTask implements Task {
  private refs: ContinuationReference[] | null = null;

  constructor(private readonly model: Model, private readonly stories: { id: string; text: string }[], private readonly fraction: number) {}

  get size(): number {
    return this.stories.length;
  }

  evaluate(press: Press | null, onItem: (done: number) => void, kvDtype: KvDtype) {
    this.refs ??= this.stories.map((s) => continuationReference(this.model, s.id, s.text, this.fraction));
    const predictions = this.refs.map((ref, i) => {
      press?.reset?.();
      const s = scoreContinuation(this.model, ref, press, kvDtype);
      onItem(i + 1);
      return s;
    });
    const m = summarizeContinuation(predictions);
    return {
      predictions,
      scores: { kl: m.kl, nll_increase: m.nllIncrease, nll: m.nll, nll_baseline: m.nllBaseline, achieved_ratio: m.achievedRatio, kv_bytes_per_token: m.kvBytesPerToken, scored_tokens: m.scoredTokens },
      scoreInfo: {
        kl: { label: 'KL(uncompressed ‖ compressed), nats per token', better: 'lower', plot: true, axis: 'KL divergence (nats/token)' },
        nll_increase: { label: 'NLL increase over the uncompressed model, nats per token', better: 'lower', plot: true, axis: 'NLL increase (nats/token)' },
        nll: { label: 'NLL of the continuation, nats per token', better: 'lower', plot: false },
        nll_baseline: { label: 'NLL without compression, nats per token', better: 'lower', plot: false },
        achieved_ratio: { label: 'achieved compression ratio (share of context entries removed)', plot: false },
        kv_bytes_per_token: { label: 'KV bytes of the compressed context per context token (all layers, in the run\'s cache type)', better: 'lower', plot: false },
        scored_tokens: { label: 'scored tokens', plot: false },
      } satisfies Record<string, ScoreInfo>,
    };
  }
}

/** Name recall; items whose answer token cannot be isolated by the tokenizer are left out. */
class NameRecallTask implements Task {
  private refs: RecallReference[] | null = null;

  constructor(private readonly model: Model, private readonly items: { id: string; prefix: string; answer: string }[], private readonly fraction: number) {}

  get size(): number {
    return this.items.length;
  }

  evaluate(press: Press | null, onItem: (done: number) => void, kvDtype: KvDtype) {
    this.refs ??= this.items.map((it) => recallReference(this.model, it, this.fraction)).filter((r): r is RecallReference => r !== null);
    const tok = this.model.tokenizer!;
    const predictions = this.refs.map((ref, i) => {
      press?.reset?.();
      const s = scoreRecall(this.model, ref, press, kvDtype);
      onItem(i + 1);
      return { ...s, predictedText: tok.decode(s.predicted) };
    });
    const m = summarizeRecall(predictions);
    return {
      predictions,
      scores: {
        accuracy: m.accuracy, accuracy_se: standardError(m.accuracy, predictions.length), first_token_accuracy: m.firstTokenAccuracy, baseline_accuracy: m.baselineAccuracy, retained: m.retained,
        answer_nll: m.answerNll, answer_nll_increase: m.answerNllIncrease, achieved_ratio: m.achievedRatio, kv_bytes_per_token: m.kvBytesPerToken,
      },
      scoreInfo: {
        accuracy: { ...pct('name recall accuracy (greedy decoding writes the name), %', true), axis: 'accuracy (%)' },
        accuracy_se: pct('standard error of the accuracy, √(p(1−p)/n), percentage points', false),
        first_token_accuracy: pct("top-1 accuracy of the name's first token, %", false),
        baseline_accuracy: pct('name recall accuracy without compression, %', false),
        retained: pct('items the uncompressed model gets right that stay right, %', false),
        answer_nll: { label: "NLL of the name's tokens, nats per name", better: 'lower', plot: false },
        answer_nll_increase: { label: "NLL increase of the name's tokens over the uncompressed model, nats per name", better: 'lower', plot: true, axis: 'NLL increase (nats/name)' },
        achieved_ratio: { label: 'achieved compression ratio (share of context entries removed)', plot: false },
        kv_bytes_per_token: { label: 'KV bytes of the compressed context per context token (all layers, in the run\'s cache type)', better: 'lower', plot: false },
      } satisfies Record<string, ScoreInfo>,
    };
  }
}

/** Binomial standard error of a percentage measured on n items, in percentage points. */
const standardError = (percent: number, n: number): number => 100 * Math.sqrt((percent / 100) * (1 - percent / 100) / n);

/** How the QA-style datasets turn predictions into scores. */
type QaScorer = (samples: readonly Sample[], predictions: readonly string[]) => { scores: Record<string, number>; scoreInfo: Record<string, ScoreInfo> };

/** Context + question → generated answer through the pipeline (ruler, niah, jsonl). */
class QaTask implements Task {
  constructor(
    private readonly model: Model,
    private readonly samples: Sample[],
    private readonly scorer: QaScorer,
    private readonly queryAware: boolean,
  ) {}

  get size(): number {
    return this.samples.length;
  }

  evaluate(press: Press | null, onItem: (done: number) => void, kvDtype: KvDtype) {
    const m = this.model;
    const model = kvDtype === m.kvDtype ? m : new Model(m.config, m.weights, { backend: m.backend, tokenizer: m.tokenizer, source: m.source, kvDtype });
    const pipeline = new Pipeline(model);
    // One compression serves every question on the same context (kvpress's grouping); a
    // decoding press compresses while it answers, so it runs row by row.
    const groups = new Map<string, number[]>();
    this.samples.forEach((s, i) => {
      const key = isDecodingPress(press) ? String(i) : `${s.context}\u0000${s.answerPrefix}\u0000${s.maxNewTokens}`;
      const g = groups.get(key) ?? [];
      g.push(i);
      groups.set(key, g);
    });
    const answers: string[] = new Array(this.samples.length);
    const achieved: number[] = new Array(this.samples.length);
    const kvBytes: number[] = new Array(this.samples.length);
    let done = 0;
    for (const idx of groups.values()) {
      const first = this.samples[idx[0]];
      const r = pipeline.run({
        context: first.context,
        questions: idx.map((i) => this.samples[i].question),
        press,
        answerPrefix: first.answerPrefix,
        maxNewTokens: first.maxNewTokens,
        queryAware: this.queryAware,
      });
      idx.forEach((i, j) => {
        answers[i] = r.answers[j];
        achieved[i] = r.stats.achievedRatio;
        kvBytes[i] = r.stats.cacheBytesAfter / r.stats.contextTokens;
      });
      done += idx.length;
      onItem(done);
    }
    const predictions = this.samples.map((s, i) => ({
      id: s.id, task: s.task, question: s.question, answers: s.answers, prediction: answers[i], achievedRatio: achieved[i],
    }));
    const { scores, scoreInfo } = this.scorer(this.samples, answers);
    scores.achieved_ratio = achieved.reduce((a, b) => a + b, 0) / achieved.length;
    scoreInfo.achieved_ratio = { label: 'achieved compression ratio (share of context entries removed)', plot: false };
    scores.kv_bytes_per_token = kvBytes.reduce((a, b) => a + b, 0) / kvBytes.length;
    scoreInfo.kv_bytes_per_token = { label: "KV bytes of the compressed context per context token (all layers, in the run's cache type)", better: 'lower', plot: false };
    return { predictions, scores, scoreInfo };
  }
}

const rulerScorer: QaScorer = (samples, predictions) => {
  const { perTask, average } = rulerScores(samples.map((s, i) => ({ task: s.task, prediction: predictions[i], answers: s.answers })));
  const scores: Record<string, number> = { score: average };
  const scoreInfo: Record<string, ScoreInfo> = { score: { ...pct('RULER score (mean over tasks)', true), axis: 'RULER score (%)' } };
  for (const [task, v] of Object.entries(perTask)) {
    scores[task] = v;
    scoreInfo[task] = pct(`RULER ${task} (string match)`, false);
  }
  return { scores, scoreInfo };
};

const niahScorer: QaScorer = (samples, predictions) => {
  let r1 = 0, rl = 0;
  samples.forEach((s, i) => {
    const needle = typeof s.extra?.needle === 'string' ? s.extra.needle : s.answers[0];
    const r = niahRouge(needle, predictions[i]);
    r1 += r.rouge1.f;
    rl += r.rougeL.f;
  });
  const n = samples.length;
  return {
    scores: { rougeL_f: (100 * rl) / n, rouge1_f: (100 * r1) / n },
    scoreInfo: { rougeL_f: { ...pct('NIAH ROUGE-L F, %', true), axis: 'ROUGE-L F (%)' }, rouge1_f: pct('NIAH ROUGE-1 F, %', false) },
  };
};

/**
 * Local JSONL: each task with its own metric — RULER tasks by string match, LongBench tasks by
 * their official metric, aime25/math500 by boxed answer; other tasks (InfiniteBench, LooGLE…)
 * by "any reference contained" (RULER's string_match_part). `score` is the mean over tasks.
 */
const jsonlScorer: QaScorer = (samples, predictions) => {
  const byTask = new Map<string, number[]>();
  samples.forEach((s, i) => byTask.set(s.task, [...(byTask.get(s.task) ?? []), i]));
  const scores: Record<string, number> = {};
  const scoreInfo: Record<string, ScoreInfo> = {};
  for (const [task, idx] of byTask) {
    const preds = idx.map((i) => predictions[i]), refs = idx.map((i) => samples[i].answers);
    let metric: string, value: number;
    if ((RULER_TASKS as readonly string[]).includes(task)) {
      value = rulerScores(idx.map((i) => ({ task, prediction: predictions[i], answers: samples[i].answers }))).average;
      metric = 'string match';
    } else if (task === 'aime25' || task === 'math500') {
      value = 100 * (task === 'aime25' ? aime25Metrics : math500Metrics)(preds, refs.map((r) => r[0])).accuracy;
      metric = 'boxed-answer accuracy';
    } else {
      const classes = samples[idx[0]].extra?.all_classes;
      const lb = longbench(task, preds, refs, Array.isArray(classes) ? classes.map(String) : []);
      if (lb !== null) {
        value = lb;
        metric = 'LongBench metric';
      } else {
        value = stringMatchPart(preds, refs);
        metric = 'any reference contained';
      }
    }
    scores[task] = value;
    scoreInfo[task] = pct(`${task} (${metric})`, false);
  }
  const values = Object.values(scores);
  scores.score = values.reduce((a, b) => a + b, 0) / values.length;
  scoreInfo.score = { ...pct('mean score over tasks', true), axis: 'score (%)' };
  return { scores, scoreInfo };
};

/** LongBench's official score of a task, or null when the task is not a LongBench one. */
function longbench(task: string, preds: string[], refs: string[][], classes: string[]): number | null {
  try {
    return longbenchScore(task, preds, refs, classes);
  } catch (e) {
    if ((e as Error).message.startsWith('unknown LongBench task')) return null;
    throw e;
  }
}

function makeTask(ds: DatasetRef, model: Model, opts: EvalOptions): Task {
  const seed = opts.seed ?? DEFAULT_SEED;
  const fraction = opts.contextFraction ?? DEFAULT_CONTEXT_FRACTION;
  const tok = model.tokenizer;
  if (!tok) throw new EvalError(`${model.source}: the model has no tokenizer`);
  const window = model.config.maxPositionEmbeddings;
  const contextLength = opts.contextLength ?? Math.min(DEFAULT_CONTEXT_LENGTH, window);
  if (contextLength > window) throw new EvalError(`--context-length ${contextLength} exceeds the model's window of ${window} tokens`);
  switch (ds.kind) {
    case 'continuation':
      return new ContinuationTask(model, continuationStories({ count: opts.limit ?? DEFAULT_LIMITS.continuation, seed }), fraction);
    case 'name_recall':
      return new NameRecallTask(model, nameRecallStories({ count: opts.limit ?? DEFAULT_LIMITS.name_recall, seed }), fraction);
    case 'sampled_recall':
      return new NameRecallTask(model, sampledRecallStories(model, { count: opts.limit ?? DEFAULT_LIMITS.sampled_recall, seed }), fraction);
    case 'ruler':
      return new QaTask(model, generateRuler({
        tokenizer: tok, contextLength, numSamples: opts.limit ?? DEFAULT_LIMITS.ruler, seed,
        onSkip: (task, why) => opts.onNotice?.(`note: RULER ${task} skipped: ${why.replace(/^RULER \S+: /, '')}`),
      }), rulerScorer, opts.queryAware ?? false);
    case 'niah': {
      const depths = NIAH_DEPTHS.slice(0, opts.limit ?? NIAH_DEPTHS.length);
      return new QaTask(model, needleInHaystack({ tokenizer: tok, maxContextLength: contextLength, depths, seed }), niahScorer, opts.queryAware ?? false);
    }
    case 'jsonl': {
      const rows = loadJsonl(ds.path!);
      return new QaTask(model, opts.limit !== undefined ? rows.slice(0, opts.limit) : rows, jsonlScorer, opts.queryAware ?? false);
    }
  }
}

// ───────────────────────────── presses ─────────────────────────────

/** Each press's options: unscoped ones go to every press that declares them. */
function resolvePressOptions(pressNames: readonly string[], args: readonly PressOptionArg[]): Map<string, Record<string, string>> {
  const out = new Map(pressNames.map((p) => [p, {} as Record<string, string>]));
  for (const a of args) {
    if (a.press !== undefined) {
      const o = out.get(a.press);
      if (!o) throw new EvalError(`--press-option ${a.press}.${a.key}: press "${a.press}" is not among --press (${pressNames.join(', ')})`);
      o[a.key] = a.value;
      continue;
    }
    const takers = pressNames.filter((p) => a.key in registry.get(p).options);
    if (takers.length === 0) throw new EvalError(`--press-option ${a.key}: none of ${pressNames.join(', ')} has an option "${a.key}"`);
    for (const p of takers) out.get(p)![a.key] = a.value;
  }
  return out;
}

function createPress(name: string, ratio: number, options: Record<string, string>, seed: number): Press {
  const entry = registry.get(name);
  // Random presses draw from the run's seed unless told otherwise, so reruns match.
  const withSeed = 'seed' in entry.options && !('seed' in options) ? { ...options, seed: String(seed) } : options;
  return registry.create(name, ratio, withSeed);
}

/** Presses that act while generating, as their registry entry declares (see PressPhase). */
export function isDecodingName(name: string): boolean {
  const phase = registry.get(name).phase ?? 'prefill';
  return phase === 'decoding' || phase === 'both';
}

function checkPressNames(names: readonly string[]): void {
  if (names.length === 0) throw new EvalError('--press needs at least one press name');
  const known = registry.names();
  for (const n of names) {
    if (n === NO_PRESS) throw new EvalError(`"${NO_PRESS}" is the baseline and always runs; list only presses in --press`);
    if (!known.includes(n)) {
      const close = closeMatches(n, known);
      throw new EvalError(`unknown press "${n}"${close.length ? ` (did you mean ${close.join(', ')}?)` : ''}; \`kvpress presses\` lists them all`);
    }
  }
  if (new Set(names).size !== names.length) throw new EvalError(`--press lists a press twice: ${names.join(',')}`);
}

// ───────────────────────────── the grid ─────────────────────────────

function formatMs(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/**
 * Runs this shard's incomplete runs of the grid. The model is loaded only when something is
 * left to run; uncompressed reference passes are shared by every run of the invocation.
 */
export async function runEval(opts: EvalOptions): Promise<EvalSummary> {
  const ds = parseDataset(opts.dataset);
  const ratios = opts.ratios ?? DEFAULT_RATIOS;
  if (ratios.length === 0) throw new EvalError('--ratios needs at least one ratio');
  for (const r of ratios) if (!(r >= 0 && r < 1)) throw new EvalError(`compression ratio must be in [0, 1), got ${r}`);
  checkPressNames(opts.presses);
  const fidelity = ds.kind === 'continuation' || ds.kind === 'name_recall' || ds.kind === 'sampled_recall';
  if (fidelity && opts.contextLength !== undefined) throw new EvalError('--context-length applies to ruler and niah; continuation and the recall sets use whole stories');
  if (!fidelity && opts.contextFraction !== undefined) throw new EvalError('--context-fraction applies to continuation, name_recall and sampled_recall');
  if (fidelity && opts.queryAware) throw new EvalError('--query-aware applies to ruler, niah and jsonl datasets (the fidelity tasks have no question)');
  if (opts.contextFraction !== undefined && !(opts.contextFraction > 0 && opts.contextFraction < 1)) {
    throw new EvalError(`--context-fraction must be in (0, 1), got ${opts.contextFraction}`);
  }
  if (opts.limit !== undefined && !(Number.isInteger(opts.limit) && opts.limit >= 1)) throw new EvalError(`--limit must be an integer ≥ 1, got ${opts.limit}`);
  const seed = opts.seed ?? DEFAULT_SEED;
  const optionsByPress = resolvePressOptions(opts.presses, opts.pressOptions ?? []);
  const output = opts.output ?? 'results';
  const notice = opts.onNotice ?? (() => {});
  // Notes (skipped tasks and presses) are also kept beside the runs, for the report to show.
  const note = (line: string): void => {
    notice(line);
    recordNote(output, line);
  };

  // Decoding presses compress while generating: the fidelity tasks generate nothing.
  const excluded = fidelity ? opts.presses.filter(isDecodingName) : [];
  if (excluded.length) note(`skipping decoding presses on the prefill-only ${ds.label} task: ${excluded.join(', ')}`);
  const pressNames = opts.presses.filter((p) => !excluded.includes(p));

  const model = modelName(opts.model);
  const queryAware = opts.queryAware ?? false;
  const kvDtypes = opts.kvDtypes ?? ['f32'];
  if (kvDtypes.length === 0 || new Set(kvDtypes).size !== kvDtypes.length) throw new EvalError(`--kv-dtypes must list distinct types, got "${kvDtypes.join(',')}"`);
  for (const d of kvDtypes) if (!(KV_DTYPES as readonly string[]).includes(d)) throw new EvalError(`unknown KV cache type "${d}"; expected ${KV_DTYPES.join(', ')}`);
  const planned = planRuns(ds.label, model, pressNames, ratios, queryAware, kvDtypes);
  const mine = shardRuns(planned, opts.shard);
  const settingsFor = (run: RunSpec): Settings => ({
    // The resolved count, so that "--limit 100" and the default 100 are the same run.
    limit: opts.limit ?? (ds.kind === 'niah' ? NIAH_DEPTHS.length : DEFAULT_LIMITS[ds.kind] ?? null),
    seed,
    contextFraction: fidelity ? (opts.contextFraction ?? DEFAULT_CONTEXT_FRACTION) : null,
    contextLength: opts.contextLength ?? null,
    pressOptions: run.press === NO_PRESS ? {} : optionsByPress.get(run.press)!,
  });
  const skipped = mine.filter((r) => isComplete(output, r));
  for (const r of skipped) checkSameSettings(output, r, settingsFor(r));
  const todo = mine.filter((r) => !skipped.includes(r));
  const summary: EvalSummary = { output, planned, mine, skipped, ran: [], excluded };
  if (todo.length === 0) return summary;

  let loaded: Model;
  try {
    // The references run on an f32 cache whatever the checkpoint; each run picks its own type.
    loaded = await loadModel(opts.model, { backend: opts.backend, kvDtype: 'f32' });
  } catch (e) {
    throw new EvalError((e as Error).message);
  }
  // Every press must accept the model before hours of work start.
  for (const p of new Set(todo.map((r) => r.press))) {
    if (p !== NO_PRESS) createPress(p, ratios[0], optionsByPress.get(p)!, seed).validate?.(loaded);
  }
  const task = makeTask(ds, loaded, { ...opts, onNotice: note });
  mkdirSync(output, { recursive: true });

  const start = performance.now();
  const unitsTotal = todo.length * task.size;
  let unitsDone = 0;
  for (const [k, run] of todo.entries()) {
    const t0 = performance.now();
    const press = run.press === NO_PRESS ? null : createPress(run.press, run.ratio, optionsByPress.get(run.press)!, seed);
    const progress = (item: number) => {
      const elapsedMs = performance.now() - start;
      const done = unitsDone + item;
      opts.onProgress?.({
        run, runsDone: k, runsTotal: todo.length, item, items: task.size, elapsedMs,
        etaMs: done > 0 ? (elapsedMs / done) * (unitsTotal - done) : null,
      });
    };
    progress(0);
    const r = task.evaluate(press, progress, run.kvDtype);
    unitsDone += task.size;
    const seconds = (performance.now() - t0) / 1000;

    const dir = join(output, run.dir);
    mkdirSync(dir, { recursive: true });
    writeAtomic(join(dir, 'predictions.jsonl'), r.predictions.map((p) => JSON.stringify(p)).join('\n') + '\n');
    writeAtomic(join(dir, 'config.json'), json({
      dataset: opts.dataset, model, modelPath: opts.model ?? null, press: run.press, compressionRatio: run.ratio, queryAware, kvDtype: run.kvDtype,
      settings: settingsFor(run), backend: loaded.backend.name, planIndex: run.index, shard: opts.shard ?? null,
    }));
    const metrics: RunMetrics = {
      dataset: ds.label, model, press: run.press, compressionRatio: run.ratio, queryAware, kvDtype: run.kvDtype,
      items: r.predictions.length, scores: r.scores, scoreInfo: r.scoreInfo, seconds,
    };
    writeAtomic(join(dir, 'metrics.json'), json(metrics));
    summary.ran.push(run);
    notice(`run ${k + 1}/${todo.length} ${run.dir} done in ${formatMs(seconds * 1000)}`);
  }
  return summary;
}

/** File of a results folder that holds its notes, one per line (see writeReport). */
export const NOTES_FILE = 'notes.txt';

function recordNote(dir: string, line: string): void {
  const file = join(dir, NOTES_FILE);
  const lines = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
  if (lines.includes(line)) return;
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, [...lines, line].join('\n') + '\n');
}
