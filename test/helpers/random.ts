import { mulberry32 } from '../../src/presses/random.js';

/** Deterministic uniform floats in [-scale, scale). */
export function rng(seed: number): (scale?: number) => number {
  const u = mulberry32(seed);
  return (scale = 1) => (u() * 2 - 1) * scale;
}

export function randArray(r: (s?: number) => number, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r(scale);
  return a;
}
