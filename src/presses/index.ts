import type { KVCache } from '../cache/kv-cache.js';
import type { Model } from '../model/model.js';
import { baselineEntries } from './entries-baselines.js';
import { eaEntries } from './entries-ea.js';
import { capEntry } from './cap.js';
import { chunkKVWrapper } from './chunkkv.js';
import { dmsWrapper } from './dms.js';
import { mergingWrapper } from './merging.js';
import { compactorEntry } from './compactor.js';
import { curEntry } from './cur.js';
import { leverageScoreEntry } from './leverage-score.js';
import { nonCausalAttnEntry } from './non-causal-attn.js';
import { simLayerKVEntry } from './sim-layer-kv.js';
import { thinkEntry } from './think.js';
import { duoAttentionEntry } from './duo-attention.js';
import { kvzipEntry } from './kvzip.js';
import { kvzapEntry } from './kvzap.js';
import { fastKVzipEntry } from './fast-kvzip.js';
import { restoreKVEntry } from './restore-kv.js';
import { finchEntry } from './finch.js';
import { kvComposeEntry } from './kv-compose.js';
import { camWrapper } from './cam.js';
import { lukvWrapper } from './lukv.js';
import type { Press } from './press.js';
import { PressRegistry } from './registry.js';

export { AdaKVPress } from './adakv.js';
export { BlockPress } from './block.js';
export { ChunkPress } from './chunk.js';
export { ComposedPress } from './composed.js';
export { CriticalAdaKVPress, CriticalKVPress, type CriticalOptions } from './critical.js';
export { CompressionRatioDecodingPress, DecodingPress, PrefillDecodingPress, type DecodingOptions } from './decoding.js';
export { ExpectedAttentionPress, type EaPositions, type EaPrecision, type ExpectedAttentionOptions } from './expected-attention.js';
export { ExpectedAttentionStatsPress } from './expected-attention-stats.js';
export { KeyDiffPress } from './keydiff.js';
export { KeyRerotationPress } from './key-rerotation.js';
export { KnormPress } from './knorm.js';
export { LagKVPress, type LagKVOptions } from './lagkv.js';
export { ObservedAttentionPress } from './observed-attention.js';
export { PerLayerCompressionPress } from './per-layer.js';
export { PyramidKVPress, type PyramidKVOptions } from './pyramidkv.js';
export { QFilterPress } from './qfilter.js';
export { RandomPress, type RandomOptions } from './random.js';
export { SnapKVPress, type SnapKVOptions } from './snapkv.js';
export { StreamingLLMPress, type StreamingLLMOptions } from './streaming-llm.js';
export { TOVAPress } from './tova.js';
export { CapPress } from './cap.js';
export { ChunkKVPress } from './chunkkv.js';
export { DMSPress } from './dms.js';
export { MergingPress } from './merging.js';
export { CompactorPress } from './compactor.js';
export { CURPress } from './cur.js';
export { LeverageScorePress, gaussianSketch, type Sketch } from './leverage-score.js';
export { NonCausalAttnPress } from './non-causal-attn.js';
export { SimLayerKVPress } from './sim-layer-kv.js';
export { ThinKPress } from './think.js';
export { DuoAttentionPress, calibrateDuoPatterns, readDuoPatterns, writeDuoPatterns, type DuoPatterns } from './duo-attention.js';
export { KVzipPress, lowestOut, type KVzipOptions } from './kvzip.js';
export { kvzipScores, repeatChunks, REPEAT_PROMPT, REPEAT_PART_PROMPT, type KVzipScoreOptions, type RepeatChunk } from './kvzip-scores.js';
export { KVzapPress } from './kvzap.js';
export { RestoreKVPress, readRestoreAssets, type RestoreAssets } from './restore-kv.js';
export { FastKVzipPress, gateLoss, gateScores, readGates, trainGates, writeGates, type Gates, type GateLayer, type GateTrainOptions } from './fast-kvzip.js';
export { collectSurrogateData, predictSurrogate, readSurrogate, surrogateLoss, trainSurrogate, writeSurrogate, type KVzipSurrogate, type SurrogateData, type TrainOptions } from './kvzip-surrogate.js';
export { FinchPress } from './finch.js';
export { KVComposePress } from './kv-compose.js';
export { CAMPress } from './cam.js';
export { LUKVPress, calibrateLukvBudgets, readLukvBudgets, writeLukvBudgets, type LukvBudgets } from './lukv.js';
export { defineOptions, resolveOptions, type OptionsOf, type OptionSpecs } from './options.js';
export { ScorerPress, topK } from './scorer.js';
export { PressError, checkRatio, phaseOf, type KeepIndices, type Press, type PressPhase, type ScoreObserver } from './press.js';
export { PressRegistry, closeMatches, type OptionSpec, type OptionValues, type PressEntry, type WrapperEntry } from './registry.js';
export { readQueryStats, writeQueryStats, kvHeadFilters, type LayerQueryStats, type QueryStats } from './stats-format.js';

/** Every registered press, by its snake_case name (`kvpress presses` lists them). */
export const presses = new PressRegistry().register(
  ...eaEntries, ...baselineEntries, nonCausalAttnEntry, leverageScoreEntry, compactorEntry, curEntry, capEntry, simLayerKVEntry,
  thinkEntry, duoAttentionEntry,
)
  .register(kvzipEntry, kvzapEntry, fastKVzipEntry, restoreKVEntry)
  .register(finchEntry, kvComposeEntry)
  .registerWrapper(chunkKVWrapper, dmsWrapper, mergingWrapper)
  .registerWrapper(camWrapper, lukvWrapper);

/**
 * A press by registry name: `createPress('expected_attention', 0.5, { epsilon: 0.01 })`. Options
 * are camelCase, typed or as strings; mistakes throw a one-line PressError.
 */
export function createPress(name: string, compressionRatio = 0, options: Record<string, unknown> = {}): Press {
  return presses.create(name, compressionRatio, options);
}

export interface PrefillOptions {
  /** The press that compresses the cache layer by layer during the pass (none: plain prefill). */
  press?: Press | null;
  /** A cache to fill; a fresh one by default. */
  cache?: KVCache;
  /** Logits to compute: of the last token (default), of every token, or none (backbone only). */
  logits?: 'last' | 'all' | 'none';
}

/**
 * The `with`-free way to compress a prompt: runs `tokens` (BOS included by the caller) through the
 * model with the press active and returns the compressed cache and the logits. The press is
 * checked against the model first (a one-line PressError if it cannot run on it) and its decoding
 * state, if any, reset. Equivalent to `model.forward(tokens, cache, { press, logits })`.
 * The 'last' logits are a view the model reuses on its next forward pass.
 *
 *   const press = createPress('expected_attention', 0.5);
 *   const { cache, logits } = prefill(model, tokens, { press });
 */
export function prefill(model: Model, tokens: readonly number[], opts: PrefillOptions = {}): { cache: KVCache; logits: Float32Array } {
  const press = opts.press ?? null;
  press?.validate?.(model);
  press?.reset?.();
  const cache = opts.cache ?? model.newCache();
  const logits = model.forward(tokens, cache, { press, logits: opts.logits ?? 'last' });
  return { cache, logits };
}
