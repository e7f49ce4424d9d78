/**
 * RULER's scorers: predictions cleaned of control characters, then string_match_all (share of
 * the references found) or, for the qa_* tasks, string_match_part (any reference found).
 */
import { pyRound, pyStrip } from './python.js';
import { checkRows } from './rows.js';

const CONTROL_CHARS = /[\x00-\x1f]/g;

/**
 * RULER's prediction cleanup: strip, delete control characters (\x00–\x1f, so newlines and
 * tabs too), strip again.
 *
 * @example
 * rulerPostprocess(' 123\n456\t'); // "123456"
 */
export function rulerPostprocess(prediction: string): string {
  return pyStrip(pyStrip(prediction).replace(CONTROL_CHARS, ''));
}

/**
 * The two string matches' shared frame: per row `rowScore(references contained, references)`
 * (case-insensitive containment), the mean ×100, rounded to 2 decimals.
 */
function meanMatch(
  what: string, predictions: readonly string[], references: readonly (readonly string[])[], rowScore: (found: number, refs: number) => number,
): number {
  checkRows(what, predictions.length, references.length);
  let total = 0;
  predictions.forEach((pred, i) => {
    const refs = references[i]!;
    if (refs.length === 0) throw new RangeError(`${what}: row ${i} has no references`);
    const p = pred.toLowerCase();
    total += rowScore(refs.filter((r) => p.includes(r.toLowerCase())).length, refs.length);
  });
  return pyRound((total / predictions.length) * 100, 2);
}

/**
 * RULER string_match_all: mean over rows of the fraction of references contained
 * (case-insensitive) in the prediction, ×100, rounded to 2 decimals.
 *
 * @example
 * stringMatchAll(['A: 12 and 34'], [['12', '34', '56']]); // 66.67
 */
export function stringMatchAll(predictions: readonly string[], references: readonly (readonly string[])[]): number {
  return meanMatch('string_match_all', predictions, references, (found, refs) => found / refs);
}

/**
 * RULER string_match_part: mean over rows of "any reference is contained" (case-insensitive),
 * ×100, rounded to 2 decimals.
 *
 * @example
 * stringMatchPart(['Paris, France'], [['paris', 'Lyon']]); // 100
 */
export function stringMatchPart(predictions: readonly string[], references: readonly (readonly string[])[]): number {
  return meanMatch('string_match_part', predictions, references, (found) => (found > 0 ? 1 : 0));
}

/**
 * The RULER metric of a task: string_match_part for qa_* tasks, string_match_all otherwise.
 *
 * @example
 * rulerMetricFor('qa_2') === stringMatchPart; // true
 */
export function rulerMetricFor(task: string): typeof stringMatchAll {
  return task.split('_')[0] === 'qa' ? stringMatchPart : stringMatchAll;
}

export interface ScoredRow {
  task: string;
  prediction: string;
  answers: readonly string[];
}

/**
 * RULER scores per task (predictions cleaned with rulerPostprocess) and their plain mean,
 * which is the leaderboard score when all 13 tasks are present.
 *
 * @example
 * rulerScores([{ task: 'vt', prediction: 'AAAAA BBBBB', answers: ['AAAAA', 'BBBBB'] }]);
 * // → { perTask: { vt: 100 }, average: 100 }
 */
export function rulerScores(rows: readonly ScoredRow[]): { perTask: Record<string, number>; average: number } {
  if (rows.length === 0) throw new RangeError('RULER scores: no rows');
  const byTask = new Map<string, ScoredRow[]>();
  for (const row of rows) {
    const list = byTask.get(row.task) ?? [];
    list.push(row);
    byTask.set(row.task, list);
  }
  const perTask: Record<string, number> = {};
  for (const [task, list] of byTask) {
    perTask[task] = rulerMetricFor(task)(
      list.map((r) => rulerPostprocess(r.prediction)),
      list.map((r) => r.answers),
    );
  }
  const values = Object.values(perTask);
  return { perTask, average: values.reduce((a, b) => a + b, 0) / values.length };
}
