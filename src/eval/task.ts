/**
 * What the grid asks of a task (a dataset bound to a model), and what a decoding press could
 * reach on it: a press whose target size or interval the task's answers never reach would
 * silently equal the baseline, so the runner refuses it.
 */
import type { KvDtype } from '../cache/format.js';
import type { Press } from '../presses/press.js';
import type { ScoreInfo } from './run-metrics.js';

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

/** A dataset bound to a model: evaluates every item under one press. */
export interface Task {
  readonly size: number;
  /** Present on tasks that generate answers (decoding presses act there). */
  decodingReach?(): DecodingReach;
  evaluate(press: Press | null, onItem: (done: number) => void, kvDtype: KvDtype): { predictions: unknown[]; scores: Record<string, number>; scoreInfo: Record<string, ScoreInfo> };
}

/** A percentage score (better higher, drawn on [0, 100]). */
export const pct = (label: string, plot: boolean): ScoreInfo => ({ label, better: 'higher', plot, range: [0, 100] });

/** The cache bytes every task reports beside its scores. */
export const KV_BYTES_INFO: ScoreInfo = { label: "KV bytes of the compressed context per context token (all layers, in the run's cache type)", better: 'lower', plot: false };
