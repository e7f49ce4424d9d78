/**
 * Name recall: compress the start of a story whose main character was named early, feed the rest
 * of the prefix, and check that greedy decoding still writes the name (every name token top-1,
 * teacher-forced).
 */
import type { KvDtype } from '../cache/format.js';
import type { Compressor } from '../model/layer-context.js';
import type { Model } from '../model/model.js';
import { checkFits, contextBoundary, DEFAULT_CONTEXT_FRACTION, finiteLogits, removedShare } from './fidelity-common.js';
import { argmax, tokenNll } from './metrics/logits.js';

/**
 * The uncompressed pass over one name-recall item. The whole name is scored, not just its
 * first token: with a 512-token vocabulary many names start with a bare "▁" or a letter
 * shared by other names (" S" of Sue, Sara and Sam), so a first-token hit says little.
 */
export interface RecallReference {
  id: string;
  /** The prefix with BOS, then the name's tokens (teacher-forced when scoring). */
  tokens: number[];
  /** Tokens [0, context) are compressed, the rest of the prefix and the name are fed after. */
  context: number;
  answer: string;
  /** The name's tokens (with its leading space) as the full text tokenizes them. */
  answerTokens: number[];
  /** Greedy prediction at each name position and the name's summed NLL, uncompressed. */
  predicted: number[];
  answerNll: number;
}

export interface RecallScore {
  id: string;
  answer: string;
  /** Greedy prediction at each name position, given the true name tokens before it. */
  predicted: number[];
  /** Every name token is the top-1 prediction (greedy decoding would write the name). */
  correct: boolean;
  firstTokenCorrect: boolean;
  /** Summed NLL of the name's tokens. */
  answerNll: number;
  baselineCorrect: boolean;
  baselineFirstTokenCorrect: boolean;
  baselineAnswerNll: number;
  achievedRatio: number;
  /** KV bytes the compressed context holds per context token. */
  kvBytesPerToken: number;
}

/**
 * Prefills item[0, context) with `press`, feeds the rest of the prefix and the name, and returns
 * the greedy prediction and the summed NLL at the name's positions.
 */
function recallPass(model: Model, tokens: readonly number[], context: number, names: number, press: Compressor | null, kvDtype: KvDtype = model.kvDtype): { predicted: number[]; nll: number; removed: number; kvBytesPerToken: number } {
  const cache = model.newCache({ dtype: kvDtype });
  model.forward(tokens.slice(0, context), cache, { logits: 'none', press });
  const removed = removedShare(cache, context);
  const kvBytesPerToken = cache.bytes() / context;
  const rest = tokens.slice(context, tokens.length - 1);
  const logits = finiteLogits(model.forward(rest, cache, { logits: 'all' }));
  const V = model.config.vocabSize;
  const predicted: number[] = [];
  let nll = 0;
  // Row r predicts tokens[context + 1 + r]; the name's tokens are the last `names` targets.
  for (let r = rest.length - names; r < rest.length; r++) {
    const row = logits.subarray(r * V, (r + 1) * V);
    predicted.push(argmax(row));
    nll += tokenNll(row, tokens[context + 1 + r]);
  }
  return { predicted, nll, removed, kvBytesPerToken };
}

/**
 * Builds the reference of a name-recall item, or null when the name's tokens cannot be told
 * apart from the prefix's (the prefix's tokens are not a prefix of the full text's tokens — a
 * tokenizer merge across the boundary).
 */
export function recallReference(
  model: Model,
  item: { id: string; prefix: string; answer: string },
  contextFraction = DEFAULT_CONTEXT_FRACTION,
): RecallReference | null {
  const tok = model.tokenizer;
  if (!tok) throw new Error(`${model.source}: name recall needs a tokenizer`);
  const prefix = tok.encode(item.prefix, { bos: true });
  const tokens = tok.encode(`${item.prefix} ${item.answer}`, { bos: true });
  checkFits(model, tokens.length, item.id);
  if (tokens.length <= prefix.length || prefix.some((t, i) => tokens[i] !== t)) return null;
  if (prefix.length < 2) throw new Error(`${item.id}: a name-recall prefix needs at least 2 tokens`);
  const context = contextBoundary(prefix.length, contextFraction);
  const answerTokens = tokens.slice(prefix.length);
  const { predicted, nll } = recallPass(model, tokens, context, answerTokens.length, null);
  return { id: item.id, tokens, context, answer: item.answer, answerTokens, predicted, answerNll: nll };
}

const allEqual = (a: readonly number[], b: readonly number[]): boolean => a.every((x, i) => x === b[i]);

export function scoreRecall(model: Model, ref: RecallReference, press: Compressor | null, kvDtype: KvDtype = model.kvDtype): RecallScore {
  const { predicted, nll, removed, kvBytesPerToken } = recallPass(model, ref.tokens, ref.context, ref.answerTokens.length, press, kvDtype);
  return {
    id: ref.id,
    answer: ref.answer,
    predicted,
    correct: allEqual(predicted, ref.answerTokens),
    firstTokenCorrect: predicted[0] === ref.answerTokens[0],
    answerNll: nll,
    baselineCorrect: allEqual(ref.predicted, ref.answerTokens),
    baselineFirstTokenCorrect: ref.predicted[0] === ref.answerTokens[0],
    baselineAnswerNll: ref.answerNll,
    achievedRatio: removed,
    kvBytesPerToken,
  };
}

export interface RecallSummary {
  /** Percent of items whose name greedy decoding reproduces (every name token top-1). */
  accuracy: number;
  baselineAccuracy: number;
  /** Percent of items whose name's first token is the top-1 prediction. */
  firstTokenAccuracy: number;
  /** Percent of the items the uncompressed model gets right that stay right (NaN if none). */
  retained: number;
  /** Mean summed NLL of the name's tokens, and its increase over the uncompressed model. */
  answerNll: number;
  answerNllIncrease: number;
  achievedRatio: number;
  kvBytesPerToken: number;
}

export function summarizeRecall(scores: readonly RecallScore[]): RecallSummary {
  const n = scores.length;
  if (n === 0) throw new Error('no name-recall scores to summarize');
  let correct = 0, first = 0, base = 0, kept = 0, nll = 0, baseNll = 0, ratio = 0, bytes = 0;
  for (const s of scores) {
    bytes += s.kvBytesPerToken;
    if (s.correct) correct++;
    if (s.firstTokenCorrect) first++;
    if (s.baselineCorrect) {
      base++;
      if (s.correct) kept++;
    }
    nll += s.answerNll;
    baseNll += s.baselineAnswerNll;
    ratio += s.achievedRatio;
  }
  return {
    accuracy: (100 * correct) / n,
    baselineAccuracy: (100 * base) / n,
    firstTokenAccuracy: (100 * first) / n,
    retained: base > 0 ? (100 * kept) / base : NaN,
    answerNll: nll / n,
    answerNllIncrease: (nll - baseNll) / n,
    achievedRatio: ratio / n,
    kvBytesPerToken: bytes / n,
  };
}
