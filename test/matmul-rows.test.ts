import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fastBackends } from './helpers/backends.js';
import { randArray, rng } from './helpers/random.js';

const withRows = fastBackends.filter((b) => b.matmulRows);

test('matmulRows exists on the native backend', { skip: !fastBackends.some((b) => b.name === 'native') }, () => {
  assert.ok(withRows.some((b) => b.name === 'native'));
});

for (const be of withRows) {
  test(`${be.name} matmulRows: every row bit-equal to its own m = 1 matmul (short and long rows, odd counts, bias, 1 and 2 threads)`, () => {
    // k = 64 and 700 take the gemv's one-row-at-a-time path, 768 and 2051 its passes of four
    // rows; n = 4099 leaves rows after the last whole block and pass.
    for (const [m, n, k] of [[2, 512, 64], [5, 173, 700], [8, 4099, 768], [3, 130, 2051]] as const) {
      const r = rng(11 + k + n);
      const x = randArray(r, m * k), w = randArray(r, n * k), bias = randArray(r, n);
      for (const b of [null, bias]) {
        const own = new Float32Array(m * n);
        be.setThreads(1);
        for (let i = 0; i < m; i++) be.matmul(own.subarray(i * n, (i + 1) * n), x.subarray(i * k, (i + 1) * k), w, 1, n, k, b);
        for (const threads of [1, 2]) {
          be.setThreads(threads);
          const out = new Float32Array(m * n).fill(Number.NaN);
          be.matmulRows!(out, x, w, m, n, k, b);
          for (let i = 0; i < m * n; i++) {
            if (!Object.is(out[i], own[i])) assert.fail(`m ${m} n ${n} k ${k} bias ${!!b} threads ${threads}: row ${Math.floor(i / n)} column ${i % n}: ${out[i]} vs ${own[i]}`);
          }
        }
      }
    }
    be.setThreads(1);
  });

  test(`${be.name} matmulRows: arrays too short get a clear error`, () => {
    const x = new Float32Array(2 * 8), w = new Float32Array(4 * 8);
    assert.throws(() => be.matmulRows!(new Float32Array(7), x, w, 2, 4, 8), /out has 7 floats, needs 8/);
    assert.throws(() => be.matmulRows!(new Float32Array(8), x.subarray(0, 15), w, 2, 4, 8), /x has 15 floats, needs 16/);
  });
}
