/**
 * AIME25 and MATH-500 scoring: exact match of the answer written in \boxed{…} (the last box for
 * AIME25, the first for MATH-500).
 */
import { checkRows } from './rows.js';

/**
 * Text after the first (MATH-500) or last (AIME25) "boxed{" up to the next "}" — not
 * brace-balanced, as the spec'd scorers split on "}" (later library versions balance
 * braces) — or the rest of the text when no "}" follows; null without "boxed{".
 *
 * @example
 * extractBoxed('\\boxed{1} then \\boxed{2}', 'last'); // "2"
 * extractBoxed('\\boxed{\\frac{1}{2}}', 'first'); // "\\frac{1"
 */
export function extractBoxed(text: string, which: 'first' | 'last'): string | null {
  const marker = 'boxed{';
  const at = which === 'first' ? text.indexOf(marker) : text.lastIndexOf(marker);
  if (at < 0) return null;
  const start = at + marker.length;
  const end = text.indexOf('}', start);
  return end < 0 ? text.slice(start) : text.slice(start, end);
}

export interface BoxedMetrics {
  correct: number;
  /** Predictions containing "boxed{" at all. */
  answered: number;
  /** correct / total. */
  accuracy: number;
  total: number;
}

/**
 * Exact-match accuracy of boxed answers: a row is correct when its extracted answer equals
 * the reference string exactly.
 *
 * @example
 * boxedAnswerMetrics(['\\boxed{42}', 'no idea'], ['42', '7'], 'last');
 * // → { correct: 1, answered: 1, accuracy: 0.5, total: 2 }
 */
export function boxedAnswerMetrics(predictions: readonly string[], answers: readonly string[], which: 'first' | 'last'): BoxedMetrics {
  checkRows('boxed-answer accuracy', predictions.length, answers.length);
  let correct = 0;
  let answered = 0;
  predictions.forEach((pred, i) => {
    if (extractBoxed(pred, which) === answers[i]) correct++;
    if (pred.includes('boxed{')) answered++;
  });
  return { correct, answered, accuracy: correct / predictions.length, total: predictions.length };
}

/**
 * AIME25 scoring: the last boxed answer.
 *
 * @example
 * aime25Metrics(['\\boxed{1} … \\boxed{204}'], ['204']).accuracy; // 1
 */
export function aime25Metrics(predictions: readonly string[], answers: readonly string[]): BoxedMetrics {
  return boxedAnswerMetrics(predictions, answers, 'last');
}

/**
 * MATH-500 scoring: the first boxed answer.
 *
 * @example
 * math500Metrics(['\\boxed{3} … \\boxed{4}'], ['3']).accuracy; // 1
 */
export function math500Metrics(predictions: readonly string[], answers: readonly string[]): BoxedMetrics {
  return boxedAnswerMetrics(predictions, answers, 'first');
}
