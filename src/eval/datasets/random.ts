/**
 * A small seeded PRNG for dataset generation. Datasets must be bit-identical across runs,
 * machines and Node versions, so nothing here touches Math.random.
 */

/**
 * 32-bit seed from any mix of strings and numbers (FNV-1a over their text), so that each
 * (seed, task, sample) triple gets its own independent stream.
 *
 * @example
 * const s = seedFrom(42, 'niah_single_1', 3); // same value on every run
 */
export function seedFrom(...parts: readonly (string | number)[]): number {
  let h = 0x811c9dc5;
  const text = parts.join('\u0000');
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * mulberry32: one 32-bit word of state, full period 2³², good enough statistics for picking
 * words and positions (not for cryptography).
 *
 * @example
 * const rng = new SeededRandom(seedFrom(42, 'vt', 0));
 * rng.int(10000, 100000); // a 5-digit number, the same one for this seed every time
 */
export class SeededRandom {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Next unsigned 32-bit integer. */
  nextUint32(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform float in [0, 1). */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [lo, hiExclusive). */
  int(lo: number, hiExclusive: number): number {
    if (!(hiExclusive > lo)) throw new RangeError(`empty integer range [${lo}, ${hiExclusive})`);
    return lo + Math.floor(this.next() * (hiExclusive - lo));
  }

  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('cannot pick from an empty list');
    return items[this.int(0, items.length)]!;
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** Fisher–Yates shuffle in place; returns the same array. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(0, i + 1);
      const tmp = items[i]!;
      items[i] = items[j]!;
      items[j] = tmp;
    }
    return items;
  }

  /** k distinct integers from [0, n), in the order drawn (partial Fisher–Yates). */
  sampleIndices(n: number, k: number): number[] {
    if (k > n) throw new RangeError(`cannot draw ${k} distinct values from ${n}`);
    if (k * 4 < n) {
      // Sparse draw: rejection on a set avoids allocating an n-long array for huge n.
      const seen = new Set<number>();
      const out: number[] = [];
      while (out.length < k) {
        const v = this.int(0, n);
        if (!seen.has(v)) {
          seen.add(v);
          out.push(v);
        }
      }
      return out;
    }
    const pool = Array.from({ length: n }, (_, i) => i);
    for (let i = 0; i < k; i++) {
      const j = this.int(i, n);
      const tmp = pool[i]!;
      pool[i] = pool[j]!;
      pool[j] = tmp;
    }
    return pool.slice(0, k);
  }

  /** k distinct elements of `items`, in the order drawn. */
  sample<T>(items: readonly T[], k: number): T[] {
    return this.sampleIndices(items.length, k).map((i) => items[i]!);
  }
}
