/**
 * The evaluation's tasks: a dataset bound to a model, evaluating every item under one press —
 * continuation fidelity, name recall, and the question-answering sets (RULER, NIAH, JSONL) with
 * their scorers. The grid (runner.ts) builds one with `makeTask` and runs it once per run.
 */
import type { KvDtype } from '../cache/format.js';
import { Model } from '../model/model.js';
import { isDecodingPress, Pipeline } from '../pipeline/pipeline.js';
import type { AnswerStats, CompressionStats } from '../pipeline/stats.js';
import type { Press } from '../presses/press.js';
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
import type { DatasetRef } from './names.js';
import { DEFAULT_SEED, EvalError, type EvalOptions } from './options.js';
import type { ScoreInfo } from './run-metrics.js';

/** Items per run when --limit is not given (RULER: samples per task). */
export const DEFAULT_LIMITS: Record<string, number> = { continuation: 100, name_recall: 200, sampled_recall: 200, ruler: 10 };
/** NIAH needle depths, one sample each (--limit keeps the first N). */
export const NIAH_DEPTHS = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
/** RULER / NIAH default target length; the model's window caps it. */
export const DEFAULT_CONTEXT_LENGTH = 4096;

/** A dataset bound to a model: evaluates every item under one press. */
/** What a decoding press could see on a task: the longest cache and the most decoding passes of any item. */
export interface DecodingReach {
  /** Context, question and answer tokens of the longest item. */
  tokens: number;
  /** Decoding forward passes of the longest answer (the question's pass included). */
  steps: number;
  /** Tokens of the longest question pass (0 when questions go with the context). */
  questionTokens: number;
}

/** Why `press` would never compress within `reach`, or null when it would. */
export function cannotCompress(press: Press, reach: DecodingReach): string | null {
  const p = press as Press & { compressionInterval?: number; targetSize?: number; decodingPress?: Press | null };
  const dec = (p.decodingPress ?? p) as typeof p;
  const interval = dec.compressionInterval, target = dec.targetSize;
  if (target !== undefined && target >= reach.tokens) {
    return `targetSize ${target} keeps every entry (the longest item holds ${reach.tokens} tokens with its answer); choose target sizes below ${reach.tokens}`;
  }
  if (interval !== undefined && interval > reach.steps && !(target !== undefined && reach.questionTokens >= target)) {
    return `it compresses every compressionInterval = ${interval} decoding steps and the longest answer takes ${reach.steps}; pass --press-option compressionInterval=N with N ≤ ${reach.steps}`;
  }
  return null;
}

export interface Task {
  readonly size: number;
  /** Present on tasks that generate answers (decoding presses act there). */
  decodingReach?(): DecodingReach;
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

  decodingReach(): DecodingReach {
    const tok = this.model.tokenizer!;
    const reach: DecodingReach = { tokens: 0, steps: 0, questionTokens: 0 };
    for (const s of this.samples) {
      const context = tok.encode(this.queryAware ? s.context + s.question : s.context, { bos: true }).length;
      const question = tok.encode((this.queryAware ? '' : s.question) + s.answerPrefix, { bos: false }).length;
      reach.tokens = Math.max(reach.tokens, context + question + s.maxNewTokens);
      reach.steps = Math.max(reach.steps, (question > 0 ? 1 : 0) + s.maxNewTokens);
      reach.questionTokens = Math.max(reach.questionTokens, question);
    }
    return reach;
  }

  evaluate(press: Press | null, onItem: (done: number) => void, kvDtype: KvDtype) {
    const m = this.model;
    const model = kvDtype === m.kvDtype ? m : new Model(m.config, m.weights, { backend: m.backend, tokenizer: m.tokenizer, source: m.source, kvDtype });
    const pipeline = new Pipeline(model);
    // One compression serves every question on the same context (kvpress's grouping); a
    // decoding press compresses while it answers, so it runs row by row.
    const decoding = isDecodingPress(press);
    const groups = new Map<string, number[]>();
    this.samples.forEach((s, i) => {
      const key = decoding ? String(i) : `${s.context}\u0000${s.answerPrefix}\u0000${s.maxNewTokens}`;
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
        achieved[i] = decoding ? removedAtAnswerEnd(r.stats, r.stats.questions[j]) : r.stats.achievedRatio;
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
    scoreInfo.achieved_ratio = { label: ACHIEVED_QA_LABEL, plot: false };
    scores.kv_bytes_per_token = kvBytes.reduce((a, b) => a + b, 0) / kvBytes.length;
    scoreInfo.kv_bytes_per_token = { label: "KV bytes of the compressed context per context token (all layers, in the run's cache type)", better: 'lower', plot: false };
    return { predictions, scores, scoreInfo };
  }
}

const ACHIEVED_QA_LABEL = "achieved compression ratio (share of context entries removed; a decoding press: share of every entry an uncompressed cache would hold when the answer ends)";

/**
 * What a decoding press achieved on one answer: it leaves the context prefill alone and evicts
 * while answering, so the prefill's ratio (0) says nothing; the share removed is measured against
 * the bytes an uncompressed cache would hold at the answer's end (context + fed tokens).
 */
export function removedAtAnswerEnd(stats: CompressionStats, answer: AnswerStats): number {
  const perToken = stats.cacheBytesBefore / stats.contextTokens;
  return 1 - answer.cacheBytesEnd / (perToken * (stats.contextTokens + answer.tokensFed));
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

export function makeTask(ds: DatasetRef, model: Model, opts: EvalOptions): Task {
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
