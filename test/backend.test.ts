import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AttentionArgs, Backend } from '../src/backend/backend.js';
import { backendInfo, createBackend } from '../src/backend/index.js';
import { JsBackend } from '../src/backend/js/kernels.js';
import { randArray, rng } from './helpers/random.js';

/** max |a − b| relative to max |ref|: the "relative to magnitude" error of a whole output. */
function relErr(got: Float32Array, ref: Float32Array, n = ref.length): number {
  let diff = 0, mag = 0;
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(got[i])) return Infinity;
    diff = Math.max(diff, Math.abs(got[i] - ref[i]));
    mag = Math.max(mag, Math.abs(ref[i]));
  }
  return mag === 0 ? diff : diff / mag;
}

const TOL = 1e-5;
const ref = new JsBackend();

const fast: Backend[] = [];
const info = backendInfo({ prefer: 'auto' });
for (const name of ['native', 'wasm'] as const) {
  if (info.backends[name].available) fast.push(createBackend({ prefer: name }));
}

test('at least the wasm backend is available', () => {
  assert.ok(info.backends.wasm.available, info.backends.wasm.detail);
  // The CI machine installs a compiler: the native build must be there.
  if (process.env.CI) assert.ok(info.backends.native.available, info.backends.native.detail);
  // test/backend-isa.test.ts reruns this file with the native kernels capped to a narrower ISA.
  const isa = process.env.KVPRESS_NATIVE_ISA;
  if (isa && info.backends.native.available) assert.match(info.backends.native.detail, new RegExp(`^${isa} kernels`));
});

const MATMUL_SHAPES: [number, number, number][] = [
  [1, 1, 1], [3, 4, 0], [1, 5, 0], [1, 7, 5], [1, 33, 17], [1, 130, 577], [2, 3, 1], [3, 5, 7], [7, 13, 29], [6, 16, 8],
  [17, 37, 65], [64, 96, 128], [5, 1000, 3], [33, 47, 300], [130, 200, 100], [300, 20, 576],
  // Decode rows from 3 KB (k ≥ 768 f32) go through the 4-row passes, shorter ones one at a time.
  [1, 45, 767], [1, 70, 768], [1, 9, 1100],
];

interface AttnCase { rows: number; numKvHeads: number; group: number; headDim: number; prefix: number[] }

const ATTN_CASES: AttnCase[] = [
  { rows: 1, numKvHeads: 1, group: 1, headDim: 8, prefix: [0] },
  { rows: 1, numKvHeads: 2, group: 2, headDim: 64, prefix: [5, 40] },
  { rows: 1, numKvHeads: 2, group: 7, headDim: 128, prefix: [100, 3] },
  { rows: 3, numKvHeads: 3, group: 1, headDim: 64, prefix: [0, 17, 2] },
  { rows: 5, numKvHeads: 1, group: 7, headDim: 8, prefix: [33] },
  { rows: 9, numKvHeads: 2, group: 2, headDim: 128, prefix: [0, 70] },
  { rows: 37, numKvHeads: 3, group: 3, headDim: 64, prefix: [0, 11, 150] },
  { rows: 64, numKvHeads: 2, group: 7, headDim: 64, prefix: [200, 1] },
  { rows: 13, numKvHeads: 2, group: 1, headDim: 24, prefix: [9, 0] },
  // Enough query rows per KV head for the packed-key path, at head dims with vector tails.
  { rows: 20, numKvHeads: 2, group: 2, headDim: 24, prefix: [3, 40] },
  { rows: 6, numKvHeads: 1, group: 4, headDim: 96, prefix: [17] },
  { rows: 4, numKvHeads: 2, group: 4, headDim: 80, prefix: [5, 9] },
];

function attnArgs(c: AttnCase, seed: number): AttentionArgs {
  const r = rng(seed);
  const numHeads = c.numKvHeads * c.group;
  const lengths = Int32Array.from(c.prefix, (p) => p + c.rows);
  const keys: Float32Array[] = [], values: Float32Array[] = [];
  for (let g = 0; g < c.numKvHeads; g++) {
    // Capacity beyond the length is filled with NaN: reading it would poison the output.
    const cap = (lengths[g] + 3) * c.headDim;
    const k = randArray(r, cap, 2), v = randArray(r, cap);
    k.fill(NaN, lengths[g] * c.headDim);
    v.fill(NaN, lengths[g] * c.headDim);
    keys.push(k);
    values.push(v);
  }
  const qLen = c.rows * numHeads * c.headDim;
  return {
    out: new Float32Array(qLen), q: randArray(r, qLen, 2), rows: c.rows, numHeads, numKvHeads: c.numKvHeads,
    headDim: c.headDim, keys, values, lengths, scale: 1 / Math.sqrt(c.headDim),
    scratch: new Float32Array(Math.max(...lengths)),
  };
}

for (const b of fast) {
  describe(`${b.name} backend against the TypeScript reference`, () => {
    test('matmul, with and without bias, odd shapes and m = 1', () => {
      let seed = 1;
      for (const [m, n, k] of MATMUL_SHAPES) {
        const r = rng(seed++);
        const x = randArray(r, m * k), w = randArray(r, n * k), bias = randArray(r, n);
        for (const bb of [null, bias]) {
          const want = new Float32Array(m * n), got = new Float32Array(m * n).fill(NaN);
          ref.matmul(want, x, w, m, n, k, bb);
          b.matmul(got, x, w, m, n, k, bb);
          const e = relErr(got, want);
          assert.ok(e <= TOL, `matmul ${m}×${n}×${k} bias=${!!bb}: relative error ${e}`);
        }
      }
    });

    test('rmsnorm, including in place', () => {
      let seed = 100;
      for (const [rows, dim] of [[1, 1], [1, 7], [3, 64], [2, 577], [70, 576]]) {
        const r = rng(seed++);
        const x = randArray(r, rows * dim, 3), w = randArray(r, dim);
        const want = new Float32Array(rows * dim), got = new Float32Array(rows * dim);
        ref.rmsnorm(want, x, w, rows, dim, 1e-5);
        b.rmsnorm(got, x, w, rows, dim, 1e-5);
        assert.ok(relErr(got, want) <= TOL, `rmsnorm ${rows}×${dim}: ${relErr(got, want)}`);
        const inPlace = x.slice();
        b.rmsnorm(inPlace, inPlace, w, rows, dim, 1e-5);
        assert.ok(relErr(inPlace, want) <= TOL, `rmsnorm in place ${rows}×${dim}`);
      }
    });

    test('rope on odd head counts and head dims 2..128', () => {
      let seed = 200;
      for (const [rows, heads, hd] of [[1, 1, 2], [1, 3, 8], [5, 2, 64], [4, 7, 128], [3, 3, 6], [300, 9, 64]]) {
        const r = rng(seed++);
        const half = hd / 2;
        const x = randArray(r, rows * heads * hd, 2);
        const ang = Array.from({ length: rows * half }, () => r(Math.PI));
        const cos = Float32Array.from(ang, Math.cos), sin = Float32Array.from(ang, Math.sin);
        const want = x.slice(), got = x.slice();
        ref.rope(want, rows, heads, hd, cos, sin);
        b.rope(got, rows, heads, hd, cos, sin);
        assert.ok(relErr(got, want) <= TOL, `rope ${rows}×${heads}×${hd}: ${relErr(got, want)}`);
      }
    });

    test('siluMul over the whole input range, short and long', () => {
      let seed = 300;
      for (const n of [0, 1, 15, 1000, 70001]) {
        const r = rng(seed++);
        const gate = randArray(r, n, 20), up = randArray(r, n, 2);
        const want = gate.slice(), got = gate.slice();
        ref.siluMul(want, up, n);
        b.siluMul(got, up, n);
        assert.ok(relErr(got, want) <= TOL, `siluMul n=${n}: ${relErr(got, want)}`);
      }
    });

    test('add (where the backend has it) gives the f32 sums exactly, short and long', () => {
      if (!b.add) return;
      let seed = 350;
      for (const n of [0, 1, 15, 1000, 70001]) {
        const r = rng(seed++);
        const x = randArray(r, n + 3, 4), y = randArray(r, n + 3, 4), got = x.slice();
        b.add(got, y, n);
        for (let i = 0; i < n + 3; i++) assert.equal(got[i], i < n ? Math.fround(x[i] + y[i]) : x[i], `add n=${n} [${i}]`);
      }
      assert.throws(() => b.add!(new Float32Array(5), new Float32Array(6), 6), /add: x has 5 floats, needs 6/);
    });

    test('attention: GQA groups 1/2/7, head dims 8..128, per-head lengths, cached prefix', () => {
      let seed = 400;
      for (const c of ATTN_CASES) {
        const a = attnArgs(c, seed++);
        const want = new Float32Array(a.out.length);
        ref.attention({ ...a, out: want });
        b.attention(a);
        const e = relErr(a.out, want);
        assert.ok(e <= TOL, `attention ${JSON.stringify(c)}: relative error ${e}`);
      }
    });

    test('attention: one visible key gives back that value exactly', () => {
      // Hand-computed: the first new row of a head with no prefix sees only its own entry.
      const a = attnArgs({ rows: 2, numKvHeads: 1, group: 1, headDim: 8, prefix: [0] }, 7);
      b.attention(a);
      assert.deepEqual(Array.from(a.out.subarray(0, 8)), Array.from(a.values[0].subarray(0, 8)));
    });

    test('short arrays are a one-line error, not a crash', () => {
      assert.throws(() => b.matmul(new Float32Array(5), new Float32Array(6), new Float32Array(6), 2, 3, 3), /matmul: out has 5 floats, needs 6/);
      const a = attnArgs({ rows: 2, numKvHeads: 1, group: 1, headDim: 8, prefix: [0] }, 8);
      assert.throws(() => b.attention({ ...a, lengths: Int32Array.of(1) }), /attention: KV head 0 has 1 entries/);
      assert.throws(() => b.attention({ ...a, numHeads: 3, numKvHeads: 2 }), /multiple of numKvHeads/);
    });
  });
}

for (const b of fast) {
  describe(`${b.name} backend threads`, () => {
    test('1 and 2 threads give identical bits', () => {
      const r = rng(500);
      const [m, n, k] = [300, 257, 576];
      const x = randArray(r, m * k), w = randArray(r, n * k), bias = randArray(r, n);
      const wide = randArray(r, 1000 * k);
      const big = attnArgs({ rows: 200, numKvHeads: 3, group: 3, headDim: 64, prefix: [50, 0, 500] }, 501);
      const gate = randArray(r, 100_000, 10), up = randArray(r, 100_000);
      const run = (threads: number) => {
        b.setThreads(threads);
        const mm = new Float32Array(m * n), mv = new Float32Array(1000), tall = new Float32Array(m * 20);
        const norm = new Float32Array(m * k), g = gate.slice();
        b.matmul(mm, x, w, m, n, k, bias);
        b.matmul(mv, x, wide, 1, 1000, k, null);
        b.matmul(tall, x, w, m, 20, k, bias);
        b.rmsnorm(norm, x, w, m, k, 1e-6);
        b.siluMul(g, up, g.length);
        const out = new Float32Array(big.out.length);
        b.attention({ ...big, out });
        return [mm, mv, tall, norm, g, out];
      };
      const one = run(1), two = run(2);
      for (let i = 0; i < one.length; i++) assert.deepEqual(two[i], one[i], `output ${i} differs between 1 and 2 threads`);
    });

    test('threads default to the available cores and are clamped to them', async () => {
      const os = await import('node:os');
      assert.equal(createBackend({ prefer: b.name as 'native' | 'wasm' }).threads, os.availableParallelism());
      assert.equal(createBackend({ prefer: b.name as 'native' | 'wasm', threads: 1000 }).threads, os.availableParallelism());
      assert.throws(() => createBackend({ prefer: b.name as 'native' | 'wasm', threads: 0 }), /threads must be a positive integer/);
    });
  });
}
