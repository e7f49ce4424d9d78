import { readFileSync } from 'node:fs';
import type { Tokenizer } from './tokenizer.js';

const BOS = 1;
const EOS = 2;

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

  constructor(readonly vocab: string[], readonly scores: Float32Array) {
    vocab.forEach((p, i) => { if (!this.pieceIds.has(p)) this.pieceIds.set(p, i); });
    this.bytes = vocab.map((p) => {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(p);
      return m ? Uint8Array.of(parseInt(m[1], 16)) : new TextEncoder().encode(p);
    });
  }

  get vocabSize(): number {
    return this.vocab.length;
  }

  encode(text: string, opts: { bos?: boolean } = {}): number[] {
    const ids: number[] = [];
    if (opts.bos) ids.push(BOS);
    if (text.length === 0) return ids;
    const start = ids.length;
    const dummy = this.pieceIds.get(' ');
    if (dummy !== undefined) ids.push(dummy);
    for (const ch of text) {
      const id = this.pieceIds.get(ch);
      if (id !== undefined) ids.push(id);
      else for (const b of new TextEncoder().encode(ch)) ids.push(b + 3);
    }
    // Greedy BPE: merge the adjacent pair with the highest score, leftmost on ties. Each pair's
    // merge is looked up once and refreshed only next to a merge, so a long text stays fast.
    const n0 = ids.length - start;
    const pieces = ids.slice(start);
    const mergeId = new Int32Array(n0), mergeScore = new Float64Array(n0);
    const lookup = (i: number) => {
      const id = i + 1 < pieces.length ? this.pieceIds.get(this.vocab[pieces[i]] + this.vocab[pieces[i + 1]]) : undefined;
      mergeId[i] = id ?? -1;
      mergeScore[i] = id === undefined ? -Infinity : this.scores[id];
    };
    for (let i = 0; i < pieces.length; i++) lookup(i);
    for (;;) {
      let bestIdx = -1, best = -Infinity;
      for (let i = 0; i + 1 < pieces.length; i++) {
        if (mergeScore[i] > best) {
          best = mergeScore[i];
          bestIdx = i;
        }
      }
      if (bestIdx < 0) break;
      pieces.splice(bestIdx, 2, mergeId[bestIdx]);
      mergeId.copyWithin(bestIdx + 1, bestIdx + 2);
      mergeScore.copyWithin(bestIdx + 1, bestIdx + 2);
      lookup(bestIdx);
      if (bestIdx > 0) lookup(bestIdx - 1);
    }
    ids.length = start;
    ids.push(...pieces);
    return ids;
  }

  decode(ids: readonly number[]): string {
    const parts: Uint8Array[] = [];
    let prev = -1;
    for (const id of ids) {
      parts.push(this.pieceBytes(prev, id));
      prev = id;
    }
    return new TextDecoder().decode(Buffer.concat(parts));
  }

  decodePiece(prev: number, id: number): string {
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
