/**
 * One evaluation row, in the format of the Python library's datasets: the context is what a
 * press compresses; the question and answer prefix are appended after compression; the
 * model then generates up to `maxNewTokens` tokens, scored against `answers`.
 */
export interface Sample {
  /** Stable identifier within its dataset (e.g. "vt-3", "depth-50"). */
  id?: string;
  context: string;
  question: string;
  answerPrefix: string;
  /** Every acceptable reference answer (RULER: every string the answer must contain). */
  answers: string[];
  maxNewTokens: number;
  /** Task name, used to pick the metric (e.g. "niah_single_1", "qa_2", "hotpotqa"). */
  task: string;
  /** Dataset-specific fields: RULER's measured length, NIAH's needle and depth, JSONL extras. */
  extra?: Record<string, unknown>;
}
