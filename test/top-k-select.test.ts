/** topK's selection of the k-th value (kthSmallest) against a full sort, ties and signed zeros included. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { kthSmallest, topK } from '../src/presses/scorer.js';
import { rng } from './helpers/random.js';

test('kthSmallest returns the value a full ascending sort puts at rank k', () => {
  const r = rng(3);
  for (let it = 0; it < 2000; it++) {
    const n = 1 + Math.floor((r() + 1) * 40), levels = 1 + Math.floor((r() + 1) * 3);
    // Few distinct levels (long runs of ties), signed zeros, infinities.
    const x = Float64Array.from({ length: n }, () => {
      const u = r();
      return u < -0.8 ? -0 : u < -0.6 ? 0 : u > 0.9 ? -Infinity : Math.floor((r() + 1) * levels);
    });
    const k = Math.floor(((r() + 1) / 2) * n);
    const want = Array.from(x).sort((a, b) => a - b)[k];
    assert.ok(Object.is(kthSmallest(x.slice(), k) + 0, want + 0), `n ${n} k ${k} ${Array.from(x)}`);
  }
  // Already sorted and reversed inputs, all equal.
  const up = Float64Array.from({ length: 1000 }, (_, i) => i);
  assert.equal(kthSmallest(up.slice(), 250), 250);
  assert.equal(kthSmallest(up.slice().reverse(), 999), 999);
  assert.equal(kthSmallest(new Float64Array(999).fill(7), 500), 7);
});

test('topK keeps the k largest, ties to the lower position, NaN lowest', () => {
  assert.deepEqual(Array.from(topK([3, 1, 3, NaN, 2, 3], 2)), [0, 2]);
  assert.deepEqual(Array.from(topK([0, -0, 0, -1], 2)), [0, 1]);
  assert.deepEqual(Array.from(topK([NaN, NaN, 1], 2)), [0, 2]);
});
