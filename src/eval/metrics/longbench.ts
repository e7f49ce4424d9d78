/**
 * LongBench's official scorers: qa-F1 on normalized answers, ROUGE-L, classification,
 * passage retrieval and count, each row scored by its best ground truth. The tasks whose
 * metric needs jieba or fuzzywuzzy are refused by name.
 */
import { pyRound, pySplit } from './python.js';
import { rouge } from './rouge.js';
import { checkRows } from './rows.js';

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
    // LongBench's eval.py: prediction.lstrip('\n').split('\n')[0] — newlines only, not all whitespace.
    const prediction = FIRST_LINE_TASKS.has(name) ? raw.replace(/^\n+/, '').split('\n')[0]! : raw;
    let best = 0;
    for (const truth of answers[i]!) best = Math.max(best, metric(prediction, truth, allClasses));
    total += best;
  });
  return pyRound((100 * total) / predictions.length, 2);
}
