import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { GgufFile } from '../src/model/loaders/gguf.js';
import { packageRoot } from '../src/model/load.js';
import { mulberry32 } from '../src/presses/random.js';
import { blockFormat, f16Table, GGML_TYPE } from '../src/model/quant/formats.js';
import { matvecQuantized, quantizeActivations, roundToF16 } from '../src/model/quant/dot.js';

const dir = join(packageRoot(), 'test', 'fixtures', 'gguf');

/** One matrix of every block type among the fixtures. */
const MATRICES: [string, string][] = [
  ['stories260K-q8_0.gguf', 'blk.0.attn_q.weight'],
  ['stories260K-q4_0.gguf', 'blk.0.ffn_gate.weight'],
  ['stories260K-q4_1.gguf', 'blk.1.attn_k.weight'],
  ['stories260K-q5_0.gguf', 'blk.2.ffn_up.weight'],
  ['stories260K-q5_1.gguf', 'blk.3.attn_v.weight'],
  ['mini-llama-q2_k.gguf', 'blk.0.attn_q.weight'],
  ['mini-llama-q3_k_m.gguf', 'blk.1.ffn_gate.weight'],
  ['mini-llama-q4_k_m.gguf', 'blk.0.ffn_up.weight'],
  ['mini-llama-q5_k_m.gguf', 'blk.1.attn_k.weight'],
  ['mini-llama-q6_k.gguf', 'output.weight'],
];

const gaussian = (n: number, seed: number) => {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()));
};

test('roundToF16 rounds to nearest even, saturates to infinity, keeps subnormals', () => {
  assert.equal(roundToF16(1 + 2 ** -11), 1); // halfway between 1 and 1 + 2^-10: even
  assert.equal(roundToF16(1 + 3 * 2 ** -11), 1 + 2 ** -9);
  assert.equal(roundToF16(65520), Infinity);
  assert.equal(roundToF16(2 ** -24), 2 ** -24);
  assert.equal(roundToF16(-0.1), -0.0999755859375);
});

test('activation quantizers: every value within about half a step of its block scale', () => {
  const x = gaussian(512, 5);
  x[7] = -9; // the largest magnitude sets the scale (its sign too, for Q8_K)
  for (const [type, block] of [[GGML_TYPE.Q8_0, 32], [GGML_TYPE.Q4_1, 32], [GGML_TYPE.Q4_K, 256]] as const) {
    const a = quantizeActivations(type, x);
    for (let i = 0; i < x.length; i++) {
      const d = a.d[Math.floor(i / block)];
      // Half a step, plus the f16 rounding of d times |q| ≤ 127 (2^-11 · 127 < 0.07 steps).
      assert.ok(Math.abs(d * a.qs[i] - x[i]) <= Math.abs(d) * 0.57, `type ${type} value ${i}`);
    }
    if (type === GGML_TYPE.Q4_K) {
      assert.equal(a.qs[7], -127); // the largest magnitude maps to −127 whatever its sign (d > 0 here)
      assert.ok(a.d[0] > 0);
      for (let j = 0; j < 32; j++) assert.equal(a.sums[j], a.qs.subarray(16 * j, 16 * j + 16).reduce((s, v) => s + v, 0));
    }
    if (type === GGML_TYPE.Q4_1) assert.equal(a.sums[0], roundToF16(a.d[0] * a.qs.subarray(0, 32).reduce((s, v) => s + v, 0)));
  }
});

for (const [file, name] of MATRICES) {
  test(`integer dot products equal the dequantized product: ${file} ${name}`, () => {
    const f = GgufFile.open(join(dir, file));
    const t = f.info(name), raw = f.readRaw(name), wf = f.readF32(name);
    f.close();
    const [cols, rows] = t.dims, fmt = blockFormat(t.type)!;
    const x = gaussian(cols, 11);
    const out = new Float32Array(rows);
    matvecQuantized(out, t.type, raw, rows, cols, x);
    const a = quantizeActivations(t.type, x), h = f16Table();
    const rowBytes = (cols / fmt.blockElements) * fmt.blockBytes;
    const minFormat = t.type === GGML_TYPE.Q4_1 || t.type === GGML_TYPE.Q5_1;
    for (let r = 0; r < rows; r++) {
      // Float64 over the dequantized weights and activations; Q4_1/Q5_1 take their mins times
      // Q8_1's stored (f16) block sum, as the integer formula does.
      let ref = 0, mag = 0, plain = 0;
      for (let i = 0; i < cols; i++) {
        const b = Math.floor(i / a.blockElements);
        const bo = r * rowBytes + b * fmt.blockBytes;
        const m = minFormat ? h[raw[bo + 2] | (raw[bo + 3] << 8)] : 0;
        ref += (wf[r * cols + i] - m) * a.d[b] * a.qs[i];
        mag += Math.abs(wf[r * cols + i] * a.d[b] * a.qs[i]);
        plain += wf[r * cols + i] * x[i];
      }
      if (minFormat) {
        for (let b = 0; b < cols / 32; b++) ref += h[raw[r * rowBytes + b * fmt.blockBytes + 2] | (raw[r * rowBytes + b * fmt.blockBytes + 3] << 8)] * a.sums[b];
      }
      assert.ok(Math.abs(out[r] - ref) <= 2e-6 * mag + 1e-7, `row ${r}: ${out[r]} vs ${ref}`);
      // And close to the product with unquantized activations (8-bit activation error only).
      assert.ok(Math.abs(out[r] - plain) <= 0.02 * mag + 1e-4, `row ${r}: ${out[r]} vs float ${plain}`);
    }
  });
}
