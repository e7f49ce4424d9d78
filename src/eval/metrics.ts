/**
 * Evaluation metrics, ported to match the Python library's scorers number for number:
 * RULER string matching, LongBench's qa-F1 / ROUGE-L / classification / retrieval / count,
 * NIAH ROUGE, AIME25 / MATH-500 boxed answers. Python string semantics (whitespace set,
 * punctuation set, `round`) are reproduced where they change results; the distribution metrics
 * of the fidelity tasks (NLL, KL, top-1) are beside them. One file per family in metrics/.
 */
export { logSoftmax, klDivergence, tokenNll, meanNll, meanKlDivergence, argmax, top1Accuracy } from './metrics/logits.js';
export { pyRound } from './metrics/python.js';
export { rulerPostprocess, stringMatchAll, stringMatchPart, rulerMetricFor, rulerScores, type ScoredRow } from './metrics/ruler.js';
export { rouge, niahRouge, type RougeScore, type RougeScores } from './metrics/rouge.js';
export { normalizeAnswer, qaF1Score, rougeLScore, classificationScore, retrievalScore, countScore, longbenchScore } from './metrics/longbench.js';
export { extractBoxed, boxedAnswerMetrics, aime25Metrics, math500Metrics, type BoxedMetrics } from './metrics/boxed.js';
