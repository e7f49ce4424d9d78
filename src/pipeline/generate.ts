import type { KVCache } from '../cache/kv-cache.js';
import type { Compressor } from '../model/layer-context.js';
import type { Model } from '../model/model.js';
import { TokenStream } from '../tokenizer/stream.js';
import { Sampler, type SamplingOptions } from './sampler.js';

export interface GenerateOptions extends SamplingOptions {
  /** Tokens to generate at most. Default 256 (and never past the model's context). */
  maxNewTokens?: number;
  /** Ids that end generation (not included in the output). Default: the tokenizer's stop ids. */
  stopIds?: readonly number[];
  /** Press applied during the prefill (and during decoding, for decoding presses). */
  press?: Compressor | null;
  /** A cache to continue from; by default a fresh one. The prompt is appended to it. */
  cache?: KVCache;
  /** Streaming: called with each generated id and its text as soon as it is sampled. */
  onToken?: (id: number, text: string) => void;
}

export interface GenerateResult {
  tokens: number[];
  text: string;
  cache: KVCache;
  /** Wall time of the prefill and of the decode loop, in milliseconds. */
  prefillMs: number;
  decodeMs: number;
}

/** Prefills `prompt` (ids, BOS included by the caller) and samples up to maxNewTokens ids. */
export function generate(model: Model, prompt: readonly number[], opts: GenerateOptions = {}): GenerateResult {
  if (!Array.isArray(prompt) && !ArrayBuffer.isView(prompt)) {
    throw new TypeError(`generate: prompt must be an array of token ids (model.tokenizer.encode(text, { bos: true })), got ${prompt === null ? 'null' : typeof prompt}`);
  }
  if (prompt.length === 0) throw new Error('generate: the prompt is empty');
  const maxNew = opts.maxNewTokens ?? 256;
  if (!Number.isInteger(maxNew) || maxNew < 0) throw new Error(`maxNewTokens must be an integer ≥ 0, got ${opts.maxNewTokens}`);
  const tok = model.tokenizer;
  const stop = new Set(opts.stopIds ?? tok?.stopIds ?? []);
  const sampler = new Sampler(model.config.vocabSize, opts);
  const cache = opts.cache ?? model.newCache();
  const room = Math.max(0, model.config.maxPositionEmbeddings - cache.nextPosition - prompt.length);
  const steps = Math.min(maxNew, room);

  const t0 = performance.now();
  let logits = model.forward(prompt, cache, { logits: 'last', press: opts.press });
  const t1 = performance.now();
  model.reserve(1, cache.layers.reduce((m, l) => Math.max(m, ...l.lengths), 0) + steps);

  const tokens: number[] = [];
  const stream = tok && opts.onToken ? new TokenStream(tok) : null;
  for (let i = 0; i < steps; i++) {
    const next = sampler.sample(logits);
    if (stop.has(next)) break;
    tokens.push(next);
    opts.onToken?.(next, stream ? stream.push(next) : '');
    if (i + 1 < steps) logits = model.forward([next], cache, { logits: 'last', press: opts.press });
  }
  const t2 = performance.now();
  return { tokens, text: tok ? tok.decode(tokens) : '', cache, prefillMs: t1 - t0, decodeMs: t2 - t1 };
}
