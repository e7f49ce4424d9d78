/**
 * The question-answering task (ruler, niah, jsonl): each context compressed once for every
 * question on it (kvpress's grouping; a decoding press row by row, as it compresses while it
 * answers), the answers generated through the pipeline, then scored by the dataset's scorer.
 */
import type { KvDtype } from '../cache/format.js';
import { Model } from '../model/model.js';
import { isDecodingPress, Pipeline } from '../pipeline/pipeline.js';
import type { AnswerStats, CompressionStats } from '../pipeline/stats.js';
import type { Press } from '../presses/press.js';
import type { Sample } from './datasets/types.js';
import type { ScoreInfo } from './run-metrics.js';
import { KV_BYTES_INFO, type DecodingReach, type Task } from './task.js';

/** How the QA-style datasets turn predictions into scores. */
export type QaScorer = (samples: readonly Sample[], predictions: readonly string[]) => { scores: Record<string, number>; scoreInfo: Record<string, ScoreInfo> };

/** Context + question → generated answer through the pipeline (ruler, niah, jsonl). */
export class QaTask implements Task {
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
    scoreInfo.kv_bytes_per_token = KV_BYTES_INFO;
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
