/**
 * Mutations of a seed file, deterministic in (seed, index): bit flips, interesting bytes and
 * 32-bit integers (0, -1, 2^31-1, sizes just past the end), inserted/deleted/duplicated runs,
 * truncation and splices from another seed. Text seeds also get digit and punctuation edits,
 * which keep JSON parseable more often and so reach the validation behind the parser.
 */
import { mulberry32 } from '../presses/random.js';

const INTERESTING_32 = [0, 1, -1, 2, 7, 8, 16, 255, 256, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, -0x80000000, 0x3fffffff, 1 << 24];
const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x22, 0x2c, 0x2d, 0x30, 0x39, 0x5b, 0x5d, 0x7b, 0x7d];
const TEXT_EDITS = ['0', '-1', '1e309', '9999999999999999999', 'null', 'true', '"', ',', '[]', '{}', '-0', '0.5', 'NaN', '"x"', ':', '\u0000'];

/** The `index`-th mutant of `seeds[index % seeds.length]` under `seed`. */
export function mutate(seeds: readonly Buffer[], seed: number, index: number, text: boolean): Buffer {
  const r = mulberry32((seed * 0x9e3779b1 + index * 0x85ebca6b) >>> 0);
  const int = (n: number) => Math.floor(r() * n);
  let b = Buffer.from(seeds[index % seeds.length]);
  const rounds = 1 + int(r() < 0.7 ? 2 : 8);
  for (let k = 0; k < rounds; k++) {
    const at = int(b.length + 1), kind = int(text ? 10 : 8);
    switch (kind) {
      case 0: // bit flips
        if (b.length) for (let i = 1 + int(4); i > 0; i--) b[int(b.length)] ^= 1 << int(8);
        break;
      case 1: // an interesting byte
        if (b.length) b[int(b.length)] = INTERESTING_8[int(INTERESTING_8.length)];
        break;
      case 2: { // an interesting int32 (header fields, counts, lengths) or one past the size
        if (b.length < 4) break;
        const pos = int(b.length - 3) & (r() < 0.7 ? ~3 : ~0);
        const v = r() < 0.2 ? b.length + int(16) - 8 : INTERESTING_32[int(INTERESTING_32.length)];
        b.writeInt32LE(v | 0, Math.min(pos, b.length - 4));
        break;
      }
      case 3: // delete a run
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + int(64)))]);
        break;
      case 4: { // insert random bytes
        const ins = Buffer.from(Array.from({ length: 1 + int(16) }, () => int(256)));
        b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
        break;
      }
      case 5: // truncate
        b = b.subarray(0, int(b.length + 1));
        break;
      case 6: { // duplicate a run (also appends trailing bytes)
        const from = int(b.length + 1), len = int(256);
        b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + len), b.subarray(at)]);
        break;
      }
      case 7: { // splice with another seed
        const other = seeds[int(seeds.length)];
        const cut = int(other.length + 1);
        b = Buffer.concat([b.subarray(0, at), other.subarray(cut)]);
        break;
      }
      default: { // text: replace a token-ish run with a JSON-significant edit
        const s = b.toString('latin1');
        const end = Math.min(s.length, at + int(12));
        b = Buffer.from(s.slice(0, at) + TEXT_EDITS[int(TEXT_EDITS.length)] + s.slice(end), 'latin1');
      }
    }
  }
  return b;
}
