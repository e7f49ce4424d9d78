/**
 * Products on quantized weights, every backend against a float64 reference: the weights
 * dequantized by formats.ts (itself checked against llama.cpp in gguf.test.ts) and dotted with
 * the activations in float64. Decode products quantize the activations to 8-bit blocks, so they
 * may differ by at most Σ|w|·d/2 per activation block (d = the block's max |x| / 127) plus
 * float rounding; prefill products dequantize exactly and differ by float rounding only.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { backendInfo, createBackend } from '../src/backend/index.js';
import { JsBackend } from '../src/backend/js/kernels.js';
import { blockFormat, dequantize, GGML_TYPE, ggmlTypeName } from '../src/model/quant/formats.js';
import { f16Bits, quantizeMatrix } from '../src/model/quant/quantize.js';
import { linear, QUANT_TYPES, ggmlTypeOf, toWeightType, weightRow, type WeightMatrix } from '../src/model/weights.js';
import { mulberry32 } from './fixtures/tiny-models.js';
import { runCli } from './helpers/cli.js';

/** Byte offsets of each format's f16 scales (set to sane values; the rest of a block is any bytes). */
const SCALES: Record<number, number[]> = {
  [GGML_TYPE.Q4_0]: [0], [GGML_TYPE.Q4_1]: [0, 2], [GGML_TYPE.Q5_0]: [0], [GGML_TYPE.Q5_1]: [0, 2], [GGML_TYPE.Q8_0]: [0],
  [GGML_TYPE.Q2_K]: [80, 82], [GGML_TYPE.Q3_K]: [108], [GGML_TYPE.Q4_K]: [0, 2], [GGML_TYPE.Q5_K]: [0, 2], [GGML_TYPE.Q6_K]: [208],
};

function f16Bytes(x: number): [number, number] {
  const h = f16Bits(x);
  return [h & 255, h >> 8];
}

/** Random blocks of `type` for a [rows][cols] matrix, scales in [0.002, 0.02). */
function randomBlocks(type: number, rows: number, cols: number, rand: () => number): Uint8Array {
  const f = blockFormat(type)!, nb = (rows * cols) / f.blockElements, out = new Uint8Array(nb * f.blockBytes);
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(rand() * 256);
  for (let b = 0; b < nb; b++) {
    const at = type === GGML_TYPE.F16 ? [0] : SCALES[type];
    for (const o of at) {
      const v = type === GGML_TYPE.F16 ? (rand() * 2 - 1) * 0.5 : 0.002 + rand() * 0.018;
      [out[b * f.blockBytes + o], out[b * f.blockBytes + o + 1]] = f16Bytes(v);
    }
  }
  return out;
}

/** max |got − float64 reference| / bound over every output, with the bound of the activation rounding (or 0 for exact activations). */
function worst(type: number, w: Uint8Array, x: Float32Array, got: Float32Array, m: number, n: number, k: number, quantizedActs: boolean): number {
  const wf = new Float32Array(n * k);
  dequantize(type, w, wf);
  const blk = type >= GGML_TYPE.Q2_K ? 256 : 32;
  let ratio = 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let ref = 0, mag = 0, bound = 0;
      for (let b = 0; b < k; b += blk) {
        let amax = 0, wabs = 0;
        for (let p = b; p < Math.min(k, b + blk); p++) {
          const xv = x[i * k + p], wv = wf[j * k + p];
          ref += xv * wv;
          mag += Math.abs(xv * wv);
          amax = Math.max(amax, Math.abs(xv));
          wabs += Math.abs(wv);
        }
        if (quantizedActs && type !== GGML_TYPE.F16) bound += (wabs * amax) / 127 / 2;
      }
      bound += 2e-6 * mag + 1e-30;
      ratio = Math.max(ratio, Math.abs(got[i * n + j] - ref) / bound);
    }
  }
  return ratio;
}

const TYPES = QUANT_TYPES.map(ggmlTypeOf);
const nativeOk = backendInfo().backends.native.available;

describe('native quantized products against float64 over the dequantized blocks', () => {
  for (const type of TYPES) {
    test(ggmlTypeName(type), { skip: !nativeOk && 'native backend unavailable' }, () => {
      const be = createBackend({ prefer: 'native', threads: 1 });
      const rand = mulberry32(type + 1);
      const k = type === GGML_TYPE.F16 ? 172 : 512, n = 192;
      const w = randomBlocks(type, n, k, rand);
      for (const m of [1, 3, 9]) {
        const x = Float32Array.from({ length: m * k }, () => (rand() * 2 - 1) * (rand() < 0.05 ? 8 : 1));
        const out = new Float32Array(m * n);
        be.matmulQuant!(out, x, w, type, m, n, k);
        const r = worst(type, w, x, out, m, n, k, m < 4);
        assert.ok(r <= 1, `${ggmlTypeName(type)} m=${m}: error ${r.toFixed(3)}× the bound`);
      }
    });
  }

  test('prefill products whose GEMM K blocks cut the format\'s blocks, and a ragged last panel', { skip: !nativeOk && 'native backend unavailable' }, () => {
    // The GEMM dequantizes straight into its packed panels, a K block at a time: with this
    // machine's L1 blocking, k = 2304 takes two blocks of 1152 (4.5 K-quant blocks each) and
    // k = 1568 two of 784 (24.5 blocks of 32), so blocks are dequantized whole and cut.
    const be = createBackend({ prefer: 'native', threads: 1 });
    const rand = mulberry32(77);
    for (const [type, k] of [[GGML_TYPE.Q8_0, 1568], [GGML_TYPE.Q4_K, 2304], [GGML_TYPE.Q6_K, 2304], [GGML_TYPE.Q5_1, 1568], [GGML_TYPE.F16, 1700]]) {
      const n = 37, m = 9, w = randomBlocks(type, n, k, rand);
      const x = Float32Array.from({ length: m * k }, () => rand() * 2 - 1);
      const out = new Float32Array(m * n);
      be.matmulQuant!(out, x, w, type, m, n, k);
      const r = worst(type, w, x, out, m, n, k, false);
      assert.ok(r <= 1, `${ggmlTypeName(type)} k=${k}: error ${r.toFixed(3)}× the bound`);
    }
  });

  test('bias rows, and any thread count gives the same bits', { skip: !nativeOk && 'native backend unavailable' }, () => {
    const rand = mulberry32(99);
    for (const type of [GGML_TYPE.Q8_0, GGML_TYPE.Q4_K, GGML_TYPE.Q5_0, GGML_TYPE.Q6_K]) {
      const n = 1000, k = 1024, w = randomBlocks(type, n, k, rand), bias = Float32Array.from({ length: n }, () => rand());
      for (const m of [1, 2, 40]) {
        const x = Float32Array.from({ length: m * k }, () => rand() * 2 - 1);
        const outs = [1, 2].map((threads) => {
          const out = new Float32Array(m * n);
          createBackend({ prefer: 'native', threads }).matmulQuant!(out, x, w, type, m, n, k, bias);
          return out;
        });
        assert.deepEqual(outs[1], outs[0], `${ggmlTypeName(type)} m=${m}: 2 threads differ from 1`);
        const plain = new Float32Array(m * n);
        createBackend({ prefer: 'native', threads: 1 }).matmulQuant!(plain, x, w, type, m, n, k);
        // The GEMM starts its sums from the bias, the decode product adds it last.
        for (let i = 0; i < m * n; i++) assert.ok(Math.abs(outs[0][i] - (plain[i] + bias[i % n])) <= 1e-4 * (1 + Math.abs(plain[i])), `bias at ${i}: ${outs[0][i]} vs ${plain[i]} + ${bias[i % n]}`);
      }
    }
  });
});

describe('linear() on quantized weights, every backend', () => {
  const rand = mulberry32(5);
  const n = 70, k = 256;
  const cases = TYPES.map((type) => ({ type, w: randomBlocks(type, n, k, rand) }));
  for (const name of ['js', 'wasm', 'native'] as const) {
    test(name, { skip: !backendInfo().backends[name].available && `${name} backend unavailable` }, () => {
      const be = name === 'js' ? new JsBackend() : createBackend({ prefer: name, threads: 1 });
      for (const { type, w } of cases) {
        const mat = { type: QUANT_TYPES[TYPES.indexOf(type)], rows: n, cols: k, data: w } as WeightMatrix;
        for (const m of [1, 6]) {
          const x = Float32Array.from({ length: m * k }, () => rand() * 2 - 1), out = new Float32Array(m * n);
          linear(be, out, x, mat, m, n, k);
          // Only the native decode quantizes activations; the others dequantize a panel at a time.
          const r = worst(type, w, x, out, m, n, k, name === 'native' && m < 4);
          assert.ok(r <= 1, `${ggmlTypeName(type)} m=${m}: error ${r.toFixed(3)}× the bound`);
        }
      }
    });
  }

  test('weightRow dequantizes one row, any column range', () => {
    for (const { type, w } of cases) {
      const mat = { type: QUANT_TYPES[TYPES.indexOf(type)], rows: n, cols: k, data: w } as WeightMatrix;
      const all = new Float32Array(n * k);
      dequantize(type, w, all);
      const dst = new Float32Array(40);
      weightRow(mat, k, 17, 100, 140, dst);
      assert.deepEqual(dst, all.subarray(17 * k + 100, 17 * k + 140));
    }
  });
});

describe('quantizers', () => {
  test('q8_0, q4_0, q5_0 and q4_k round-trip within half a level of each block', () => {
    const rand = mulberry32(3), rows = 4, cols = 512;
    const x = Float32Array.from({ length: rows * cols }, () => (rand() * 2 - 1) * 0.05);
    // Per block of 32: the step between levels, and how many steps the error may reach (half a
    // step, a whole one at the clamped end of the signed formats, more for q4_k's 6-bit scales).
    const steps = { q8_0: [127, 0.51], q4_0: [8, 1.01], q5_0: [16, 1.01], q4_k: [0, 1.5] } as const;
    for (const t of ['q8_0', 'q4_0', 'q5_0', 'q4_k'] as const) {
      const q = toWeightType(x, t, rows, cols) as WeightMatrix;
      const back = toWeightType(q, 'f32', rows, cols) as Float32Array;
      for (let b = 0; b < x.length; b += 32) {
        let lo = 0, hi = 0, err = 0;
        for (let i = b; i < b + 32; i++) {
          lo = Math.min(lo, x[i]); hi = Math.max(hi, x[i]);
          err = Math.max(err, Math.abs(back[i] - x[i]));
        }
        const [div, k] = steps[t];
        const step = div ? Math.max(hi, -lo) / div : (hi - lo) / 15;
        assert.ok(err <= step * k * 1.002 + 1e-9, `${t} block ${b / 32}: error ${err} vs step ${step}`);
      }
    }
  });

  test('formats it cannot write are a clear error', () => {
    assert.throws(() => quantizeMatrix(GGML_TYPE.Q6_K, new Float32Array(256), 1, 256), /cannot quantize to ggml type Q6_K/);
    assert.throws(() => quantizeMatrix(GGML_TYPE.Q4_K, new Float32Array(64), 1, 64), /not a multiple of its block of 256/);
  });
});

describe('kvpress bench --weights q8_0|q4_k', () => {
  test('quantizes the shape in memory and names the weights and kernels in --json', async () => {
    const f32 = JSON.parse((await runCli(['bench', '--shape', 'stories260K', '--prompt-tokens', '8', '--gen-tokens', '4', '--json'])).stdout) as { weightBytes: number };
    for (const w of ['q8_0', 'q4_k']) {
      const r = await runCli(['bench', '--shape', 'stories260K', '--prompt-tokens', '8', '--gen-tokens', '4', '--weights', w, '--json']);
      assert.equal(r.code, 0, r.stderr);
      const j = JSON.parse(r.stdout) as { weights: string; gemm: string; decodeTokensPerSecond: number; weightBytes: number; backend: string };
      assert.equal(j.weights, w);
      assert.match(j.gemm, j.backend === 'native' ? /int8 block dot \(decode\), .* on dequantized panels \(prefill\)/ : /dequantized 64-row panels/);
      assert.ok(j.decodeTokensPerSecond > 0);
      // stories260K's rows (64 and 172 values) fall back to q5_0 and f16: still well under f32.
      assert.ok(j.weightBytes < 0.6 * f32.weightBytes, `${w}: ${j.weightBytes} vs ${f32.weightBytes}`);
    }
  });
});

test('native matmulQuant rejects bad arguments in one line', { skip: !nativeOk && 'native backend unavailable' }, () => {
  const be = createBackend({ prefer: 'native', threads: 1 }), out = new Float32Array(4), x = new Float32Array(64);
  assert.throws(() => be.matmulQuant!(out, x, new Uint8Array(68), 0, 2, 2, 32), /matmulQuant: no quantized product for ggml type 0/);
  assert.throws(() => be.matmulQuant!(out, x, new Uint8Array(68), GGML_TYPE.Q8_0, 1, 2, 48), /k = 48 is not a multiple of the block of 32/);
  assert.throws(() => be.matmulQuant!(out, x, new Uint8Array(67), GGML_TYPE.Q8_0, 1, 2, 32), /matmulQuant: w has 67 bytes, needs 68/);
  assert.throws(() => be.matmulQuant!(out, x, new Uint8Array(68 * 4), GGML_TYPE.Q8_0, 2, 4, 32), /matmulQuant: out has 4 floats, needs 8/);
});
