/**
 * The native decode kernel for the 32-value formats sums four weight rows a pass and the rows
 * left over one at a time. A row's result must not depend on which of the two it fell in (thread
 * splits and matrix sizes move rows between them), so the same rows are multiplied in windows
 * that shift them through every position of a pass and the bits compared; and the sums are
 * checked against a float64 reference computed here from the block layouts (ggml's
 * ggml-common.h), with the bound of the activations' 8-bit rounding.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { backendInfo, createBackend } from '../src/backend/index.js';
import { f16Table, GGML_TYPE, ggmlTypeName } from '../src/model/quant/formats.js';
import { f16Bits } from '../src/model/quant/quantize.js';
import { mulberry32 } from './fixtures/tiny-models.js';

/** Bytes of a block of 32 and the byte offsets of its f16 scale and (Q4_1/Q5_1) min. */
const LAYOUT: Record<number, { bytes: number; halves: number[] }> = {
  [GGML_TYPE.Q8_0]: { bytes: 34, halves: [0] },
  [GGML_TYPE.Q4_0]: { bytes: 18, halves: [0] },
  [GGML_TYPE.Q4_1]: { bytes: 20, halves: [0, 2] },
  [GGML_TYPE.Q5_0]: { bytes: 22, halves: [0] },
  [GGML_TYPE.Q5_1]: { bytes: 24, halves: [0, 2] },
};

/** Value j of the block at w[o …): ggml's layouts written out independently of formats.ts. */
function value(type: number, w: Uint8Array, o: number, j: number): number {
  const d = F16[w[o] | (w[o + 1] << 8)];
  const nib = (qs: number) => (j < 16 ? w[qs + j] & 15 : w[qs + j - 16] >> 4);
  const bit5 = (qh: number) => (((w[qh] | (w[qh + 1] << 8) | (w[qh + 2] << 16) | (w[qh + 3] << 24)) >>> j) & 1) << 4;
  switch (type) {
    case GGML_TYPE.Q8_0: return d * ((w[o + 2 + j] << 24) >> 24);
    case GGML_TYPE.Q4_0: return d * (nib(o + 2) - 8);
    case GGML_TYPE.Q5_0: return d * ((nib(o + 6) | bit5(o + 2)) - 16);
    case GGML_TYPE.Q4_1: return d * nib(o + 4) + F16[w[o + 2] | (w[o + 3] << 8)];
    default: return d * (nib(o + 8) | bit5(o + 4)) + F16[w[o + 2] | (w[o + 3] << 8)];
  }
}

/** rows × k values of `type`: random bytes, scales and mins in [0.002, 0.02). */
function randomRows(type: number, rows: number, k: number, rand: () => number): Uint8Array {
  const { bytes, halves } = LAYOUT[type], out = new Uint8Array((rows * k / 32) * bytes);
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(rand() * 256);
  for (let o = 0; o < out.length; o += bytes) {
    for (const h of halves) {
      const bits = f16Bits(0.002 + rand() * 0.018);
      out[o + h] = bits & 255;
      out[o + h + 1] = bits >> 8;
    }
  }
  return out;
}

const F16 = f16Table();
const nativeOk = backendInfo().backends.native.available;
const TYPES = [GGML_TYPE.Q8_0, GGML_TYPE.Q4_0, GGML_TYPE.Q5_0, GGML_TYPE.Q4_1, GGML_TYPE.Q5_1];

describe('native decode on the 32-value formats: rows summed four a pass or alone', () => {
  for (const type of TYPES) {
    test(`${ggmlTypeName(type)}: the same bits in every position of a pass, within the rounding bound of float64`, { skip: !nativeOk && 'native backend unavailable' }, () => {
      const be = createBackend({ prefer: 'native', threads: 1 });
      const rand = mulberry32(1000 + type);
      const n = 23, k = 320, rb = (k / 32) * LAYOUT[type].bytes, w = randomRows(type, n, k, rand);
      for (const m of [1, 3]) {
        const x = Float32Array.from({ length: m * k }, () => (rand() * 2 - 1) * (rand() < 0.05 ? 8 : 1));
        const full = new Float32Array(m * n);
        be.matmulQuant!(full, x, w, type, m, n, k);
        // Windows starting at rows 1, 2, 3 and of every length down to one row: each row takes
        // each position 0 … 3 of a four-row pass and the one-row path of the leftovers.
        for (let s = 0; s < n; s++) {
          for (const len of new Set([n - s, Math.min(n - s, 5), 1])) {
            const out = new Float32Array(m * len);
            be.matmulQuant!(out, x, w.subarray(s * rb, (s + len) * rb), type, m, len, k);
            for (let i = 0; i < m; i++)
              for (let j = 0; j < len; j++)
                assert.equal(out[i * len + j], full[i * n + s + j], `row ${s + j} of input ${i} in a window of ${len} rows from ${s}`);
          }
        }
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let ref = 0, mag = 0, bound = 0;
            for (let b = 0; b < k; b += 32) {
              let amax = 0, wabs = 0;
              for (let p = 0; p < 32; p++) {
                const xv = x[i * k + b + p], wv = value(type, w, j * rb + (b / 32) * LAYOUT[type].bytes, p);
                ref += xv * wv;
                mag += Math.abs(xv * wv);
                amax = Math.max(amax, Math.abs(xv));
                wabs += Math.abs(wv);
              }
              // x is rounded to amax/127 steps: at most half a step per value.
              bound += (wabs * amax) / 127 / 2;
            }
            const err = Math.abs(full[i * n + j] - ref);
            assert.ok(err <= bound + 2e-6 * mag, `row ${j} of input ${i}: ${full[i * n + j]} vs ${ref} (bound ${bound})`);
          }
        }
      }
    });
  }

  test('Q8_0 weight bytes of −128 against activations of both signs at full scale', { skip: !nativeOk && 'native backend unavailable' }, () => {
    // |w| = 128 and |y| = 127 is the largest pair the 16-bit step of the integer product sees
    // (2·128·127 = 32512 < 2^15); and −128 is the one byte whose sign cannot be flipped in 8 bits.
    const be = createBackend({ prefer: 'native', threads: 1 });
    const n = 6, k = 64, rb = 68, w = new Uint8Array(n * rb).fill(0x80);
    const d = 0.01, bits = f16Bits(d), dq = F16[bits];
    for (let o = 0; o < w.length; o += 34) [w[o], w[o + 1]] = [bits & 255, bits >> 8];
    for (const sign of [1, -1]) {
      // x = ±1 quantizes exactly (q = ±127, scale 1/127), so the sum is exact up to float rounding.
      const x = new Float32Array(k).fill(sign), out = new Float32Array(n);
      be.matmulQuant!(out, x, w, GGML_TYPE.Q8_0, 1, n, k);
      for (let j = 0; j < n; j++) assert.ok(Math.abs(out[j] - -128 * dq * k * sign) <= 1e-5 * 128 * dq * k, `row ${j}, x = ${sign}: ${out[j]}`);
    }
  });
});
