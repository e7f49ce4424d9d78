/**
 * The evaluation's tasks: `makeTask` binds a dataset to a model — continuation fidelity and name
 * recall (fidelity-tasks.ts), the question-answering sets RULER, NIAH and JSONL (qa-task.ts with
 * qa-scorers.ts) — and the grid (runner.ts) runs it once per run.
 */
import type { Model } from '../model/model.js';
import { loadJsonl } from './datasets/jsonl.js';
import { needleInHaystack } from './datasets/niah.js';
import { generateRuler } from './datasets/ruler.js';
import { sampledRecallStories } from './datasets/sampled-recall.js';
import { continuationStories, nameRecallStories } from './datasets/stories.js';
import { DEFAULT_CONTEXT_FRACTION } from './fidelity.js';
import { ContinuationTask, NameRecallTask } from './fidelity-tasks.js';
import type { DatasetRef } from './names.js';
import { DEFAULT_SEED, EvalError, type EvalOptions } from './options.js';
import { jsonlScorer, niahScorer, rulerScorer } from './qa-scorers.js';
import { QaTask } from './qa-task.js';
import type { Task } from './task.js';

/** Items per run when --limit is not given (RULER: samples per task). */
export const DEFAULT_LIMITS: Record<string, number> = { continuation: 100, name_recall: 200, sampled_recall: 200, ruler: 10 };
/** NIAH needle depths, one sample each (--limit keeps the first N). */
export const NIAH_DEPTHS = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
/** RULER / NIAH default target length; the model's window caps it. */
export const DEFAULT_CONTEXT_LENGTH = 4096;

/** The task of `ds` on `model`, with the options' item count, seed and context sizes. */
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
