import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createBackend } from '../src/backend/index.js';
import { encodeRow, KV_DTYPES, kvFormat } from '../src/cache/format.js';
import { KVCache } from '../src/cache/kv-cache.js';

function nativeMemory() {
  try {
    const be = createBackend({ prefer: 'native', threads: 1 });
    return be.name === 'native' ? be.pageMemory : undefined;
  } catch {
    return undefined;
  }
}

/** Numbers where encoders go wrong: halves of a code step, f16's edges, NaN, ±∞, −0, subnormals. */
function hardRows(hd: number, rows: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const special = [NaN, Infinity, -Infinity, -0, 0, 65504, 65519.99, 65520, -65536, 1 + 2 ** -11, -(1 + 3 * 2 ** -11), 2 ** -14, 2 ** -14 - 2 ** -25, 2 ** -14 - 2 ** -26, 1e-8, -6e-8, 2 ** -24, 3 * 2 ** -26, 1e30, -1e-30, 0.5, -2.5, 127.5, -127.5, 7.5, -8.5];
  const x = new Float32Array(rows * hd);
  for (let r = 0; r < rows; r++) {
    const kind = r % 6, scale = 10 ** (rnd() * 12 - 8);
    for (let d = 0; d < hd; d++) {
      let v = (rnd() * 2 - 1) * scale;
      // Exact halves of the q8_0 step: the block's max is 127·2^k, others are (i + ½)·2^k.
      if (kind === 1) v = d === 0 ? 127 * 2 ** -3 : (Math.floor(rnd() * 200) - 100 + 0.5) * 2 ** -3;
      if (kind === 2 && rnd() < 0.2) v = special[Math.floor(rnd() * special.length)];
      if (kind === 3) v = Math.fround(v) * 2 ** -130; // f32 and f16 subnormals
      if (kind === 4 && d === hd - 1) v = NaN;
      x[r * hd + d] = v;
    }
  }
  return x;
}

test('the native row encoder writes the bytes of encodeRow for every type, head size and hard number', (t) => {
  const mem = nativeMemory();
  if (!mem?.encodeRows) return t.skip('no native addon with kvEncodeRows on this machine');
  for (const dtype of KV_DTYPES) {
    for (const hd of [8, 40, 64, 96, 128]) {
      const f = kvFormat(dtype, hd), rows = 96, pad = 3;
      // Rows strided as the projections lay them out: [rows][heads·hd], here 2 heads + an offset.
      const stride = 2 * hd, src = new Float32Array(pad + rows * stride);
      src.set(hardRows(hd, rows * 2, 7 * hd + dtype.length).subarray(0, rows * stride), pad);
      const bytes = (rows * f.rowBytes + 9) & ~3, want = new Uint8Array(bytes), got = new Uint8Array(bytes);
      const views = (u8: Uint8Array) => ({ u8, u16: new Uint16Array(u8.buffer), i8: new Int8Array(u8.buffer), f32: new Float32Array(u8.buffer) });
      const w = views(want);
      for (let r = 0; r < rows; r++) encodeRow(f, src, pad + r * stride + hd, w, 4 + r * f.rowBytes);
      mem.encodeRows(f, src, pad + hd, stride, rows, got, 4);
      const at = want.findIndex((b, i) => b !== got[i]);
      assert.equal(at, -1, `${dtype}, head_dim ${hd}: byte ${at} (row ${Math.floor((at - 4) / f.rowBytes)}) is ${got[at]}, encodeRow wrote ${want[at]}`);
    }
  }
});

test('the native row encoder refuses rows past the end of either array instead of writing there', (t) => {
  const mem = nativeMemory();
  if (!mem?.encodeRows) return t.skip('no native addon with kvEncodeRows on this machine');
  const f = kvFormat('q8_0', 64), src = new Float32Array(64 * 4), dst = new Uint8Array(4 * f.rowBytes);
  assert.throws(() => mem.encodeRows!(f, src, 0, 64, 5, dst, 0), /out of range/);
  assert.throws(() => mem.encodeRows!(f, src, 1, 64, 4, dst, 0), /out of range/);
  assert.throws(() => mem.encodeRows!(f, src, 0, 64, 4, dst, 2), /out of range/);
  assert.doesNotThrow(() => mem.encodeRows!(f, src, 0, 64, 4, dst, 0));
});

test('a prefill appended through the native encoder leaves the pages a row-by-row append leaves', (t) => {
  const mem = nativeMemory();
  if (!mem?.encodeRows) return t.skip('no native addon with kvEncodeRows on this machine');
  const G = 3, hd = 64, rows = 150;
  for (const dtype of ['f16', 'bf16', 'q8_0', 'q4_0'] as const) {
    const a: KVCache = new KVCache(1, G, hd, { dtype, pageEntries: 64, memory: mem }), b: KVCache = new KVCache(1, G, hd, { dtype, pageEntries: 64 });
    const k = hardRows(G * hd, rows, 1), v = hardRows(G * hd, rows, 2), pos = Array.from({ length: rows }, (_, i) => 1000 + i);
    // 5 rows first, so that the long run starts inside a page.
    a.layers[0].append(k, v, pos, 5);
    a.layers[0].append(k.subarray(5 * G * hd), v.subarray(5 * G * hd), pos.slice(5), rows - 5);
    for (let r = 0; r < rows; r++) b.layers[0].append(k.subarray(r * G * hd), v.subarray(r * G * hd), [pos[r]], 1);
    for (let g = 0; g < G; g++) {
      assert.deepEqual(a.layers[0].lengths, b.layers[0].lengths);
      const ka = a.layers[0].headKeys(g).slice(), kb = b.layers[0].headKeys(g);
      assert.deepEqual(new Uint32Array(ka.buffer), new Uint32Array(kb.slice().buffer), `${dtype} keys of head ${g}`);
      const va = a.layers[0].headValues(g).slice(), vb = b.layers[0].headValues(g);
      assert.deepEqual(new Uint32Array(va.buffer), new Uint32Array(vb.slice().buffer), `${dtype} values of head ${g}`);
      assert.deepEqual([...a.layers[0].headPositions(g)], [...b.layers[0].headPositions(g)]);
    }
    a.dispose();
  }
});
