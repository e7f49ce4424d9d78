/**
 * The GGUF reader's lean paths: metadata arrays read on demand into typed arrays and packed
 * strings (values written byte by byte here, read back exactly), the packed SentencePiece
 * vocabulary (no JS object per piece), and matrices converted at load in chunks of rows (the
 * bits of converting the whole matrix).
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { writeShapeGguf } from '../bench/llama-cpp.js';
import { toBf16 } from '../src/backend/js/kernels.js';
import { GgufArray, GgufFile } from '../src/model/loaders/gguf.js';
import { loadGguf } from '../src/model/loaders/gguf-model.js';
import { ggufBytes, type GgufSpec, type MetaValue } from '../src/model/loaders/gguf-writer.js';
import { GGML_TYPE } from '../src/model/quant/formats.js';
import { quantizeMatrix } from '../src/model/quant/quantize.js';
import type { ModelWeights, Weight } from '../src/model/weights.js';
import { loadGgufTokenizer, SpmTokenizer } from '../src/tokenizer/gguf.js';
import { PackedIndex, PackedStrings } from '../src/tokenizer/packed.js';
import { tempDir } from './fixtures/tiny-models.js';
import { oneLine } from './helpers/errors.js';

const tmp = tempDir('gguf-lean');
after(() => rmSync(tmp, { recursive: true, force: true }));
let count = 0;
const write = (spec: GgufSpec) => {
  const p = join(tmp, `f${count++}.gguf`);
  writeFileSync(p, ggufBytes(spec));
  return p;
};

/** A metadata array as GGUF lays it out: u32 element type, u64 count, then `body`. */
function arrayValue(elementType: number, n: number | bigint, body: Uint8Array): MetaValue {
  const head = Buffer.alloc(12);
  head.writeUInt32LE(elementType, 0);
  head.writeBigUInt64LE(BigInt(n), 4);
  return { type: 'raw', valueType: 9, bytes: Buffer.concat([head, body]) };
}
/** Little-endian bytes of `values`, each written by `put` into `width` bytes. */
function le<T>(values: T[], width: number, put: (b: Buffer, v: T, at: number) => void): Uint8Array {
  const b = Buffer.alloc(values.length * width);
  values.forEach((v, i) => put(b, v, i * width));
  return b;
}
const stringBytes = (list: string[]) => Buffer.concat(list.flatMap((s) => {
  const len = Buffer.alloc(8), body = Buffer.from(s, 'utf8');
  len.writeBigUInt64LE(BigInt(body.length));
  return [len, body];
}));
const header = (meta: [string, MetaValue][]): GgufSpec => ({ metadata: [['general.architecture', { type: 'string', value: 'llama' }], ...meta], tensors: [] });

describe('GGUF metadata arrays', () => {
  const words = ['', 'a', '▁the', '漢字', '🙂', '<0x0A>', 'x'.repeat(1000)];
  const cases: [string, number, Uint8Array, number, unknown[], string][] = [
    ['u8', 0, Uint8Array.of(0, 7, 255), 3, [0, 7, 255], 'Uint8Array'],
    ['i8', 1, Uint8Array.of(0x80, 0xff, 5), 3, [-128, -1, 5], 'Int8Array'],
    ['u16', 2, le([65535, 1], 2, (b, v, at) => b.writeUInt16LE(v, at)), 2, [65535, 1], 'Uint16Array'],
    ['i16', 3, le([-32768, 9], 2, (b, v, at) => b.writeInt16LE(v, at)), 2, [-32768, 9], 'Int16Array'],
    ['u32', 4, le([4294967295, 3], 4, (b, v, at) => b.writeUInt32LE(v, at)), 2, [4294967295, 3], 'Uint32Array'],
    ['i32', 5, le([-2147483648, 6, 1], 4, (b, v, at) => b.writeInt32LE(v, at)), 3, [-2147483648, 6, 1], 'Int32Array'],
    ['f32', 6, le([-0.5, 1e-30, 3.25], 4, (b, v, at) => b.writeFloatLE(v, at)), 3, [-0.5, Math.fround(1e-30), 3.25], 'Float32Array'],
    ['bool', 7, Uint8Array.of(1, 0, 1), 3, [1, 0, 1], 'Uint8Array'],
    ['u64', 10, le([2n ** 64n - 1n, 5n], 8, (b, v, at) => b.writeBigUInt64LE(v, at)), 2, [2n ** 64n - 1n, 5n], 'BigUint64Array'],
    ['i64', 11, le([-(2n ** 63n), 7n], 8, (b, v, at) => b.writeBigInt64LE(v, at)), 2, [-(2n ** 63n), 7n], 'BigInt64Array'],
    ['f64', 12, le([Math.PI, -1e300], 8, (b, v, at) => b.writeDoubleLE(v, at)), 2, [Math.PI, -1e300], 'Float64Array'],
  ];

  test('numbers read back exactly, in the typed array of their type, only when asked for', () => {
    const p = write(header([
      ...cases.map(([name, type, body, n]): [string, MetaValue] => [`t.${name}`, arrayValue(type, n, body)]),
      ['t.strings', arrayValue(8, words.length, stringBytes(words))],
      ['t.after', { type: 'u32', value: 42 }],
    ]));
    const f = GgufFile.open(p);
    for (const [name, , , n, values, cls] of cases) {
      const a = f.get(`t.${name}`);
      assert.ok(a instanceof GgufArray);
      assert.equal(a.length, n);
      assert.equal(a.typeName, name);
      const x = a.numbers();
      assert.equal(x.constructor.name, cls, name);
      assert.deepEqual(Array.from(x as ArrayLike<unknown>), values, name);
      assert.throws(() => a.strings(), oneLine(p, new RegExp(`t\\.${name} is an array of ${name}, not strings`)));
    }
    const s = f.get('t.strings') as GgufArray;
    assert.equal(s.typeName, 'string');
    const packed = s.strings();
    assert.equal(packed.length, words.length);
    words.forEach((w, i) => {
      assert.equal(packed.get(i), w);
      assert.deepEqual(packed.bytesOf(i), new Uint8Array(Buffer.from(w, 'utf8')));
    });
    assert.equal(packed.bytes.length, Buffer.byteLength(words.join(''), 'utf8'), 'the length prefixes are not kept');
    assert.throws(() => s.numbers(), oneLine(p, /t\.strings is an array of string, not numbers/));
    assert.equal(f.get('t.after'), 42, 'the values after the arrays are where the arrays end');
    f.close();
    assert.throws(() => s.strings(), oneLine(p, /file already closed/));
  });

  const bad: [string, MetaValue, RegExp][] = [
    ['a count larger than the file', arrayValue(6, 1n << 40n, new Uint8Array(8)), /array length 1099511627776 is impossible/],
    ['a count past the end', arrayValue(5, 1000, new Uint8Array(8)), /array length 1000 is impossible/],
    ['a string longer than the file', arrayValue(8, 1, Buffer.concat([le([1000n], 8, (b, v, at) => b.writeBigUInt64LE(v, at)), Buffer.from('ab')])), /string 0 length 1000 is impossible/],
    ['a string length beyond 2^32', arrayValue(8, 1, Buffer.concat([le([2n ** 40n], 8, (b, v, at) => b.writeBigUInt64LE(v, at)), Buffer.alloc(16)])), /string 0 length 1099511627776 is impossible/],
    ['nested arrays', arrayValue(9, 1, new Uint8Array(12)), /nested arrays are not supported/],
    ['an unknown element type', arrayValue(13, 1, new Uint8Array(8)), /unknown array element type 13/],
  ];
  for (const [what, value, fragment] of bad) {
    test(`${what} is a one-line error when the file is opened`, () => {
      const p = write(header([['t.bad', value]]));
      assert.throws(() => GgufFile.open(p), oneLine(p, fragment));
    });
  }

  test('a bool array holding 2 is an error when read', () => {
    const p = write(header([['t.flags', arrayValue(7, 2, Uint8Array.of(1, 2))]]));
    const f = GgufFile.open(p);
    assert.throws(() => (f.get('t.flags') as GgufArray).numbers(), oneLine(p, /t\.flags: invalid bool 2/));
    f.close();
  });
});

describe('packed strings', () => {
  test('the index finds every string, the first of equal ones, and nothing else', () => {
    const list = Array.from({ length: 20000 }, (_, i) => `▁w${i % 15000}`);
    list.push('', 'é', 'e\u0301');
    const packed = PackedStrings.from(list);
    const index = new PackedIndex(packed, (i) => i !== 5);
    const first = new Map<string, number>();
    list.forEach((s, i) => { if (i !== 5 && !first.has(s)) first.set(s, i); });
    const enc = new TextEncoder();
    for (const [s, i] of first) {
      const b = enc.encode(`<${s}>`);
      assert.equal(index.find(b, 1, b.length - 1), i, s);
    }
    for (const s of ['▁w15000', '▁w', 'w1', 'e']) {
      const b = enc.encode(s);
      assert.equal(index.find(b, 0, b.length), -1, s);
    }
    const five = enc.encode(list[5]);
    assert.equal(index.find(five, 0, five.length), 15005, 'an excluded string is not found; its equal is');
  });
});

describe('the packed SentencePiece tokenizer', () => {
  const opts = { bosId: 1, unkId: 0, addBos: true, addSpacePrefix: false, stopIds: [2], chatTemplate: null };
  const bytes = Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);

  test('merges by score and falls back to bytes as SentencePiece does', () => {
    // ids: 0 <unk>, 1 <s>, 2 </s>, 3 … 258 bytes, then pieces.
    const pieces = ['<unk>', '<s>', '</s>', ...bytes, 'a', 'b', 'ab', 'abb', 'bb', '\uFFFD', '▁', '▁a'];
    const types = pieces.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1));
    const scores = Float32Array.from(pieces, (p) => ({ ab: -1, bb: -2, abb: -3, '▁a': -1 } as Record<string, number>)[p] ?? -10);
    const tok = new SpmTokenizer(pieces, scores, Uint8Array.from(types), opts);
    const id = (p: string) => pieces.indexOf(p);
    // "abb": ab (−1) wins over bb (−2), then ab+b = abb.
    assert.deepEqual(tok.encode('abb'), [id('abb')]);
    // "bbb": bb then b (leftmost on the tie).
    assert.deepEqual(tok.encode('bbb'), [id('bb'), id('b')]);
    // "c" is no piece: its byte. "é" is two bytes.
    assert.deepEqual(tok.encode(' a c é'), [id('▁a'), id('▁'), 3 + 0x63, id('▁'), 3 + 0xc3, 3 + 0xa9]);
    // A lone surrogate is no character: the bytes of U+FFFD, not the U+FFFD piece nor a merge.
    assert.deepEqual(tok.encode('a\uD800b'), [id('a'), 3 + 0xef, 3 + 0xbf, 3 + 0xbd, id('b')]);
    assert.deepEqual(tok.encode('\uFFFD'), [id('\uFFFD')]);
    assert.equal(tok.decode(tok.encode(' a c é')), ' a c é');
    assert.equal(tok.tokenText(id('▁a')), '▁a');
  });

  test('a 49,152-piece vocabulary holds no JS object per piece', () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const n = 49152;
    const pieces = ['<unk>', '<s>', '</s>', ...bytes];
    while (pieces.length < n) pieces.push(`▁t${pieces.length}`);
    const p = write(header([
      ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
      ['tokenizer.ggml.tokens', { type: 'strings', value: pieces }],
      ['tokenizer.ggml.scores', { type: 'f32s', value: pieces.map((_, i) => -i) }],
      ['tokenizer.ggml.token_type', { type: 'i32s', value: pieces.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1)) }],
      ['tokenizer.ggml.bos_token_id', { type: 'u32', value: 1 }],
    ]));
    pieces.length = 0;
    gc();
    const before = process.memoryUsage().heapUsed;
    const f = GgufFile.open(p);
    const tok = loadGgufTokenizer(f)!;
    f.close();
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    // A JS string costs at least a 12-byte header; any per-piece string or map entry exceeds this.
    assert.ok(grown < 8 * n, `V8 heap grew by ${grown} bytes for ${n} pieces`);
    assert.equal(tok.vocabSize, n);
    // No two-character piece exists to merge through: every character falls back to its bytes.
    assert.deepEqual(tok.encode('t3 é', { bos: true }), [1, ...Buffer.from('▁t3▁é', 'utf8')].map((b, i) => (i === 0 ? b : 3 + b)));
    assert.equal(tok.tokenText?.(49151), '▁t49151');
  });
});

describe('matrices converted at load, in chunks of rows', () => {
  // Embedding 1100 × 256 f32 is 1.07 MiB: more than one chunk.
  const dims = { hiddenSize: 256, intermediateSize: 256, numLayers: 1, numHeads: 4, numKvHeads: 2, headDim: 64, vocabSize: 1100 };
  const matrices = (w: ModelWeights): Weight[] => [w.embedding, ...w.layers.flatMap((l) => [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown])];
  const shapes = [[1100, 256], [256, 256], [128, 256], [128, 256], [256, 256], [256, 256], [256, 256], [256, 256]];

  for (const stored of ['f32', 'f16'] as const) {
    test(`${stored} file → bf16, q8_0 and q4_k: the bits of converting each whole matrix`, () => {
      const p = join(tmp, `shape-${stored}.gguf`);
      writeShapeGguf(p, dims, stored);
      const wide = matrices(loadGguf(p).weights).map((m) => {
        if (m instanceof Float32Array) return m;
        assert.equal(m.type, 'f16');
        const f = new Float32Array(m.rows * m.cols);
        const half = new DataView(m.data.buffer, m.data.byteOffset, m.data.byteLength);
        for (let i = 0; i < f.length; i++) f[i] = f16ToF32(half.getUint16(2 * i, true));
        return f;
      });
      const bf16 = matrices(loadGguf(p, 'bf16').weights);
      wide.forEach((m, i) => assert.deepEqual((bf16[i] as { data: Uint16Array }).data, toBf16(m), `bf16 matrix ${i}`));
      for (const [type, ggml] of [['q8_0', GGML_TYPE.Q8_0], ['q4_k', GGML_TYPE.Q4_K]] as const) {
        const q = matrices(loadGguf(p, type).weights);
        wide.forEach((m, i) => {
          const w = q[i] as { type: string; data: Uint8Array };
          assert.equal(w.type, type);
          assert.deepEqual(w.data, quantizeMatrix(ggml, m, shapes[i][0], shapes[i][1]), `${type} matrix ${i}`);
        });
      }
    });
  }
});

/** IEEE half → float, from the bit layout (1 sign, 5 exponent, 10 mantissa bits). */
function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
