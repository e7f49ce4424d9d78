/**
 * The fidelity tasks over stories: continuation (KL and NLL increase against the uncompressed
 * model) and name recall (template or sampled stories). The uncompressed reference passes are
 * computed on the first run and shared by every later one.
 */
import type { KvDtype } from '../cache/format.js';
import type { Model } from '../model/model.js';
import type { Press } from '../presses/press.js';
import {
  continuationReference,
  recallReference,
  scoreContinuation,
  scoreRecall,
  summarizeContinuation,
  summarizeRecall,
  type ContinuationReference,
  type RecallReference,
} from './fidelity.js';
import type { ScoreInfo } from './run-metrics.js';
import { KV_BYTES_INFO, pct, type Task } from './task.js';

const ACHIEVED_INFO: ScoreInfo = { label: 'achieved compression ratio (share of context entries removed)', plot: false };

/** Binomial standard error of a percentage measured on n items, in percentage points. */
const standardError = (percent: number, n: number): number => 100 * Math.sqrt((percent / 100) * (1 - percent / 100) / n);

/** Continuation fidelity; the uncompressed passes are computed once and shared by all runs. */
export class ContinuationTask implements Task {
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
        achieved_ratio: ACHIEVED_INFO,
        kv_bytes_per_token: KV_BYTES_INFO,
        scored_tokens: { label: 'scored tokens', plot: false },
      } satisfies Record<string, ScoreInfo>,
    };
  }
}

/** Name recall; items whose answer token cannot be isolated by the tokenizer are left out. */
export class NameRecallTask implements Task {
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
        achieved_ratio: ACHIEVED_INFO,
        kv_bytes_per_token: KV_BYTES_INFO,
      } satisfies Record<string, ScoreInfo>,
    };
  }
}
