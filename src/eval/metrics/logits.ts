/**
 * Metrics of next-token distributions, for the fidelity tasks: log-softmax, KL divergence and
 * NLL in float64, argmax and top-1 accuracy.
 */
import { checkRows } from './rows.js';

/**
 * Log-softmax in float64 (float32 logits lose the small probabilities KL depends on).
 *
 * @example
 * logSoftmax([0, Math.log(3)]); // Float64Array [ln 0.25, ln 0.75]
 */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  const n = logits.length;
  if (n === 0) throw new RangeError('log-softmax of an empty logit vector');
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i]! > max) max = logits[i]!;
  if (!Number.isFinite(max)) throw new RangeError(`log-softmax: largest logit is ${max}`);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = logits[i]! - lse;
  return out;
}

/**
 * KL(P‖Q) in nats between the next-token distributions of two logit vectors; P is the
 * reference (uncompressed) model, Q the compressed one.
 *
 * @example
 * klDivergence([0, 0], [0, Math.log(3)]); // 0.5·ln(4/3) ≈ 0.1438
 */
export function klDivergence(logitsP: ArrayLike<number>, logitsQ: ArrayLike<number>): number {
  if (logitsP.length !== logitsQ.length) {
    throw new RangeError(`KL divergence: vocabularies differ (${logitsP.length} vs ${logitsQ.length} logits)`);
  }
  const lp = logSoftmax(logitsP);
  const lq = logSoftmax(logitsQ);
  let kl = 0;
  for (let i = 0; i < lp.length; i++) {
    const p = Math.exp(lp[i]!);
    if (p > 0) kl += p * (lp[i]! - lq[i]!);
  }
  // Rounding can leave a tiny negative value for identical distributions.
  return Math.max(0, kl);
}

/**
 * Negative log-likelihood (nats) of token `target` under the logits.
 *
 * @example
 * tokenNll([0, Math.log(3)], 1); // −ln 0.75 ≈ 0.2877
 */
export function tokenNll(logits: ArrayLike<number>, target: number): number {
  if (!Number.isInteger(target) || target < 0 || target >= logits.length) {
    throw new RangeError(`NLL: target token ${target} is outside the vocabulary of ${logits.length}`);
  }
  return -logSoftmax(logits)[target]!;
}

/**
 * Mean NLL over positions: row t scores targets[t].
 *
 * @example
 * meanNll([[0, 0], [0, Math.log(3)]], [0, 1]); // (ln 2 − ln 0.75) / 2
 */
export function meanNll(rows: readonly ArrayLike<number>[], targets: readonly number[]): number {
  checkRows('mean NLL', rows.length, targets.length);
  let sum = 0;
  rows.forEach((row, t) => (sum += tokenNll(row, targets[t]!)));
  return sum / rows.length;
}

/**
 * Mean KL(P‖Q) over positions.
 *
 * @example
 * meanKlDivergence([[0, 0]], [[0, Math.log(3)]]); // ≈ 0.1438
 */
export function meanKlDivergence(rowsP: readonly ArrayLike<number>[], rowsQ: readonly ArrayLike<number>[]): number {
  checkRows('mean KL divergence', rowsP.length, rowsQ.length);
  let sum = 0;
  rowsP.forEach((row, t) => (sum += klDivergence(row, rowsQ[t]!)));
  return sum / rowsP.length;
}

/**
 * Index of the largest logit (the first one on ties), i.e. the greedy next token.
 *
 * @example
 * argmax([0.1, 2, 2, -1]); // 1
 */
export function argmax(logits: ArrayLike<number>): number {
  if (logits.length === 0) throw new RangeError('argmax of an empty logit vector');
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

/**
 * Share of positions whose greedy token equals the target (name recall: one row per item,
 * the logits right before the name).
 *
 * @example
 * top1Accuracy([[0, 1], [1, 0]], [1, 1]); // 0.5
 */
export function top1Accuracy(rows: readonly ArrayLike<number>[], targets: readonly number[]): number {
  checkRows('top-1 accuracy', rows.length, targets.length);
  let hits = 0;
  rows.forEach((row, t) => {
    if (argmax(row) === targets[t]) hits++;
  });
  return hits / rows.length;
}
