import type { Compressor, LayerContext } from '../model/layer-context.js';

/** Per-KV-head indices of the entries to keep, ascending. */
export type KeepIndices = Int32Array[];

/** Receives each layer's scores as a press computes them (the `kvpress scores` command). */
export interface ScoreObserver {
  /** scores[g][t]: score of entry t of KV head g (log-scores when `log`); higher = keep. */
  onScores(layer: number, scores: readonly Float64Array[], log: boolean): void;
}

/**
 * A press decides, per layer and KV head, which cached entries survive. It is a Compressor the
 * forward pass calls after each layer's attention (see model/layer-context.ts).
 */
export interface Press extends Compressor {
  /** Registry name or class-like label, for reports. */
  readonly name: string;
  /** Fraction of entries to remove, in [0, 1). Derived for some wrappers. */
  compressionRatio: number;
  /** Optional observer of the scores (scorer presses and wrappers forward it). */
  observer?: ScoreObserver | null;
  compress(ctx: LayerContext): KeepIndices | null;
}

/** Throws a one-line error unless 0 ≤ ratio < 1. */
export function checkRatio(ratio: number, what = 'compressionRatio'): number {
  if (typeof ratio !== 'number' || !(ratio >= 0 && ratio < 1)) throw new RangeError(`${what} must be in [0, 1), got ${ratio}`);
  return ratio;
}
