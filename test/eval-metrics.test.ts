import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  aime25Metrics,
  argmax,
  boxedAnswerMetrics,
  classificationScore,
  countScore,
  extractBoxed,
  klDivergence,
  logSoftmax,
  longbenchScore,
  math500Metrics,
  meanKlDivergence,
  meanNll,
  niahRouge,
  normalizeAnswer,
  pyRound,
  qaF1Score,
  retrievalScore,
  rouge,
  rougeLScore,
  rulerMetricFor,
  rulerPostprocess,
  rulerScores,
  stringMatchAll,
  stringMatchPart,
  tokenNll,
  top1Accuracy,
} from '../src/eval/index.js';
import { pySplit, pyStrip } from '../src/eval/metrics/python.js';

const close = (actual: number, expected: number, tol = 1e-9): void =>
  assert.ok(Math.abs(actual - expected) <= tol, `expected ${expected}, got ${actual}`);

/** F of the `rouge` package: 2·(p·r)/(p + r + 1e-8). */
const rougeF = (p: number, r: number): number => 2 * ((p * r) / (p + r + 1e-8));

test('pyRound reproduces Python round(): exact binary value, ties to even', () => {
  // Values checked against CPython 3.
  assert.equal(pyRound(2.675, 2), 2.67);
  assert.equal(pyRound(1.005, 2), 1);
  assert.equal(pyRound(0.125, 2), 0.12);
  assert.equal(pyRound(0.375, 2), 0.38);
  assert.equal(pyRound(3.125, 2), 3.12);
  assert.equal(pyRound(-0.125, 2), -0.12);
  assert.equal(pyRound(0.5), 0);
  assert.equal(pyRound(1.5), 2);
  assert.equal(pyRound(2.5), 2);
  assert.equal(pyRound(33.333333, 2), 33.33);
  assert.equal(pyRound(66.666666, 2), 66.67);
});

test("Python's whitespace: str.split/strip/lstrip, not JavaScript's \\s", () => {
  // Python: '\x1c a\x1f\x85b '.split() == ['a', 'b'] (\x1c-\x1f and \x85 are whitespace to str.isspace).
  assert.deepEqual(pySplit('\x1c a\x1f\x85b '), ['a', 'b']);
  // Python: '\ufeffa\u3000'.strip() == '\ufeffa' (U+FEFF is not whitespace to Python; JavaScript's trim drops it).
  assert.equal(pyStrip('\ufeffa\u3000'), '\ufeffa');
  assert.equal(pyStrip('\x1d\n x y \x85'), 'x y');
});

test('RULER string_match_all / string_match_part', () => {
  const preds = ['The answer is 123 and 456', 'nothing here', 'ABC'];
  const refs = [['123', '456', '789'], ['x'], ['abc', 'def']];
  // rows: 2/3, 0, 1/2 → mean 7/18 → 38.888… → 38.89
  assert.equal(stringMatchAll(preds, refs), 38.89);
  // rows: 1, 0, 1 → 66.67
  assert.equal(stringMatchPart(preds, refs), 66.67);
  // 1/32 of the rows fully correct → 3.125 → ties to even → 3.12
  const many = Array.from({ length: 32 }, (_, i) => (i === 0 ? 'k' : '-'));
  assert.equal(stringMatchAll(many, many.map(() => ['k'])), 3.12);
  assert.throws(() => stringMatchAll(['a'], []), /1 predictions but 0 reference lists/);
  assert.throws(() => stringMatchPart(['a'], [[]]), /row 0 has no references/);
});

test('RULER postprocessing strips and removes control characters', () => {
  assert.equal(rulerPostprocess('\n\t 123\u0000 4\n5 '), '123 45');
  assert.equal(rulerMetricFor('qa_1'), stringMatchPart);
  assert.equal(rulerMetricFor('niah_multikey_2'), stringMatchAll);
  const s = rulerScores([
    { task: 'vt', prediction: ' AAAAA\nBBBBB', answers: ['AAAAA', 'BBBBB'] },
    { task: 'vt', prediction: 'AAAAA', answers: ['AAAAA', 'BBBBB'] },
    { task: 'qa_1', prediction: 'Paris', answers: ['paris', 'Lyon'] },
  ]);
  assert.deepEqual(s.perTask, { vt: 75, qa_1: 100 });
  assert.equal(s.average, 87.5);
});

test('LongBench normalization and qa F1', () => {
  assert.equal(normalizeAnswer('The  Eiffel-Tower, in a city!'), 'eiffeltower in city');
  // "the" inside words and with letters around is not an article.
  assert.equal(normalizeAnswer('Theatre another anthem'), 'theatre another anthem');
  // pred: cat sat on mat; truth: cat on mat → 3 shared; P = 3/4, R = 1 → F1 = 6/7
  close(qaF1Score('The cat sat on the mat.', 'a cat on a mat'), 6 / 7);
  // Multiset overlap after dropping the article: "b b" vs "b b b" → 2 shared; P = 1, R = 2/3 → F1 = 0.8
  close(qaF1Score('a b b', 'b b b'), 0.8);
  assert.equal(qaF1Score('', 'x'), 0);
});

test('ROUGE as the rouge package computes it', () => {
  const s = rouge('the cat sat on the mat', 'the cat is on the mat')!;
  // Distinct unigrams {the,cat,sat,on,mat} vs {the,cat,is,on,mat}: 4 shared of 5 and 5.
  close(s.rouge1.p, 0.8);
  close(s.rouge1.r, 0.8);
  close(s.rouge1.f, rougeF(0.8, 0.8));
  // Bigrams: the-cat, on-the, the-mat shared of 5 each.
  close(s.rouge2.f, rougeF(0.6, 0.6));
  // LCS "the cat on the mat" → distinct words {the,cat,on,mat} = 4, over 5 distinct each side.
  close(s.rougeL.p, 0.8);
  close(s.rougeL.f, rougeF(0.8, 0.8));
  // Sentence split on ".": union of per-sentence LCS covers all 4 words (plain LCS would give 3/4).
  const u = rouge('a b. c d', 'a c. b d')!;
  close(u.rougeL.p, 1);
  close(u.rougeL.r, 1);
  close(rougeLScore('a b. c d', 'a c. b d'), rougeF(1, 1));
  // Repeated words count once: hyp "x x y" has 2 distinct words, ref "x" has 1.
  const rep = rouge('x x y', 'x')!;
  close(rep.rouge1.p, 0.5);
  close(rep.rouge1.r, 1);
  assert.equal(rouge('...', 'x'), null);
  assert.equal(rougeLScore('', 'x'), 0);
});

test('NIAH ROUGE treats the needle as hypothesis', () => {
  const s = niahRouge('x y z', 'x y');
  // precision over the needle's 3 words, recall over the prediction's 2.
  close(s.rouge1.p, 2 / 3);
  close(s.rouge1.r, 1);
  close(s.rouge1.f, rougeF(2 / 3, 1));
  assert.deepEqual(niahRouge('x y', '').rougeL, { f: 0, p: 0, r: 0 });
});

test('LongBench classification, retrieval, count and task scoring', () => {
  const classes = ['Location', 'Person', 'Number'];
  assert.equal(classificationScore('Location', 'Location', classes), 1);
  assert.equal(classificationScore('Location or Person', 'Location', classes), 0.5);
  assert.equal(classificationScore('Number', 'Location', classes), 0);
  // Python's remove-while-iterating: "ab" is removed (inside the truth "abc"), which skips "b".
  assert.equal(classificationScore('ab b abc', 'abc', ['ab', 'b', 'abc']), 0.5);
  assert.equal(retrievalScore('It is Paragraph 3, not 4', 'Paragraph 3'), 0.5);
  assert.equal(retrievalScore('段落2', '段落2', '段落'), 1);
  assert.equal(countScore('I count 4, no, 5 passages', '5'), 0.5);
  assert.equal(countScore('none', '5'), 0);

  // Max over ground truths, then mean ×100: rows 1 and 6/7 → 92.857… → 92.86
  assert.equal(longbenchScore('hotpotqa', ['Paris', 'The cat sat on the mat.'], [['London', 'Paris'], ['a cat on a mat']]), 92.86);
  // trec keeps only the first line after leading newlines (LongBench strips '\n' only: a line
  // that starts with a space before the newline stays the first line).
  assert.equal(longbenchScore('trec', ['\n Person\nLocation'], [['Location']], classes), 0);
  assert.equal(longbenchScore('trec', ['\n\nLocation\nPerson'], [['Location']], classes), 100);
  assert.equal(longbenchScore('trec', [' \nLocation'], [['Location']], classes), 0);
  assert.equal(longbenchScore('passage_count-e', ['5'], [['5']]), 100);
  assert.throws(() => longbenchScore('lcc', ['x'], [['x']]), /jieba or fuzzywuzzy/);
  assert.throws(() => longbenchScore('nope', ['x'], [['x']]), /unknown LongBench task "nope"/);
  assert.throws(() => longbenchScore('trec', ['x'], [['x']]), /all_classes/);
});

test('boxed answers: AIME uses the last, MATH-500 the first, up to the next brace', () => {
  assert.equal(extractBoxed('so \\boxed{12} and \\boxed{34}.', 'first'), '12');
  assert.equal(extractBoxed('so \\boxed{12} and \\boxed{34}.', 'last'), '34');
  assert.equal(extractBoxed('\\boxed{\\frac{1}{2}}', 'first'), '\\frac{1');
  assert.equal(extractBoxed('\\boxed{42', 'last'), '42');
  assert.equal(extractBoxed('no box', 'last'), null);
  const preds = ['\\boxed{1} so \\boxed{204}', '\\boxed{7}', 'I give up', '\\boxed{33} or \\boxed{9}'];
  const answers = ['204', '8', '5', '33'];
  assert.deepEqual(aime25Metrics(preds, answers), { correct: 1, answered: 3, accuracy: 0.25, total: 4 });
  assert.deepEqual(math500Metrics(preds, answers), { correct: 1, answered: 3, accuracy: 0.25, total: 4 });
  assert.deepEqual(boxedAnswerMetrics(['\\boxed{ 3}'], ['3'], 'first'), { correct: 0, answered: 1, accuracy: 0, total: 1 });
});

test('log-softmax, KL divergence, NLL and top-1 against closed forms', () => {
  const lq = logSoftmax([0, Math.log(3)]);
  close(lq[0]!, Math.log(0.25), 1e-12);
  close(lq[1]!, Math.log(0.75), 1e-12);
  // Shifting logits does not change the distribution, even for large values in float32.
  const shifted = logSoftmax(new Float32Array([1000, 1000 + Math.log(3)]));
  close(shifted[1]!, Math.log(0.75), 1e-4);

  // P = (1/2, 1/2), Q = (1/4, 3/4): KL = ½ln2 + ½ln(2/3) = ½ln(4/3)
  close(klDivergence([0, 0], [0, Math.log(3)]), 0.5 * Math.log(4 / 3), 1e-12);
  // KL is not symmetric: KL(Q‖P) = ¼ln(1/2) + ¾ln(3/2)
  close(klDivergence([0, Math.log(3)], [0, 0]), 0.25 * Math.log(0.5) + 0.75 * Math.log(1.5), 1e-12);
  assert.equal(klDivergence([1, 2, 3], [1, 2, 3]), 0);
  // A zero-probability entry of P contributes nothing; one of Q under P's mass is infinite.
  close(klDivergence([0, -Infinity], [0, 0]), Math.log(2), 1e-12);
  assert.equal(klDivergence([0, 0], [0, -Infinity]), Infinity);
  assert.throws(() => klDivergence([0], [0, 0]), /vocabularies differ/);

  close(tokenNll([0, Math.log(3)], 1), -Math.log(0.75), 1e-12);
  close(meanNll([[0, 0], [0, Math.log(3)]], [0, 1]), (Math.log(2) - Math.log(0.75)) / 2, 1e-12);
  close(meanKlDivergence([[0, 0], [5, 5]], [[0, Math.log(3)], [1, 1]]), 0.25 * Math.log(4 / 3), 1e-12);
  assert.throws(() => tokenNll([0, 0], 2), /outside the vocabulary of 2/);

  assert.equal(argmax([0.1, 2, 2, -1]), 1);
  assert.equal(top1Accuracy([[0, 1], [1, 0], [0, 0, 3]], [1, 1, 2]), 2 / 3);
});
