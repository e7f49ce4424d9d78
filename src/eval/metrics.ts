/**
 * Evaluation metrics, ported to match the Python library's scorers number for number:
 * RULER string matching, LongBench's qa-F1 / ROUGE-L / classification / retrieval / count,
 * NIAH ROUGE, AIME25 / MATH-500 boxed answers. Python string semantics (whitespace set,
 * punctuation set, `round`) are reproduced where they change results. The distribution metrics
 * of the fidelity tasks (NLL, KL, top-1) are in logit-metrics.ts, re-exported here.
 */
import { checkRows } from './logit-metrics.js';

export { logSoftmax, klDivergence, tokenNll, meanNll, meanKlDivergence, argmax, top1Accuracy } from './logit-metrics.js';

// ───────────────────────────── Python string helpers ─────────────────────────────

/** The characters Python's str.split()/strip() treat as whitespace. */
const PY_WS = '\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_WS_RUN = new RegExp(`[${PY_WS}]+`);
const PY_WS_EDGES = new RegExp(`^[${PY_WS}]+|[${PY_WS}]+$`, 'g');
const PY_WS_LEAD = new RegExp(`^[${PY_WS}]+`);

/** Python's `s.split()`: whitespace-separated non-empty pieces. */
function pySplit(s: string): string[] {
  return s.split(PY_WS_RUN).filter((w) => w.length > 0);
}

function pyStrip(s: string): string {
  return s.replace(PY_WS_EDGES, '');
}

/**
 * Python's `round(x, digits)`: correctly rounded from the exact binary value, ties to even.
 * Ties only happen when x is an odd multiple of 2^-(digits+1); everything else is what
 * `toFixed` (exact decimal expansion) already gives.
 *
 * @example
 * pyRound(2.675, 2); // 2.67 (2.675 is stored as 2.67499…)
 * pyRound(0.125, 2); // 0.12 (exact tie, to even)
 */
export function pyRound(x: number, digits = 0): number {
  if (!Number.isFinite(x)) return x;
  const scaledTie = x * 2 ** (digits + 1);
  if (Number.isInteger(scaledTie) && Math.abs(scaledTie) % 2 === 1 && Math.abs(scaledTie) < 2 ** 52) {
    const lower = Number((x - 0.5 * 10 ** -digits).toFixed(digits));
    const upper = Number((x + 0.5 * 10 ** -digits).toFixed(digits));
    const lastDigit = (v: number): number => Math.round(Math.abs(v) * 10 ** digits) % 2;
    return lastDigit(lower) === 0 ? lower : upper;
  }
  return Number(x.toFixed(digits));
}


// ───────────────────────────────────── RULER ─────────────────────────────────────

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
 * RULER string_match_all: mean over rows of the fraction of references contained
 * (case-insensitive) in the prediction, ×100, rounded to 2 decimals.
 *
 * @example
 * stringMatchAll(['A: 12 and 34'], [['12', '34', '56']]); // 66.67
 */
export function stringMatchAll(predictions: readonly string[], references: readonly (readonly string[])[]): number {
  checkRows('string_match_all', predictions.length, references.length);
  let total = 0;
  predictions.forEach((pred, i) => {
    const refs = references[i]!;
    if (refs.length === 0) throw new RangeError(`string_match_all: row ${i} has no references`);
    const p = pred.toLowerCase();
    total += refs.filter((r) => p.includes(r.toLowerCase())).length / refs.length;
  });
  return pyRound((total / predictions.length) * 100, 2);
}

/**
 * RULER string_match_part: mean over rows of "any reference is contained" (case-insensitive),
 * ×100, rounded to 2 decimals.
 *
 * @example
 * stringMatchPart(['Paris, France'], [['paris', 'Lyon']]); // 100
 */
export function stringMatchPart(predictions: readonly string[], references: readonly (readonly string[])[]): number {
  checkRows('string_match_part', predictions.length, references.length);
  let total = 0;
  predictions.forEach((pred, i) => {
    const refs = references[i]!;
    if (refs.length === 0) throw new RangeError(`string_match_part: row ${i} has no references`);
    const p = pred.toLowerCase();
    if (refs.some((r) => p.includes(r.toLowerCase()))) total += 1;
  });
  return pyRound((total / predictions.length) * 100, 2);
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

// ─────────────────────────────────── LongBench ───────────────────────────────────

/** Python's string.punctuation. */
const PUNCTUATION = new Set('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~');
/** Articles as whole words; Python's \b counts Unicode letters, digits and _ as word characters. */
const ARTICLES = /(?<![\p{L}\p{N}_])(?:a|an|the)(?![\p{L}\p{N}_])/gu;

/**
 * SQuAD/LongBench answer normalization: lower-case, drop ASCII punctuation, replace the
 * articles a/an/the by spaces, collapse whitespace.
 *
 * @example
 * normalizeAnswer('The  Eiffel-Tower!'); // "eiffeltower"
 */
export function normalizeAnswer(s: string): string {
  const lower = s.toLowerCase();
  let noPunct = '';
  for (const ch of lower) if (!PUNCTUATION.has(ch)) noPunct += ch;
  return pySplit(noPunct.replace(ARTICLES, ' ')).join(' ');
}

/** Token-level F1 of two token lists (multiset overlap). */
function tokenF1(prediction: readonly string[], truth: readonly string[]): number {
  const counts = new Map<string, number>();
  for (const t of truth) counts.set(t, (counts.get(t) ?? 0) + 1);
  let same = 0;
  for (const t of prediction) {
    const c = counts.get(t) ?? 0;
    if (c > 0) {
      same++;
      counts.set(t, c - 1);
    }
  }
  if (same === 0) return 0;
  const precision = same / prediction.length;
  const recall = same / truth.length;
  return (2 * precision * recall) / (precision + recall);
}

/**
 * LongBench qa_f1_score: token F1 between the normalized prediction and ground truth.
 *
 * @example
 * qaF1Score('The cat sat on the mat.', 'a cat on a mat'); // 0.857… (3 shared of 4 and 3 tokens)
 */
export function qaF1Score(prediction: string, groundTruth: string): number {
  return tokenF1(pySplit(normalizeAnswer(prediction)), pySplit(normalizeAnswer(groundTruth)));
}

export interface RougeScore {
  f: number;
  p: number;
  r: number;
}

export interface RougeScores {
  rouge1: RougeScore;
  rouge2: RougeScore;
  rougeL: RougeScore;
}

/** The `rouge` package's preprocessing: split on ".", drop empty pieces, collapse whitespace. */
function rougeSentences(text: string): string[] {
  return text
    .split('.')
    .filter((s) => s.length > 0)
    .map((s) => pySplit(s).join(' '));
}

const rougeWords = (sentences: readonly string[]): string[] => sentences.flatMap((s) => s.split(' '));

function rougeF(p: number, r: number): number {
  return 2 * ((p * r) / (p + r + 1e-8));
}

/** ROUGE-N with n-grams as sets (the package's default "exclusive" mode). */
function rougeN(hyp: readonly string[], ref: readonly string[], n: number): RougeScore {
  const grams = (words: readonly string[]): Set<string> => {
    const set = new Set<string>();
    for (let i = 0; i + n <= words.length; i++) set.add(words.slice(i, i + n).join('\u0000'));
    return set;
  };
  const h = grams(rougeWords(hyp));
  const r = grams(rougeWords(ref));
  let overlap = 0;
  for (const g of h) if (r.has(g)) overlap++;
  const p = h.size === 0 ? 0 : overlap / h.size;
  const rec = r.size === 0 ? 0 : overlap / r.size;
  return { f: rougeF(p, rec), p, r: rec };
}

/** Tokens of one longest common subsequence, with the package's backtracking tie-break. */
function lcsTokens(x: readonly string[], y: readonly string[]): string[] {
  const w = y.length + 1;
  const table = new Int32Array((x.length + 1) * w);
  for (let i = 1; i <= x.length; i++) {
    for (let j = 1; j <= y.length; j++) {
      table[i * w + j] =
        x[i - 1] === y[j - 1] ? table[(i - 1) * w + j - 1]! + 1 : Math.max(table[(i - 1) * w + j]!, table[i * w + j - 1]!);
    }
  }
  const out: string[] = [];
  let i = x.length;
  let j = y.length;
  while (i > 0 && j > 0) {
    if (x[i - 1] === y[j - 1]) {
      out.push(x[i - 1]!);
      i--;
      j--;
    } else if (table[(i - 1) * w + j]! > table[i * w + j - 1]!) {
      i--;
    } else {
      j--;
    }
  }
  return out.reverse();
}

/** Summary-level ROUGE-L: union of per-sentence LCS tokens, counted as distinct words. */
function rougeL(hyp: readonly string[], ref: readonly string[]): RougeScore {
  const m = new Set(rougeWords(ref)).size;
  const n = new Set(rougeWords(hyp)).size;
  const union = new Set<string>();
  for (const r of ref) {
    const refWords = r.split(' ');
    for (const h of hyp) for (const t of lcsTokens(refWords, h.split(' '))) union.add(t);
  }
  const rec = union.size / m;
  const p = union.size / n;
  return { f: rougeF(p, rec), p, r: rec };
}

/**
 * ROUGE-1/2/L of a hypothesis against a reference exactly as the Python `rouge` package
 * computes them (sentences split on "."; n-grams and LCS words counted once). Null when
 * either side has no sentence (where the package raises).
 *
 * @example
 * rouge('the cat sat on the mat', 'the cat is on the mat')?.rougeL.f; // ≈ 0.8
 */
export function rouge(hypothesis: string, reference: string): RougeScores | null {
  const hyp = rougeSentences(hypothesis);
  const ref = rougeSentences(reference);
  if (hyp.length === 0 || ref.length === 0) return null;
  return { rouge1: rougeN(hyp, ref, 1), rouge2: rougeN(hyp, ref, 2), rougeL: rougeL(hyp, ref) };
}

/**
 * LongBench rouge_score: the ROUGE-L F of the prediction against one ground truth, 0 when
 * the prediction (or truth) is empty.
 *
 * @example
 * rougeLScore('the cat sat on the mat', 'the cat is on the mat'); // ≈ 0.8
 */
export function rougeLScore(prediction: string, groundTruth: string): number {
  return rouge(prediction, groundTruth)?.rougeL.f ?? 0;
}

/**
 * LongBench classification_score (trec, lsht): 1/k when the ground-truth class is among the
 * k class names found in the prediction (names contained in the truth are dropped, with the
 * original loop's skip-after-removal behaviour), else 0.
 *
 * @example
 * classificationScore('Type: Location', 'Location', ['Location', 'Person']); // 1
 */
export function classificationScore(prediction: string, groundTruth: string, allClasses: readonly string[]): number {
  const matches = allClasses.filter((c) => prediction.includes(c));
  // Python removes from the list it is iterating over, which skips the following element.
  for (let i = 0; i < matches.length; i++) {
    const term = matches[i]!;
    if (groundTruth.includes(term) && term !== groundTruth) matches.splice(matches.indexOf(term), 1);
  }
  return matches.includes(groundTruth) ? 1 / matches.length : 0;
}

/** Share of the numbers in `prediction` equal to `target` (0 when it has none). */
function numberShare(prediction: string, target: string): number {
  const numbers = prediction.match(/\d+/g) ?? [];
  if (numbers.length === 0) return 0;
  return numbers.filter((n) => n === target).length / numbers.length;
}

/**
 * LongBench retrieval_score (passage_retrieval_en; "段落N" for _zh): share of the numbers in
 * the prediction equal to the ground truth's paragraph number.
 *
 * @example
 * retrievalScore('Paragraph 3', 'Paragraph 3'); // 1
 */
export function retrievalScore(prediction: string, groundTruth: string, label = 'Paragraph '): number {
  const m = new RegExp(`${label}(\\d+)`).exec(groundTruth);
  if (m === null) throw new Error(`retrieval score: ground truth "${groundTruth}" names no "${label}N"`);
  return numberShare(prediction, m[1]!);
}

/**
 * LongBench count_score (passage_count): share of the numbers in the prediction equal to
 * the ground truth.
 *
 * @example
 * countScore('I count 4, no, 5 passages', '5'); // 0.5
 */
export function countScore(prediction: string, groundTruth: string): number {
  return numberShare(prediction, groundTruth);
}

type LongbenchMetric = (prediction: string, truth: string, allClasses: readonly string[]) => number;

const LONGBENCH_METRICS: Record<string, LongbenchMetric> = {
  narrativeqa: qaF1Score,
  qasper: qaF1Score,
  multifieldqa_en: qaF1Score,
  hotpotqa: qaF1Score,
  '2wikimqa': qaF1Score,
  musique: qaF1Score,
  triviaqa: qaF1Score,
  gov_report: rougeLScore,
  qmsum: rougeLScore,
  multi_news: rougeLScore,
  samsum: rougeLScore,
  trec: classificationScore,
  lsht: classificationScore,
  passage_retrieval_en: (p, t) => retrievalScore(p, t),
  passage_retrieval_zh: (p, t) => retrievalScore(p, t, '段落'),
  passage_count: countScore,
};

/** Tasks whose official metric needs jieba word segmentation or fuzzywuzzy edit similarity. */
const LONGBENCH_UNSUPPORTED = new Set(['multifieldqa_zh', 'dureader', 'vcsum', 'lcc', 'repobench-p']);

/** Tasks scored on the first line of the prediction only. */
const FIRST_LINE_TASKS = new Set(['trec', 'triviaqa', 'samsum', 'lsht']);

/**
 * LongBench task score: per row the best metric value over its ground truths, averaged,
 * ×100, rounded to 2 decimals. A "-e" suffix (LongBench-E) is accepted; its length buckets
 * are not computed here.
 *
 * @example
 * longbenchScore('hotpotqa', ['Paris'], [['Paris', 'paris, France']]); // 100
 */
export function longbenchScore(
  task: string,
  predictions: readonly string[],
  answers: readonly (readonly string[])[],
  allClasses: readonly string[] = [],
): number {
  const name = task.endsWith('-e') ? task.slice(0, -2) : task;
  if (LONGBENCH_UNSUPPORTED.has(name)) {
    throw new Error(`LongBench task "${name}" needs jieba or fuzzywuzzy scoring, which kvpress-ts does not implement`);
  }
  const metric = LONGBENCH_METRICS[name];
  if (metric === undefined) throw new Error(`unknown LongBench task "${task}"`);
  if ((name === 'trec' || name === 'lsht') && allClasses.length === 0) {
    throw new Error(`LongBench task "${name}" needs its list of classes (all_classes)`);
  }
  checkRows(`LongBench ${name}`, predictions.length, answers.length);
  let total = 0;
  predictions.forEach((raw, i) => {
    const prediction = FIRST_LINE_TASKS.has(name) ? raw.replace(PY_WS_LEAD, '').split('\n')[0]! : raw;
    let best = 0;
    for (const truth of answers[i]!) best = Math.max(best, metric(prediction, truth, allClasses));
    total += best;
  });
  return pyRound((100 * total) / predictions.length, 2);
}

// ────────────────────────────────────── NIAH ──────────────────────────────────────

/**
 * NIAH row score: ROUGE with the needle as *hypothesis* and the prediction as reference —
 * the argument order of the Python library's `scorer.get_scores(needle, prediction)` — so
 * precision is measured over the needle's words. All zeros for an empty prediction.
 *
 * @example
 * niahRouge('x y z', 'x y').rouge1; // { p: 2/3, r: 1, f: 0.8 }
 */
export function niahRouge(needle: string, prediction: string): RougeScores {
  const zero = { f: 0, p: 0, r: 0 };
  return rouge(needle, prediction) ?? { rouge1: zero, rouge2: zero, rougeL: zero };
}

// ───────────────────────────────── AIME / MATH-500 ─────────────────────────────────

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
