import type { Compressor, LayerContext, ModelParts } from '../model/layer-context.js';

/** Per-KV-head indices of the entries to keep, ascending. */
export type KeepIndices = Int32Array[];

/** A mistake in a press request (unknown name or option, bad value, unsuitable model): one line, exit code 2. */
export class PressError extends Error {}

/**
 * When a press acts: on the prompt's prefill only (most presses), only while generating (the
 * decoding presses: kvpress does not attach them to the context prefill), or both.
 */
export type PressPhase = 'prefill' | 'decoding' | 'both';

/** A press's phase: its own declaration, 'prefill' when it declares none. */
export function phaseOf(press: Press | null | undefined): PressPhase | null {
  return press ? press.phase ?? 'prefill' : null;
}

/** Receives each layer's scores as a press computes them (the `kvpress scores` command). */
export interface ScoreObserver {
  /** scores[g][t]: score of entry t of KV head g (log-scores when `log`); higher = keep. */
  onScores(layer: number, scores: readonly Float64Array[], log: boolean): void;
}

/**
 * A press decides, per layer and KV head, which cached entries survive. It is a Compressor the
 * forward pass calls after each layer's attention (see model/layer-context.ts).
 *
 * What a press reads: the pass's own activations (LayerContext hidden states and queries, float32)
 * and the cached entries as stored — a prefill's keys and values are appended before the press
 * runs, so they are read back in the cache's element type, decoded one KV head at a time by
 * `headKeys`/`headValues` (a reused per-head buffer, never a float32 copy of the cache). With an
 * f16, bf16, q8_0 or q4_0 cache a press therefore scores the same rounded entries the attention
 * reads; a press that writes entries (setValue, setEntry) has them encoded in that type again.
 */
export interface Press extends Compressor {
  /**
   * Registry name or class-like label, for reports. The registry sets it to the registered name
   * (e.g. "adakv_expected_attention_e2") on the presses it builds.
   */
  name: string;
  /** When it acts (see PressPhase); 'prefill' when absent. */
  readonly phase?: PressPhase;
  /** True when the press must see the whole pass over an unpruned cache (ComposedPress refuses it). */
  readonly needsWholePass?: boolean;
  /** Fraction of entries to remove, in [0, 1). Derived for some wrappers. */
  compressionRatio: number;
  /** Optional observer of the scores (scorer presses and wrappers forward it). */
  observer?: ScoreObserver | null;
  compress(ctx: LayerContext): KeepIndices | null;
  /**
   * Throws a PressError saying what is missing when the press cannot run on `model` (wrong
   * statistics shape, missing weights…). Callers run it once before the first forward pass so
   * that the problem is reported up front rather than from inside a layer.
   */
  validate?(model: ModelParts): void;
  /** Forgets the state kept between forward passes (decoding presses); a no-op for the others. */
  reset?(): void;
  /**
   * Presses that read the question (Finch): the pipeline appends the question's n tokens to the
   * context it prefills and calls this first. Absent on query-agnostic presses.
   */
  setQuestionLength?(n: number): void;
}

/** Throws a one-line error unless 0 ≤ ratio < 1. */
export function checkRatio(ratio: number, what = 'compressionRatio'): number {
  if (typeof ratio !== 'number' || !(ratio >= 0 && ratio < 1)) throw new RangeError(`${what} must be in [0, 1), got ${typeof ratio === 'string' ? `"${ratio}"` : String(ratio)}`);
  return ratio;
}

/** Throws a one-line PressError unless `p` is a press (an object with `compress`); returns it. */
export function requirePress<P extends Press>(p: P | null | undefined, who: string, what = 'press'): P {
  if (typeof p !== 'object' || p === null || typeof (p as Partial<Press>).compress !== 'function') {
    throw new PressError(`${who} wraps a ${what}, got ${describe(p)}`);
  }
  return p;
}

/** Throws unless `p` is a scorer press (an object with `score(ctx)`), as kvpress's wrappers require. */
export function requireScorer<P extends Press & { score: unknown }>(p: P | null | undefined, who: string): P {
  requirePress(p, who, 'scorer press');
  if (typeof (p as { score?: unknown }).score !== 'function') throw new PressError(`${who} wraps a scorer press (one with score(ctx), e.g. SnapKVPress), got ${(p as Press).name ?? describe(p)}`);
  return p as P;
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'an array';
  return typeof x === 'object' ? 'an object that is not one' : `${typeof x} ${String(x)}`.slice(0, 60);
}
