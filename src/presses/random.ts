import type { LayerContext } from '../model/layer-context.js';
import { ScorerPress } from './scorer.js';

export interface RandomOptions {
  /** PRNG seed; null draws fresh scores on every call. */
  seed?: number | null;
}

/**
 * Random eviction, the floor every press must beat: s ~ U(0, 1) per (KV head, entry). As in
 * kvpress, a seeded press re-seeds on every call, so with a seed each layer draws the same
 * numbers (head by head, entry by entry) and runs are reproducible. The generator is mulberry32,
 * not torch's, so the numbers themselves differ from the Python library's.
 * It reads only how many entries each head holds, no key or value, so its kept set is the same
 * for every cache element type.
 */
export class RandomPress extends ScorerPress {
  readonly name = 'random';
  readonly seed: number | null;

  constructor(compressionRatio = 0, opts: RandomOptions = {}) {
    super(compressionRatio);
    const seed = opts.seed ?? null;
    if (seed !== null && !Number.isSafeInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
    this.seed = seed;
  }

  score(ctx: LayerContext): Float64Array[] {
    const next = this.seed === null ? Math.random : mulberry32(this.seed);
    return Array.from(ctx.cache.lengths, (T) => {
      const s = new Float64Array(T);
      for (let t = 0; t < T; t++) s[t] = next();
      return s;
    });
  }
}

/** mulberry32: a small, fast 32-bit PRNG with good statistical quality; uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
