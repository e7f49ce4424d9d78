/**
 * The native decode product on legacy formats runs weight rows four a pass with the rows left
 * over one at a time, and quantizes activations 8 lanes at a time: row counts that are not
 * multiples of four are checked against a float64 reference over the dequantized blocks (bound:
 * the activation rounding, half a step of max|x|/127 per block, times Σ|w|), and a row must give
 * the same bits in every position of a pass and alone. Also: the GGUF SentencePiece tokenizer's packed
 * piece bytes decode to the pieces' own UTF-8.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { backendInfo, createBackend } from '../src/backend/index.js';
import { blockFormat, dequantize, GGML_TYPE, ggmlTypeName } from '../src/model/quant/formats.js';
import { f16Bits } from '../src/model/quant/quantize.js';
import { SpmTokenizer } from '../src/tokenizer/gguf.js';
import { mulberry32 } from './fixtures/tiny-models.js';

const nativeOk = backendInfo().backends.native.available;
const LEGACY = [GGML_TYPE.Q8_0, GGML_TYPE.Q4_0, GGML_TYPE.Q5_0, GGML_TYPE.Q4_1, GGML_TYPE.Q5_1];
/** Offsets of the f16 scale (and min) in each legacy block. */
const SCALES: Record<number, number[]> = { [GGML_TYPE.Q8_0]: [0], [GGML_TYPE.Q4_0]: [0], [GGML_TYPE.Q5_0]: [0], [GGML_TYPE.Q4_1]: [0, 2], [GGML_TYPE.Q5_1]: [0, 2] };

/** Random blocks (every byte value, −128 among Q8_0's weights) with scales in [0.002, 0.02). */
function blocks(type: number, rows: number, cols: number, rand: () => number): Uint8Array {
  const f = blockFormat(type)!, nb = (rows * cols) / 32, out = new Uint8Array(nb * f.blockBytes);
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(rand() * 256);
  for (let b = 0; b < nb; b++) {
    for (const o of SCALES[type]) {
      const h = f16Bits(0.002 + rand() * 0.018);
      out[b * f.blockBytes + o] = h & 255;
      out[b * f.blockBytes + o + 1] = h >> 8;
    }
  }
  return out;
}

describe('native decode product on legacy blocks: four-row passes and the rows left over', () => {
  for (const type of LEGACY) {
    test(ggmlTypeName(type), { skip: !nativeOk && 'native backend unavailable' }, () => {
      const rand = mulberry32(7 + type);
      const n = 131, k = 288, w = blocks(type, n, k, rand), wf = new Float32Array(n * k);
      dequantize(type, w, wf);
      for (const m of [1, 3]) {
        const x = Float32Array.from({ length: m * k }, () => (rand() * 2 - 1) * (rand() < 0.05 ? 6 : 1));
        const out = new Float32Array(m * n);
        createBackend({ prefer: 'native', threads: 1 }).matmulQuant!(out, x, w, type, m, n, k);
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let ref = 0, bound = 0, mag = 0;
            for (let b = 0; b < k; b += 32) {
              let amax = 0, wabs = 0;
              for (let p = b; p < b + 32; p++) {
                ref += x[i * k + p] * wf[j * k + p];
                mag += Math.abs(x[i * k + p] * wf[j * k + p]);
                amax = Math.max(amax, Math.abs(x[i * k + p]));
                wabs += Math.abs(wf[j * k + p]);
              }
              bound += (wabs * amax) / 127 / 2;
            }
            bound += 2e-6 * mag;
            assert.ok(Math.abs(out[i * n + j] - ref) <= bound, `${ggmlTypeName(type)} m=${m} row ${j}: ${out[i * n + j]} vs ${ref} (bound ${bound})`);
          }
        }
        // Rows [s, s + len) alone: windows from rows 65, 66 and 67 to the end, and of 1 to 5 rows
        // from rows 0 … 7, put each row in every position of a four-row pass and among the rows
        // left over; the passes shift, each row's bits must not.
        const rb = w.length / n;
        const windows = [[65, n - 65], [66, n - 66], [67, n - 67]];
        for (let s0 = 0; s0 < 8; s0++) for (let len = 1; len <= 5; len++) windows.push([s0, len]);
        for (const [s0, len] of windows) {
          const part = new Float32Array(m * len);
          createBackend({ prefer: 'native', threads: 1 }).matmulQuant!(part, x, w.subarray(s0 * rb, (s0 + len) * rb), type, m, len, k);
          for (let i = 0; i < m; i++) {
            for (let j = 0; j < len; j++) assert.equal(part[i * len + j], out[i * n + s0 + j], `${ggmlTypeName(type)} m=${m} row ${s0 + j} in rows [${s0}, ${s0 + len})`);
          }
        }
      }
    });
  }

  test('Q8_0 weight bytes of −128 against activations of both signs at full scale', { skip: !nativeOk && 'native backend unavailable' }, () => {
    // |w| = 128 with |y| = 127 is the largest pair the 16-bit step of the integer product sees
    // (2·128·127 = 32512 < 2^15), and −128 is the one byte whose sign cannot be flipped in 8 bits.
    const n = 6, k = 64, w = new Uint8Array(n * 68).fill(0x80), h = f16Bits(0.01);
    for (let o = 0; o < w.length; o += 34) [w[o], w[o + 1]] = [h & 255, h >> 8];
    const wf = new Float32Array(n * k);
    dequantize(GGML_TYPE.Q8_0, w, wf);
    for (const sign of [1, -1]) {
      // x = ±1 quantizes exactly (q = ±127, scale 1/127): the sum is exact but for float rounding.
      const x = new Float32Array(k).fill(sign), out = new Float32Array(n);
      createBackend({ prefer: 'native', threads: 1 }).matmulQuant!(out, x, w, GGML_TYPE.Q8_0, 1, n, k);
      const ref = wf[0] * k * sign;
      for (let j = 0; j < n; j++) assert.ok(Math.abs(out[j] - ref) <= 1e-5 * Math.abs(ref), `row ${j}, x = ${sign}: ${out[j]} vs ${ref}`);
    }
  });
});

describe('GGUF SentencePiece tokenizer: packed piece bytes', () => {
  test('decode gives each piece its own UTF-8, byte pieces their byte, control pieces nothing', () => {
    // unk, bos, eos (control), the 256 byte pieces, then multi-byte and plain pieces.
    const pieces = ['<unk>', '<s>', '</s>'], types = [2, 3, 3];
    for (let b = 0; b < 256; b++) {
      pieces.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
      types.push(6);
    }
    const words = ['▁héllo', '▁世界', '😀', '▁a▁b', 'z'];
    for (const p of words) {
      pieces.push(p);
      types.push(1);
    }
    const tok = new SpmTokenizer(pieces, new Float32Array(pieces.length), Uint8Array.from(types), {
      bosId: 1, unkId: 0, addBos: true, addSpacePrefix: false, stopIds: [2], chatTemplate: null,
    });
    const base = 259;
    assert.equal(tok.decode(words.map((_, i) => base + i)), ' héllo 世界😀 a bz');
    assert.equal(tok.decode([base + 4, 2, 0xe4 + 3, 0xb8 + 3, 0x96 + 3]), 'z世');
    assert.equal(tok.decodePiece(base + 3, base + 2), '😀');
    assert.equal(tok.decode([1, 3 + 0x41]), 'A');
  });
});
