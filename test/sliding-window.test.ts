import assert from 'node:assert/strict';
import { test } from 'node:test';
import { JsBackend } from '../src/backend/js/kernels.js';
import { mulberry32 } from '../src/presses/random.js';

test('reference attention with a window: a query at position p sees entries at positions > p − window', () => {
  const r = mulberry32(3);
  const hd = 4, numHeads = 4, numKvHeads = 2, rows = 3, window = 5;
  // Head 0 kept every position 0..9; head 1 lost some to a press (positions with gaps).
  const positions = [Int32Array.from({ length: 10 }, (_, i) => i), Int32Array.of(0, 3, 4, 6, 7, 8, 9)];
  const keys = positions.map((p) => Float32Array.from({ length: p.length * hd }, () => r() - 0.5));
  const values = positions.map((p) => Float32Array.from({ length: p.length * hd }, () => r() - 0.5));
  const q = Float32Array.from({ length: rows * numHeads * hd }, () => r() - 0.5);
  const lengths = Int32Array.from(positions, (p) => p.length);
  const out = new Float32Array(q.length);
  new JsBackend().attention({ out, q, rows, numHeads, numKvHeads, headDim: hd, keys, values, lengths, scale: 0.5, scratch: new Float32Array(10), window, positions });
  for (let h = 0; h < numHeads; h++) {
    const g = h >> 1, P = positions[g];
    for (let i = 0; i < rows; i++) {
      const qPos = 7 + i; // the new rows are positions 7, 8, 9 in both heads
      const visible = [...P.keys()].filter((t) => P[t] <= qPos && P[t] > qPos - window);
      const s = visible.map((t) => 0.5 * [0, 1, 2, 3].reduce((a, d) => a + q[(i * numHeads + h) * hd + d] * keys[g][t * hd + d], 0));
      const mx = Math.max(...s), e = s.map((x) => Math.exp(x - mx)), z = e.reduce((a, b) => a + b, 0);
      for (let d = 0; d < hd; d++) {
        const want = visible.reduce((a, t, k) => a + (e[k] / z) * values[g][t * hd + d], 0);
        assert.ok(Math.abs(out[(i * numHeads + h) * hd + d] - want) < 1e-6, `head ${h} row ${i} dim ${d}`);
      }
    }
  }
});
