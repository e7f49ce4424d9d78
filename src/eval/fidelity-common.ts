/**
 * What the two fidelity tasks share: where a story is cut into the compressed context and the
 * teacher-forced rest, the share of entries a prefill removed, and the checks on length and logits.
 */
import type { KVCache } from '../cache/kv-cache.js';
import type { Model } from '../model/model.js';

/** Default share of the tokens (BOS included) that is compressed. */
export const DEFAULT_CONTEXT_FRACTION = 0.6;

/** Where a sequence of `length` tokens is cut: at least one token each side. */
export function contextBoundary(length: number, fraction: number): number {
  if (!(fraction > 0 && fraction < 1)) throw new RangeError(`context fraction must be in (0, 1), got ${fraction}`);
  return Math.min(length - 1, Math.max(1, Math.round(length * fraction)));
}

/** Share of the context's cache entries a prefill removed (over all layers and KV heads). */
export function removedShare(cache: KVCache, contextTokens: number): number {
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
export function checkFits(model: Model, tokens: number, id: string): void {
  const max = model.config.maxPositionEmbeddings;
  if (tokens > max) throw new Error(`${id}: ${tokens} tokens exceed the model's context of ${max} positions; lower --context-length`);
}

/** The scores read logits directly (no sampler): a NaN or infinity would silently become a NaN score. */
export function finiteLogits(logits: Float32Array): Float32Array {
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] - logits[i] !== 0) throw new Error(`the model produced a non-finite logit (${logits[i]}): its weights or activations overflow float32; check the checkpoint`);
  }
  return logits;
}
