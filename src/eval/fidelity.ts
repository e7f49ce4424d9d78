/**
 * The two tasks a 260K-parameter TinyStories model can do well enough for compression to show:
 *
 * - continuation fidelity: compress a story's first part, feed the rest teacher-forced through
 *   the compressed cache, and measure how far the next-token distributions move from the
 *   uncompressed model's (mean KL, float64) and how much the story's NLL grows;
 * - name recall: compress the start of a story whose main character was named early, feed the
 *   rest of the prefix, and check that greedy decoding still writes the name (every name token
 *   top-1, teacher-forced).
 *
 * The uncompressed pass of each item is a `*Reference`, computed once and shared by every
 * press and ratio of a grid. Only the prefill sees the press: the teacher-forced part runs
 * without one, at positions after the uncompressed length (the cache's nextPosition).
 */
import type { KvDtype } from '../cache/format.js';
import type { KVCache } from '../cache/kv-cache.js';
import type { Compressor } from '../model/layer-context.js';
import type { Model } from '../model/model.js';
import { argmax, klDivergence, tokenNll } from './metrics/logits.js';

/** Default share of the tokens (BOS included) that is compressed. */
export const DEFAULT_CONTEXT_FRACTION = 0.6;

/** Where a sequence of `length` tokens is cut: at least one token each side. */
export function contextBoundary(length: number, fraction: number): number {
  if (!(fraction > 0 && fraction < 1)) throw new RangeError(`context fraction must be in (0, 1), got ${fraction}`);
  return Math.min(length - 1, Math.max(1, Math.round(length * fraction)));
}

/** Share of the context's cache entries a prefill removed (over all layers and KV heads). */
function removedShare(cache: KVCache, contextTokens: number): number {
  let kept = 0, slots = 0;
  for (const layer of cache.layers) {
    for (const n of layer.lengths) {
      kept += n;
      slots += contextTokens;
    }
  }
  return 1 - kept / slots;
}

/** Checks that a sequence fits the model's context (the embedded model has 512 positions). */
function checkFits(model: Model, tokens: number, id: string): void {
  const max = model.config.maxPositionEmbeddings;
  if (tokens > max) throw new Error(`${id}: ${tokens} tokens exceed the model's context of ${max} positions; lower --context-length`);
}

/** The uncompressed pass over one story, reused by every press. */
export interface ContinuationReference {
  id: string;
  tokens: number[];
  /** Tokens [0, context) are compressed; context + 1 … end are scored. */
  context: number;
  /** Row r: logits predicting tokens[context + 1 + r] ([tokens − context − 1][vocab]). */
  logits: Float32Array;
  /** Summed NLL of the scored tokens. */
  nll: number;
}

export interface ContinuationScore {
  id: string;
  contextTokens: number;
  scoredTokens: number;
  /** Summed NLL of the scored tokens under compression, and without it. */
  nll: number;
  nllBaseline: number;
  /** Summed per-token KL(uncompressed ‖ compressed) over the scored tokens. */
  kl: number;
  /** Share of the context's cache entries the press removed. */
  achievedRatio: number;
  /** KV bytes the compressed context holds per context token (all layers, in the cache's type). */
  kvBytesPerToken: number;
}

/**
 * Prefills tokens[0, context) with `press`, then runs tokens[context, n − 1) teacher-forced and
 * returns the logits predicting tokens[context + 1, n). The first continuation token is left
 * out: the prefill itself predicts it, and a press never changes the pass it runs in.
 */
function continuationLogits(model: Model, tokens: readonly number[], context: number, press: Compressor | null, kvDtype: KvDtype = model.kvDtype): { logits: Float32Array; removed: number; kvBytesPerToken: number } {
  const cache = model.newCache({ dtype: kvDtype });
  model.forward(tokens.slice(0, context), cache, { logits: 'none', press });
  const removed = removedShare(cache, context);
  const kvBytesPerToken = cache.bytes() / context;
  const logits = finiteLogits(model.forward(tokens.slice(context, tokens.length - 1), cache, { logits: 'all' }));
  return { logits, removed, kvBytesPerToken };
}

/** Tokenizes a story with BOS and runs the uncompressed model over it. */
export function continuationReference(model: Model, id: string, text: string, contextFraction = DEFAULT_CONTEXT_FRACTION): ContinuationReference {
  const tok = model.tokenizer;
  if (!tok) throw new Error(`${model.source}: continuation fidelity needs a tokenizer`);
  const tokens = tok.encode(text, { bos: true });
  if (tokens.length < 3) throw new Error(`${id}: a story needs at least 3 tokens, got ${tokens.length}`);
  checkFits(model, tokens.length, id);
  const context = Math.min(contextBoundary(tokens.length, contextFraction), tokens.length - 2);
  const { logits } = continuationLogits(model, tokens, context, null);
  const V = model.config.vocabSize;
  let nll = 0;
  for (let t = context + 1, off = 0; t < tokens.length; t++, off += V) nll += tokenNll(logits.subarray(off, off + V), tokens[t]);
  return { id, tokens, context, logits, nll };
}

/** Scores one story under `press` (and a cache of `kvDtype`) against its uncompressed reference. */
export function scoreContinuation(model: Model, ref: ContinuationReference, press: Compressor | null, kvDtype: KvDtype = model.kvDtype): ContinuationScore {
  const { tokens, context } = ref;
  const { logits, removed, kvBytesPerToken } = continuationLogits(model, tokens, context, press, kvDtype);
  const V = model.config.vocabSize;
  let nll = 0, kl = 0;
  for (let t = context + 1, off = 0; t < tokens.length; t++, off += V) {
    const row = logits.subarray(off, off + V);
    nll += tokenNll(row, tokens[t]);
    kl += klDivergence(ref.logits.subarray(off, off + V), row);
  }
  return {
    id: ref.id,
    contextTokens: context,
    scoredTokens: tokens.length - context - 1,
    nll,
    nllBaseline: ref.nll,
    kl,
    achievedRatio: removed,
    kvBytesPerToken,
  };
}

/** Token-weighted means over a set of stories. */
export interface ContinuationSummary {
  /** Mean KL(uncompressed ‖ compressed) per scored token, nats. */
  kl: number;
  /** Mean NLL per scored token under compression minus without it, nats. */
  nllIncrease: number;
  nll: number;
  nllBaseline: number;
  /** Mean over stories of the share of context entries removed. */
  achievedRatio: number;
  /** Mean over stories of the compressed context's KV bytes per context token. */
  kvBytesPerToken: number;
  scoredTokens: number;
}

export function summarizeContinuation(scores: readonly ContinuationScore[]): ContinuationSummary {
  if (scores.length === 0) throw new Error('no continuation scores to summarize');
  let tokens = 0, nll = 0, base = 0, kl = 0, ratio = 0, bytes = 0;
  for (const s of scores) {
    bytes += s.kvBytesPerToken;
    tokens += s.scoredTokens;
    nll += s.nll;
    base += s.nllBaseline;
    kl += s.kl;
    ratio += s.achievedRatio;
  }
  return {
    kl: kl / tokens,
    nllIncrease: (nll - base) / tokens,
    nll: nll / tokens,
    nllBaseline: base / tokens,
    achievedRatio: ratio / scores.length,
    kvBytesPerToken: bytes / scores.length,
    scoredTokens: tokens,
  };
}

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

/** The scores read logits directly (no sampler): a NaN or infinity would silently become a NaN score. */
function finiteLogits(logits: Float32Array): Float32Array {
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] - logits[i] !== 0) throw new Error(`the model produced a non-finite logit (${logits[i]}): its weights or activations overflow float32; check the checkpoint`);
  }
  return logits;
}
