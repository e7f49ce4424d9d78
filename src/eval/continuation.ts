/**
 * Continuation fidelity: compress a story's first part, feed the rest teacher-forced through the
 * compressed cache, and measure how far the next-token distributions move from the uncompressed
 * model's (mean KL, float64) and how much the story's NLL grows.
 */
import type { KvDtype } from '../cache/format.js';
import type { Compressor } from '../model/layer-context.js';
import type { Model } from '../model/model.js';
import { checkFits, contextBoundary, DEFAULT_CONTEXT_FRACTION, finiteLogits, removedShare } from './fidelity-common.js';
import { klDivergence, tokenNll } from './metrics/logits.js';

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
