// Test-only (scripts/check-avx512-emulated.sh): the native GEMM on the shapes that cut the
// AVX-512 tile (8×32) and the K blocks every way — m over all residues mod 8, n around
// multiples of 32 and 64 (the thread split), k odd and across block boundaries — checked
// element by element against a float64 product, and the same bits on 1 and 2 threads.
// f32: error ≤ (k+2)·2⁻²⁴·Σ|x·w|. bf16 from 4 rows on (the GEMM; fewer go through gemv_bf16
// with f32 inputs): the input rounded to bf16 as the kernels do, products then exact, so the
// same accumulation bound holds (a wrong pairing of bf16 halves breaks it).
// Run from the package root whose build/Release holds the addon under test.
import { createBackend } from './dist/src/backend/index.js';
import { bf16Bits, toBf16 } from './dist/src/backend/js/kernels.js';

const b = createBackend({ prefer: 'native' });
let seed = 12345;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
const widen = (h) => new Float32Array(new Uint32Array([h << 16]).buffer)[0];
const M = [1, 3, 4, 5, 7, 8, 9, 15, 17, 65];
const N = [1, 31, 32, 33, 64, 65, 172, 257];
const K = [1, 2, 3, 17, 255, 256, 257, 385, 577, 1100];
let checked = 0, failed = 0;

function check(kind, m, n, k) {
  const x = Float32Array.from({ length: m * k }, rand), bias = Float32Array.from({ length: n }, rand);
  const wf = Float32Array.from({ length: n * k }, rand), wh = toBf16(wf);
  const xs = kind === 'f32' || m < 4 ? x : x.map((v) => widen(bf16Bits(new Uint32Array(new Float32Array([v]).buffer)[0])));
  const ws = kind === 'f32' ? wf : Float32Array.from(wh, widen);
  for (const bb of [null, bias]) {
    const outs = [];
    for (const threads of [1, 2]) {
      b.setThreads(threads);
      const got = new Float32Array(m * n).fill(NaN);
      if (kind === 'f32') b.matmul(got, x, wf, m, n, k, bb);
      else b.matmulBf16(got, x, wh, m, n, k, bb);
      outs.push(got);
    }
    if (!outs[0].every((v, i) => Object.is(v, outs[1][i]))) {
      console.log(`${kind} ${m}×${n}×${k} bias=${!!bb}: bits depend on the thread count`);
      failed++;
    }
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = bb ? bb[j] : 0, a = Math.abs(s);
        for (let p = 0; p < k; p++) {
          const t = xs[i * k + p] * ws[j * k + p];
          s += t;
          a += Math.abs(t);
        }
        const err = Math.abs(outs[0][i * n + j] - s), bound = (k + 2) * 2 ** -24 * a + 1e-30;
        if (!(err <= bound)) {
          console.log(`${kind} ${m}×${n}×${k} bias=${!!bb}: out[${i}][${j}] = ${outs[0][i * n + j]}, exact ${s}, error ${err} > ${bound}`);
          failed++;
          return;
        }
      }
    }
    checked++;
  }
}

for (const kind of ['f32', 'bf16'])
  for (const m of M) for (const n of N) for (const k of K) if (m * n * k <= 1e6) check(kind, m, n, k);
// Large enough that the work is split over 2 threads, by weight rows and by input rows.
for (const kind of ['f32', 'bf16']) for (const [m, n, k] of [[40, 300, 577], [300, 20, 1100], [130, 172, 385]]) check(kind, m, n, k);
console.log(`gemm stress (${b.name}, isa ${process.env.KVPRESS_EMU_ISA}): ${checked} products checked, ${failed} failures`);
process.exit(failed ? 1 : 0);
