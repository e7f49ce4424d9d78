import type { Backend, PressAttentionArgs } from '../backend/backend.js';
import { checkPressAttention } from '../backend/native/checks.js';

/**
 * The attention each key receives, for the presses that score entries by it: per query head, the
 * column sums (observed attention, NonCausalAttn) or maxima (KVzip) of a row-softmax over ranges
 * of one KV head's keys (PressAttentionArgs in backend.ts says exactly what). The backend's
 * `pressAttention` kernel (native: one pass over the keys per tile of rows, the row's normaliser
 * exact because the tile's rows are whole in L2) runs where it exists; elsewhere the logits come
 * from `matmul` in blocks of ROWS rows and the softmax runs here in float64. Memory O(ROWS·n),
 * never rows × n.
 */
export function pressAttention(backend: Backend, a: PressAttentionArgs): void {
  checkPressAttention(a);
  if (backend.pressAttention) backend.pressAttention(a);
  else pressAttentionTs(backend, a);
}

/** Query rows per matmul in the fallback. */
const ROWS = 64;

function pressAttentionTs(backend: Backend, a: PressAttentionArgs): void {
  const { n, headDim: d, rows, lo, hi } = a, max = a.mode === 'max';
  const q = new Float32Array(ROWS * d), logits = new Float32Array(ROWS * n), p = new Float64Array(n);
  a.heads.forEach((off, i) => {
    const out = a.out.subarray(i * n, (i + 1) * n);
    for (let r0 = 0; r0 < rows; r0 += ROWS) {
      const m = Math.min(ROWS, rows - r0);
      let from = n, to = 0;
      for (let r = r0; r < r0 + m; r++) {
        from = Math.min(from, lo[r]);
        to = Math.max(to, hi[r]);
      }
      if (to <= from) continue;
      const w = to - from;
      for (let r = 0; r < m; r++) q.set(a.q.subarray((r0 + r) * a.qStride + off, (r0 + r) * a.qStride + off + d), r * d);
      backend.matmul(logits, q, a.keys.subarray(from * d, to * d), m, w, d);
      for (let r = 0; r < m; r++) {
        const row = r0 + r, c0 = lo[row] - from, c1 = hi[row] - from, pad = a.pad ? a.pad[row] : 0;
        let mx = -Infinity;
        for (let t = c0; t < c1; t++) if ((p[t] = logits[r * w + t] * a.scale) > mx) mx = p[t];
        if (pad > 0 && a.padLogit > mx) mx = a.padLogit;
        let sum = pad > 0 ? pad * Math.exp(a.padLogit - mx) : 0;
        for (let t = c0; t < c1; t++) sum += p[t] = Math.exp(p[t] - mx);
        const k = (a.rowWeight ? a.rowWeight[row] : 1) / sum;
        if (max) {
          for (let t = c0; t < c1; t++) if (p[t] * k > out[from + t]) out[from + t] = p[t] * k;
        } else {
          for (let t = c0; t < c1; t++) out[from + t] += p[t] * k;
        }
      }
    }
  });
}
