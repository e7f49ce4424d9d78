import type { KVCache } from '../cache/kv-cache.js';
import type { Compressor } from '../model/layer-context.js';
import type { Model } from '../model/model.js';
import { argmax } from '../pipeline/sampler.js';

export interface ModelBenchResult {
  promptTokens: number;
  genTokens: number;
  /** Cache depth the decode started from. */
  depth: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  prefillMs: number;
  decodeMs: number;
  /** Bytes of keys and values in the cache after decoding. */
  kvCacheBytes: number;
}

/** Deterministic token ids in [3, vocab) (avoids BOS/EOS, whose ids are small). */
export function benchTokens(n: number, vocabSize: number, seed = 7): number[] {
  let s = seed;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return 3 + (s % (vocabSize - 3));
  });
}

/**
 * Fills `cache` with `depth` entries of deterministic pseudo-random keys and values, as a
 * prefill of that length would (decode speed depends on the depth, not on the values).
 */
export function fillCache(cache: KVCache, depth: number, kvDim: number): void {
  const k = new Float32Array(depth * kvDim), v = new Float32Array(depth * kvDim);
  let s = 12345;
  for (let i = 0; i < k.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    k[i] = (s / 4294967296 - 0.5) * 0.2;
    v[i] = k[(i * 7) % k.length];
  }
  const positions = Int32Array.from({ length: depth }, (_, i) => i);
  for (const layer of cache.layers) layer.append(k, v, positions, depth);
  cache.nextPosition = depth;
}

/**
 * Prefill `promptTokens` tokens (no logits but the last), then decode `genTokens` greedily
 * from a cache of `depth` entries (depth 0: continue from the prefill's cache). One untimed
 * prefill runs first, as llama-bench's warm-up run does, so that first-touch page faults of the
 * buffers and the worker threads' start are not counted against the measured pass.
 */
export function benchModel(model: Model, opts: { promptTokens: number; genTokens: number; depth?: number; press?: Compressor | null }): ModelBenchResult {
  const c = model.config;
  const depth = opts.depth ?? 0;
  const prompt = benchTokens(opts.promptTokens, c.vocabSize);
  let prefillMs = 0;
  let cache = model.newCache();
  if (opts.promptTokens > 0) {
    model.reserve(opts.promptTokens, opts.promptTokens);
    model.forward(prompt, model.newCache(), { logits: 'last', press: opts.press });
    const t0 = performance.now();
    model.forward(prompt, cache, { logits: 'last', press: opts.press });
    prefillMs = performance.now() - t0;
  }
  if (depth > 0) {
    cache = model.newCache();
    fillCache(cache, depth, c.numKvHeads * c.headDim);
  }
  model.reserve(1, depth + opts.promptTokens + opts.genTokens);
  let next = prompt[prompt.length - 1] ?? 3;
  const t1 = performance.now();
  for (let i = 0; i < opts.genTokens; i++) {
    const logits = model.forward([next], cache, { logits: 'last', press: opts.press });
    next = argmax(logits);
  }
  const decodeMs = performance.now() - t1;
  return {
    promptTokens: opts.promptTokens,
    genTokens: opts.genTokens,
    depth: depth > 0 ? depth : opts.promptTokens,
    prefillTokensPerSecond: opts.promptTokens > 0 ? opts.promptTokens / (prefillMs / 1000) : 0,
    decodeTokensPerSecond: opts.genTokens > 0 ? opts.genTokens / (decodeMs / 1000) : 0,
    prefillMs,
    decodeMs,
    kvCacheBytes: cache.bytes(),
  };
}
