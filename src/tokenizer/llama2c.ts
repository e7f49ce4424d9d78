import { readFileSync } from 'node:fs';
import { checkIds, checkText, decodePieces, type Tokenizer } from './tokenizer.js';

const BOS = 1;
const EOS = 2;
/** Distinct short chunks (words) remembered between calls; cleared when full. */
const CHUNK_CACHE_ENTRIES = 1 << 16;


/**
 * The llama2.c tokenizer (`tokenizer.bin` / `tok512.bin`): a SentencePiece BPE vocabulary with
 * merge scores, byte fallback tokens `<0x00>`…`<0xFF>` at ids 3…258, encoded as run.c does.
 */
export class Llama2cTokenizer implements Tokenizer {
  readonly bosId = BOS;
  /** BOS separates stories in llama2.c training data, so generating it ends the text. */
  readonly stopIds: readonly number[] = [BOS, EOS];
  readonly chatTemplate = null;
  private readonly pieceIds = new Map<string, number>();
  private readonly bytes: Uint8Array[];
  private readonly utf8 = new TextEncoder();
  /** True when no piece holds a space after a non-space, so text can be split before such spaces. */
  private readonly splitsAtSpaces: boolean;
  private readonly chunkCache = new Map<string, Int32Array>();
  private readonly pairCache = new Map<number, number>();
  /** Byte-fallback ids reach 258 even in a smaller vocabulary. */
  private readonly pairStride: number;
  private readonly longestPiece: number;

  constructor(readonly vocab: string[], readonly scores: Float32Array) {
    vocab.forEach((p, i) => { if (!this.pieceIds.has(p)) this.pieceIds.set(p, i); });
    this.bytes = vocab.map((p) => {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(p);
      return m ? Uint8Array.of(parseInt(m[1], 16)) : this.utf8.encode(p);
    });
    this.pairStride = Math.max(vocab.length, 259);
    this.longestPiece = vocab.reduce((m, p) => Math.max(m, p.length), 1);
    this.splitsAtSpaces = this.pieceIds.has(' ') && !vocab.some((p) => /[^ ] /.test(p));
  }

  /** Each token covers at most the longest piece's UTF-16 units (a byte-fallback token less than one). */
  minTokens(text: string): number {
    return Math.ceil(text.length / this.longestPiece);
  }

  get vocabSize(): number {
    return this.vocab.length;
  }

  encode(text: string, opts: { bos?: boolean } = {}): number[] {
    checkText(text);
    const ids: number[] = [];
    if (opts.bos) ids.push(BOS);
    if (text.length === 0) return ids;
    const full = this.pieceIds.has(' ') ? ' ' + text : text;
    if (!this.splitsAtSpaces) {
      for (const id of this.merge(full)) ids.push(id);
      return ids;
    }
    // Chunks start at each space that follows a non-space; no merge can cross such a boundary.
    let from = 0;
    for (let i = 1; i <= full.length; i++) {
      if (i < full.length && !(full.charCodeAt(i) === 0x20 && full.charCodeAt(i - 1) !== 0x20)) continue;
      const chunk = full.slice(from, i);
      from = i;
      let piece = this.chunkCache.get(chunk);
      if (piece === undefined) {
        piece = this.merge(chunk);
        if (chunk.length <= 64) {
          if (this.chunkCache.size >= CHUNK_CACHE_ENTRIES) this.chunkCache.clear();
          this.chunkCache.set(chunk, piece);
        }
      }
      for (let k = 0; k < piece.length; k++) ids.push(piece[k]);
    }
    return ids;
  }

  /**
   * run.c's greedy BPE over `text`: repeatedly merge the adjacent pair whose merged piece has the
   * highest score, leftmost on ties. Pieces form a linked list and candidate merges sit in a
   * max-heap whose stale entries are skipped, so a text of n pieces takes O(n log n).
   */
  private merge(text: string): Int32Array {
    const init: number[] = [];
    for (const ch of text) {
      const id = this.pieceIds.get(ch);
      if (id !== undefined) init.push(id);
      else pushUtf8(init, ch.codePointAt(0) as number);
    }
    const n = init.length;
    const piece = Int32Array.from(init);
    const next = new Int32Array(n), prev = new Int32Array(n), stamp = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new MergeHeap(n);
    const offer = (i: number) => {
      stamp[i]++;
      const j = next[i];
      if (j < 0) return;
      const id = this.pairMerge(piece[i], piece[j]);
      if (id >= 0 && this.scores[id] > -Infinity) heap.push(this.scores[id], i, stamp[i]);
    };
    for (let i = 0; i + 1 < n; i++) offer(i);
    let left = n;
    while (heap.size > 0) {
      const i = heap.topPos(), s = heap.topStamp();
      heap.pop();
      if (s !== stamp[i] || piece[i] < 0) continue;
      const j = next[i];
      piece[i] = this.pairMerge(piece[i], piece[j]);
      piece[j] = -1;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      left--;
      offer(i);
      if (prev[i] >= 0) offer(prev[i]);
    }
    const out = new Int32Array(left);
    for (let i = 0, k = 0; i >= 0 && k < left; i = next[i]) out[k++] = piece[i];
    return out;
  }

  /** The id of the piece spelled by pieces a then b, or -1; memoized per pair. */
  private pairMerge(a: number, b: number): number {
    const key = a * this.pairStride + b;
    let id = this.pairCache.get(key);
    if (id === undefined) {
      id = this.pieceIds.get(this.vocab[a] + this.vocab[b]) ?? -1;
      this.pairCache.set(key, id);
    }
    return id;
  }

  decode(ids: readonly number[]): string {
    return decodePieces(ids, (prev, id) => this.pieceBytes(prev, id));
  }

  decodePiece(prev: number, id: number): string {
    checkIds([id]);
    return new TextDecoder().decode(this.pieceBytes(prev, id));
  }

  private pieceBytes(prev: number, id: number): Uint8Array {
    if (id === BOS || id === EOS || id < 0 || id >= this.vocab.length) return new Uint8Array(0);
    const b = this.bytes[id];
    // run.c drops the dummy-prefix space of the first piece after BOS.
    return prev === BOS && b[0] === 0x20 ? b.subarray(1) : b;
  }
}

/** Reads a llama2.c tokenizer file holding `vocabSize` entries (the count comes from the model). */
export function loadLlama2cTokenizer(path: string, vocabSize: number): Llama2cTokenizer {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new Error(`${path}: cannot read tokenizer (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  const vocab: string[] = [];
  const scores = new Float32Array(vocabSize);
  let off = 4;
  const dec = new TextDecoder();
  for (let i = 0; i < vocabSize; i++) {
    if (off + 8 > buf.length) throw new Error(`${path}: truncated tokenizer: entry ${i} of ${vocabSize} is missing`);
    scores[i] = buf.readFloatLE(off);
    const len = buf.readInt32LE(off + 4);
    off += 8;
    if (len < 0 || off + len > buf.length) throw new Error(`${path}: truncated tokenizer: entry ${i} claims ${len} bytes`);
    vocab.push(dec.decode(buf.subarray(off, off + len)));
    off += len;
  }
  return new Llama2cTokenizer(vocab, scores);
}

/** Byte-fallback ids (byte + 3) of one code point's UTF-8 bytes; an unpaired surrogate is U+FFFD, as TextEncoder does. */
function pushUtf8(out: number[], cp: number): void {
  if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
  if (cp < 0x80) out.push(cp + 3);
  else if (cp < 0x800) out.push((0xc0 | (cp >> 6)) + 3, (0x80 | (cp & 63)) + 3);
  else if (cp < 0x10000) out.push((0xe0 | (cp >> 12)) + 3, (0x80 | ((cp >> 6) & 63)) + 3, (0x80 | (cp & 63)) + 3);
  else out.push((0xf0 | (cp >> 18)) + 3, (0x80 | ((cp >> 12) & 63)) + 3, (0x80 | ((cp >> 6) & 63)) + 3, (0x80 | (cp & 63)) + 3);
}

/** A binary max-heap of candidate merges: higher score first, then lower position (leftmost). */
class MergeHeap {
  size = 0;
  private score: Float64Array;
  private pos: Int32Array;
  private stamp: Int32Array;

  constructor(capacity: number) {
    const c = Math.max(16, capacity);
    this.score = new Float64Array(c);
    this.pos = new Int32Array(c);
    this.stamp = new Int32Array(c);
  }

  topPos(): number { return this.pos[0]; }
  topStamp(): number { return this.stamp[0]; }

  private above(a: number, b: number): boolean {
    return this.score[a] > this.score[b] || (this.score[a] === this.score[b] && this.pos[a] < this.pos[b]);
  }

  private swap(a: number, b: number): void {
    const s = this.score[a]; this.score[a] = this.score[b]; this.score[b] = s;
    const p = this.pos[a]; this.pos[a] = this.pos[b]; this.pos[b] = p;
    const t = this.stamp[a]; this.stamp[a] = this.stamp[b]; this.stamp[b] = t;
  }

  push(score: number, pos: number, stamp: number): void {
    if (this.size === this.score.length) this.grow();
    let i = this.size++;
    this.score[i] = score; this.pos[i] = pos; this.stamp[i] = stamp;
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (!this.above(i, up)) break;
      this.swap(i, up);
      i = up;
    }
  }

  pop(): void {
    const last = --this.size;
    if (last === 0) return;
    this.score[0] = this.score[last]; this.pos[0] = this.pos[last]; this.stamp[0] = this.stamp[last];
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let top = i;
      if (l < last && this.above(l, top)) top = l;
      if (r < last && this.above(r, top)) top = r;
      if (top === i) return;
      this.swap(i, top);
      i = top;
    }
  }

  private grow(): void {
    const c = this.score.length * 2;
    const score = new Float64Array(c), pos = new Int32Array(c), stamp = new Int32Array(c);
    score.set(this.score); pos.set(this.pos); stamp.set(this.stamp);
    this.score = score; this.pos = pos; this.stamp = stamp;
  }
}
