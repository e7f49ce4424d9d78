import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend, PressAttentionArgs } from '../src/backend/backend.js';
import { createBackend } from '../src/backend/index.js';
import { pressAttention } from '../src/presses/attention-columns.js';
import { fastBackends } from './helpers/backends.js';

// The presses' attention statistics (attention-columns.ts, native/press_attn.c) against a direct
// float64 softmax written here: every row's logits, its max, its sum, its probabilities.

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
}

interface Case {
  n: number; rows: number; d: number; heads: number[]; qStride: number; lo: Int32Array; hi: Int32Array;
  pad: Int32Array | null; padLogit: number; scale: number; rowWeight: Float32Array | null; mode: 'sum' | 'max'; amp: number;
}

function reference(c: Case, q: Float32Array, keys: Float32Array): Float64Array {
  const out = new Float64Array(c.heads.length * c.n);
  c.heads.forEach((off, i) => {
    for (let r = 0; r < c.rows; r++) {
      const z: number[] = [];
      for (let t = c.lo[r]; t < c.hi[r]; t++) {
        let s = 0;
        for (let j = 0; j < c.d; j++) s += q[r * c.qStride + off + j] * keys[t * c.d + j];
        z.push(c.scale * s);
      }
      const pad = c.pad ? c.pad[r] : 0;
      const m = Math.max(...z, pad > 0 ? c.padLogit : -Infinity);
      const sum = z.reduce((a, x) => a + Math.exp(x - m), 0) + pad * Math.exp(c.padLogit - m);
      z.forEach((x, k) => {
        const p = (Math.exp(x - m) / sum) * (c.rowWeight ? c.rowWeight[r] : 1), o = i * c.n + c.lo[r] + k;
        out[o] = c.mode === 'sum' ? out[o] + p : Math.max(out[o], p);
      });
    }
  });
  return out;
}

function run(backend: Backend, c: Case, q: Float32Array, keys: Float32Array): Float64Array {
  const out = new Float64Array(c.heads.length * c.n);
  const a: PressAttentionArgs = { out, q, qStride: c.qStride, heads: Int32Array.from(c.heads), keys, n: c.n, headDim: c.d, rows: c.rows, lo: c.lo, hi: c.hi, pad: c.pad, padLogit: c.padLogit, scale: c.scale, rowWeight: c.rowWeight, mode: c.mode };
  pressAttention(backend, a);
  return out;
}

function cases(): Case[] {
  const r = lcg(5);
  const causal = (n: number): Case => ({
    n, rows: n, d: 64, heads: [0, 64, 128], qStride: 9 * 64, lo: new Int32Array(n), hi: Int32Array.from({ length: n }, (_, i) => i + 1),
    pad: null, padLogit: 0, scale: 1 / 8, rowWeight: null, mode: 'sum', amp: 2,
  });
  // NonCausalAttn's chunks of 40 (the last one short and padded), no 1/√d, head dim not a multiple of 8.
  const chunked = (n: number, chunk: number): Case => {
    const lo = new Int32Array(n), hi = new Int32Array(n), pad = new Int32Array(n);
    for (let a = 0; a < n; a += chunk) {
      const b = Math.min(a + chunk, n);
      lo.fill(a, a, b); hi.fill(b, a, b); pad.fill(chunk - (b - a), a, b);
    }
    return { n, rows: n, d: 20, heads: [0, 20], qStride: 40, lo, hi, pad, padLogit: -1e-9, scale: 1, rowWeight: null, mode: 'sum', amp: 0.7 };
  };
  // KVzip's repeat rows: each sees a prefix that starts past the context, weighted rows, maxima.
  const repeat = (n: number, rows: number): Case => ({
    n, rows, d: 64, heads: [64], qStride: 128, lo: new Int32Array(rows), hi: Int32Array.from({ length: rows }, (_, i) => n - rows + i + 1),
    pad: null, padLogit: 0, scale: 1 / 8, rowWeight: Float32Array.from({ length: rows }, () => 0.5 + Math.abs(r())), mode: 'max', amp: 3,
  });
  return [causal(1), causal(7), causal(300), chunked(97, 40), repeat(150, 37)];
}

const all = [createBackend({ prefer: 'js' }), ...fastBackends];

for (const backend of all) {
  test(`pressAttention on ${backend.name}: column sums and maxima of row softmaxes equal a float64 reference`, () => {
    for (const c of cases()) {
      const r = lcg(c.n * 31 + c.rows);
      const q = Float32Array.from({ length: c.rows * c.qStride }, () => c.amp * r());
      const keys = Float32Array.from({ length: c.n * c.d }, () => c.amp * r());
      const want = reference(c, q, keys), got = run(backend, c, q, keys);
      // float32 logits (relative 1e-7 of |q||k| ≤ 64·amp²) move each probability by about that
      // much; the kernels' e^x and sums add a few 1e-7 more.
      const tol = 64 * c.amp * c.amp * c.scale * 4e-7 + 2e-6;
      for (let i = 0; i < want.length; i++) {
        assert.ok(Math.abs(got[i] - want[i]) <= tol * Math.max(1, want[i]), `${c.mode} n=${c.n} rows=${c.rows} [${i}]: ${got[i]} vs ${want[i]}`);
      }
      if (c.mode === 'sum') {
        // Each row's probabilities sum to 1 less its padding keys' share: the total is bounded by rows.
        const total = got.reduce((a, x) => a + x, 0);
        assert.ok(total <= c.heads.length * c.rows * (1 + 1e-5), `total ${total}`);
      }
    }
  });
}

test('pressAttention: the same bits on 1 and 2 threads, on top of what out holds', () => {
  for (const backend of fastBackends) {
    const c = cases()[2], r = lcg(9);
    const q = Float32Array.from({ length: c.rows * c.qStride }, () => 2 * r()), keys = Float32Array.from({ length: c.n * c.d }, () => 2 * r());
    const bits = (threads: number) => {
      backend.setThreads(threads);
      const out = new Float64Array(c.heads.length * c.n).fill(0.25);
      pressAttention(backend, { out, q, qStride: c.qStride, heads: Int32Array.from(c.heads), keys, n: c.n, headDim: c.d, rows: c.rows, lo: c.lo, hi: c.hi, pad: null, padLogit: 0, scale: c.scale, rowWeight: null, mode: 'sum' });
      return out;
    };
    const one = bits(1), two = bits(2);
    assert.deepEqual(two, one, backend.name);
    // Added to the 0.25 already there: every column sum of a causal pass is ≥ its own row's share > 0.
    assert.ok(one.every((x) => x > 0.25), backend.name);
  }
});

test('pressAttention: a key range outside the keys is a one-line error', () => {
  const be = createBackend({ prefer: 'js' });
  const a: PressAttentionArgs = { out: new Float64Array(4), q: new Float32Array(8), qStride: 8, heads: Int32Array.from([0]), keys: new Float32Array(32), n: 4, headDim: 8, rows: 1, lo: Int32Array.from([0]), hi: Int32Array.from([5]), pad: null, padLogit: 0, scale: 1, rowWeight: null, mode: 'sum' };
  assert.throws(() => pressAttention(be, a), /pressAttention: row 0 sees keys \[0, 5\) outside \[0, 4\]/);
  assert.throws(() => pressAttention(be, { ...a, hi: Int32Array.from([4]), keys: new Float32Array(31) }), /keys has 31 floats, needs 32/);
});
