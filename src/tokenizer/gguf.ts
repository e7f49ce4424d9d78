import { Tokenizer as HfLibTokenizer } from '@huggingface/tokenizers';
import { GgufArray, type GgufFile } from '../model/loaders/gguf.js';
import { HfTokenizer } from './hf.js';
import { PackedIndex, PackedStrings } from './packed.js';
import { checkIds, decodePieces, type Tokenizer } from './tokenizer.js';

/** `tokenizer.ggml.token_type` values (llama.cpp's llama_token_type). */
const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

const SPACE = '\u2581'; // SentencePiece's visible space

/** The pieces of the vocabulary that text is split on before tokenization (special tokens). */
function specialSplitter(pieces: PackedStrings, types: ArrayLike<number>): ((text: string) => (string | number)[]) | null {
  const specials = new Map<string, number>();
  for (let id = 0; id < pieces.length; id++) {
    if (types[id] !== TOKEN_TYPE.CONTROL && types[id] !== TOKEN_TYPE.USER_DEFINED) continue;
    const p = pieces.get(id);
    if (p.length > 0 && !specials.has(p)) specials.set(p, id);
  }
  if (specials.size === 0) return null;
  const escaped = [...specials.keys()].sort((a, b) => b.length - a.length).map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const re = new RegExp(escaped.join('|'), 'g');
  return (text) => {
    const out: (string | number)[] = [];
    let last = 0;
    for (const m of text.matchAll(re)) {
      if (m.index! > last) out.push(text.slice(last, m.index));
      out.push(specials.get(m[0])!);
      last = m.index! + m[0].length;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  };
}

export interface SpmOptions {
  bosId: number | null;
  unkId: number | null;
  addBos: boolean;
  addSpacePrefix: boolean;
  stopIds: readonly number[];
  chatTemplate: string | null;
}

/** The byte a `<0xXX>` piece at b[at, end) stands for, or -1. */
function bytePiece(b: Uint8Array, at: number, end: number): number {
  if (end - at !== 6 || b[at] !== 0x3c || b[at + 1] !== 0x30 || b[at + 2] !== 0x78 || b[at + 5] !== 0x3e) return -1;
  const hex = (c: number) => (c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x41 && c <= 0x46 ? c - 0x37 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1);
  const hi = hex(b[at + 3]), lo = hex(b[at + 4]);
  return hi < 0 || lo < 0 ? -1 : 16 * hi + lo;
}

/** U+2581 in UTF-8. */
const SPACE_UTF8 = [0xe2, 0x96, 0x81] as const;
/** A lone UTF-16 surrogate (what UTF-8 cannot carry). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * GGUF's `llama` tokenizer: SentencePiece BPE over scored pieces. Spaces become U+2581 (with a
 * leading one when `add_space_prefix`), the text is split into characters, and the adjacent pair
 * whose concatenation is the highest-scored piece is merged (leftmost on ties) until no pair is a
 * piece; characters that are not pieces fall back to their UTF-8 bytes (`<0xXX>` pieces).
 * Control and user-defined pieces in the text are matched as whole tokens first.
 *
 * The vocabulary stays packed (one byte array, a hash table of ids, no string per piece): the
 * text is merged as byte ranges of its UTF-8 encoding, which only ever join neighbours.
 */
export class SpmTokenizer implements Tokenizer {
  readonly bosId: number | null;
  readonly stopIds: readonly number[];
  readonly chatTemplate: string | null;
  readonly pieces: PackedStrings;
  /** Non-byte pieces by their UTF-8 bytes (U+2581 for spaces, as stored). */
  private readonly index: PackedIndex;
  private readonly byteIds = new Int32Array(256).fill(-1);
  /** What each piece decodes to: bytes[offsets[i] … offsets[i + 1]). */
  private readonly text: PackedStrings;
  private readonly split: ((text: string) => (string | number)[]) | null;

  constructor(pieces: PackedStrings | readonly string[], readonly scores: Float32Array, readonly types: Uint8Array, private readonly opts: SpmOptions) {
    this.pieces = pieces instanceof PackedStrings ? pieces : PackedStrings.from(pieces);
    this.bosId = opts.addBos ? opts.bosId : null;
    this.stopIds = opts.stopIds;
    this.chatTemplate = opts.chatTemplate;
    const n = this.pieces.length, { bytes: b, offsets: from } = this.pieces;
    const out = new Uint8Array(b.length), offsets = new Uint32Array(n + 1);
    let at = 0;
    for (let id = 0; id < n; id++) {
      const end = from[id + 1], byte = types[id] === TOKEN_TYPE.BYTE ? bytePiece(b, from[id], end) : -1;
      if (byte >= 0) {
        this.byteIds[byte] = id;
        out[at++] = byte;
      } else if (types[id] !== TOKEN_TYPE.CONTROL && types[id] !== TOKEN_TYPE.UNKNOWN && types[id] !== TOKEN_TYPE.UNUSED) {
        for (let i = from[id]; i < end; i++) {
          const space = i + 2 < end && b[i] === SPACE_UTF8[0] && b[i + 1] === SPACE_UTF8[1] && b[i + 2] === SPACE_UTF8[2];
          out[at++] = space ? 0x20 : b[i];
          if (space) i += 2;
        }
      }
      offsets[id + 1] = at;
    }
    this.text = new PackedStrings(out.slice(0, at), offsets);
    this.index = new PackedIndex(this.pieces, (id) => types[id] !== TOKEN_TYPE.BYTE);
    this.split = specialSplitter(this.pieces, types);
  }

  get vocabSize(): number {
    return this.pieces.length;
  }

  /** The literal text of a token (chat templates print `bos_token`/`eos_token`). */
  tokenText(id: number): string {
    return Number.isInteger(id) && id >= 0 && id < this.pieces.length ? this.pieces.get(id) : '';
  }

  encode(text: string, opts: { bos?: boolean } = {}): number[] {
    const out: number[] = [];
    if (opts.bos && this.bosId !== null) out.push(this.bosId);
    const parts = this.split ? this.split(text) : [text];
    parts.forEach((p, i) => {
      if (typeof p === 'number') out.push(p);
      // The dummy prefix goes in front of the text and after every special token in it (llama.cpp).
      else this.encodeText(this.opts.addSpacePrefix && (i === 0 || typeof parts[i - 1] === 'number') ? ' ' + p : p, out);
    });
    return out;
  }

  private encodeText(text: string, out: number[]): void {
    const s = text.replaceAll(' ', SPACE);
    const buf = encoder.encode(s);
    const n = buf.length;
    if (n === 0) return;
    // A symbol is a byte range [i, i + len[i]) of buf, starting at a character; symbols form a
    // linked list over their start bytes. Candidate merges wait in a heap ordered by score, then
    // by the left symbol's start (leftmost first); one is stale once either side has changed.
    const len = new Int32Array(n), next = new Int32Array(n), prev = new Int32Array(n);
    let last = -1;
    for (let i = 0; i < n; i++) {
      if ((buf[i] & 0xc0) === 0x80) continue;
      if (last >= 0) {
        len[last] = i - last;
        next[last] = i;
      }
      prev[i] = last;
      last = i;
    }
    len[last] = n - last;
    next[last] = -1;
    // A lone surrogate is no character of any piece: it stays alone and falls back to the bytes
    // of U+FFFD (what UTF-8 makes of it), even where the vocabulary has U+FFFD as a piece.
    const sealed = /[\uD800-\uDFFF]/.test(s) ? lonesAt(s, n) : null;
    const heap = new MergeHeap();
    const offer = (l: number) => {
      if (l < 0) return;
      const r = next[l];
      if (r < 0 || (sealed && (sealed[l] || sealed[r]))) return;
      const id = this.index.find(buf, l, r + len[r]);
      if (id >= 0) heap.push(this.scores[id], l, r, len[l] + len[r]);
    };
    for (let i = 0; i >= 0; i = next[i]) offer(i);
    for (let c = heap.pop(); c; c = heap.pop()) {
      const { left: l, right: r } = c;
      if (len[l] === 0 || len[r] === 0 || next[l] !== r || len[l] + len[r] !== c.size) continue;
      len[l] += len[r];
      len[r] = 0;
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      offer(prev[l]);
      offer(l);
    }
    for (let i = 0; i >= 0; i = next[i]) {
      const id = sealed?.[i] ? -1 : this.index.find(buf, i, i + len[i]);
      if (id >= 0) {
        out.push(id);
        continue;
      }
      for (let k = i; k < i + len[i]; k++) {
        const bid = this.byteIds[buf[k]];
        if (bid >= 0) out.push(bid);
        else if (this.opts.unkId !== null) out.push(this.opts.unkId);
      }
    }
  }

  decode(ids: readonly number[]): string {
    return decodePieces(ids, (prev, id) => this.pieceBytes(prev, id));
  }

  decodePiece(prev: number, id: number): string {
    checkIds([id]);
    return new TextDecoder().decode(this.pieceBytes(prev, id));
  }

  private pieceBytes(prev: number, id: number): Uint8Array {
    if (!Number.isInteger(id) || id < 0 || id >= this.pieces.length) return new Uint8Array(0);
    const b = this.text.bytesOf(id);
    // The dummy-prefix space of the first piece after BOS is not part of the text.
    return this.opts.addSpacePrefix && prev === this.opts.bosId && b[0] === 0x20 ? b.subarray(1) : b;
  }
}

const encoder = new TextEncoder();

/** Flags at the UTF-8 start byte of every lone surrogate of s (each encodes to the 3 bytes of U+FFFD). */
function lonesAt(s: string, bytes: number): Uint8Array {
  const flags = new Uint8Array(bytes);
  let last = 0, at = 0;
  for (const m of s.matchAll(LONE_SURROGATE)) {
    at += encoder.encode(s.slice(last, m.index)).length;
    flags[at] = 1;
    at += 3;
    last = m.index! + 1;
  }
  return flags;
}

/** A binary max-heap of merge candidates: higher score first, then lower left index. */
class MergeHeap {
  private readonly items: { score: number; left: number; right: number; size: number }[] = [];

  push(score: number, left: number, right: number, size: number): void {
    const a = this.items;
    a.push({ score, left, right, size });
    for (let i = a.length - 1; i > 0;) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }

  pop(): { score: number; left: number; right: number; size: number } | undefined {
    const a = this.items;
    if (a.length === 0) return undefined;
    const top = a[0], last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      for (let i = 0; ;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && this.before(l, m)) m = l;
        if (r < a.length && this.before(r, m)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }

  private before(i: number, j: number): boolean {
    const x = this.items[i], y = this.items[j];
    return x.score > y.score || (x.score === y.score && x.left < y.left);
  }
}

/** Pre-tokenizer regexes of the `tokenizer.ggml.pre` names we support (the models' own tokenizer.json patterns). */
const PRE_TOKENIZERS: Record<string, string | null> = {
  // GPT-2's pattern, which the ByteLevel pre-tokenizer applies itself.
  default: null,
  gpt2: null,
  'llama-bpe': "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  qwen2: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
PRE_TOKENIZERS.llama3 = PRE_TOKENIZERS['llama-bpe'];

/**
 * GGUF's `gpt2` tokenizer (byte-level BPE with merges) as a tokenizer.json for the Hugging Face
 * library: the vocabulary and merges from the metadata, the pre-tokenizer `tokenizer.ggml.pre`
 * names, control and user-defined tokens as special added tokens.
 */
export function bpeTokenizerJson(pieces: PackedStrings, types: ArrayLike<number>, merges: PackedStrings, pre: string, source: string): object {
  if (!(pre in PRE_TOKENIZERS)) {
    throw new Error(`${source}: unsupported tokenizer.ggml.pre ${JSON.stringify(pre)} (supported: ${Object.keys(PRE_TOKENIZERS).join(', ')})`);
  }
  const regex = PRE_TOKENIZERS[pre];
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: regex === null };
  const vocab: Record<string, number> = Object.create(null);
  const added = [];
  for (let id = 0; id < pieces.length; id++) {
    const p = pieces.get(id);
    if (!(p in vocab)) vocab[p] = id;
    if (types[id] === TOKEN_TYPE.CONTROL || types[id] === TOKEN_TYPE.USER_DEFINED) {
      added.push({ id, content: p, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    }
  }
  return {
    version: '1.0',
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: regex === null ? byteLevel : {
      type: 'Sequence',
      pretokenizers: [{ type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false }, byteLevel],
    },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: pre === 'llama-bpe' || pre === 'llama3', vocab,
      merges: Array.from({ length: merges.length }, (_, i) => merges.get(i)),
    },
  };
}

/** The tokenizer described by a GGUF file's `tokenizer.*` metadata, or null when it has none. */
export function loadGgufTokenizer(f: GgufFile): Tokenizer | null {
  const src = f.path;
  const model = f.get('tokenizer.ggml.model');
  if (model === undefined) return null;
  const array = (key: string): GgufArray | undefined => {
    const v = f.get(key);
    if (v !== undefined && !(v instanceof GgufArray)) throw new Error(`${src}: ${key} must be an array`);
    return v;
  };
  const strings = (key: string): PackedStrings => {
    const v = array(key);
    if (v?.typeName !== 'string') throw new Error(`${src}: missing or invalid ${key} (an array of strings)`);
    return v.strings();
  };
  const pieces = strings('tokenizer.ggml.tokens');
  const n = pieces.length;
  const numbers = (key: string) => {
    const v = array(key);
    if (v === undefined) return null;
    const x = v.length === n && v.typeName !== 'string' ? v.numbers() : null;
    if (x === null || x instanceof BigInt64Array || x instanceof BigUint64Array) throw new Error(`${src}: ${key} must hold ${n} numbers`);
    return x;
  };
  const tokenTypes = numbers('tokenizer.ggml.token_type');
  const types = tokenTypes === null ? new Uint8Array(n).fill(TOKEN_TYPE.NORMAL) : tokenTypes instanceof Uint8Array ? tokenTypes : Uint8Array.from(tokenTypes);
  const id = (key: string): number | null => {
    const v = f.get(key);
    if (v === undefined) return null;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= n) throw new Error(`${src}: ${key} ${String(v)} is not a token id below ${n}`);
    return v;
  };
  const flag = (key: string, fallback: boolean): boolean => {
    const v = f.get(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') throw new Error(`${src}: ${key} must be a boolean`);
    return v;
  };
  const template = f.get('tokenizer.chat_template');
  const chatTemplate = typeof template === 'string' ? template : null;
  const bosId = id('tokenizer.ggml.bos_token_id'), eosId = id('tokenizer.ggml.eos_token_id');
  const stopIds = [...new Set([eosId, id('tokenizer.ggml.eot_token_id'), id('tokenizer.ggml.eom_token_id')].filter((x): x is number => x !== null))];

  if (model === 'llama') {
    const stored = numbers('tokenizer.ggml.scores');
    const scores = stored === null ? new Float32Array(n) : stored instanceof Float32Array ? stored : Float32Array.from(stored);
    return new SpmTokenizer(pieces, scores, types, {
      bosId, unkId: id('tokenizer.ggml.unknown_token_id'),
      addBos: flag('tokenizer.ggml.add_bos_token', true),
      addSpacePrefix: flag('tokenizer.ggml.add_space_prefix', true),
      stopIds, chatTemplate,
    });
  }
  if (model === 'gpt2') {
    const merges = strings('tokenizer.ggml.merges');
    const pre = f.get('tokenizer.ggml.pre') ?? 'default';
    if (typeof pre !== 'string') throw new Error(`${src}: tokenizer.ggml.pre must be a string`);
    let lib: HfLibTokenizer;
    try {
      const json = bpeTokenizerJson(pieces, types, merges, pre, src) as { model: { vocab: unknown; merges: unknown } };
      lib = new HfLibTokenizer(json, { clean_up_tokenization_spaces: false });
      // The library keeps the JSON it was built from but reads the vocabulary and merges only
      // while building its own maps: held on, they cost 5 MiB of heap for 49k tokens and merges.
      json.model.vocab = null;
      json.model.merges = null;
    } catch (e) {
      throw new Error(`${src}: cannot build the BPE tokenizer (${(e as Error).message.replace(/\s+/g, ' ')})`);
    }
    return new HfTokenizer(lib, { bosId: flag('tokenizer.ggml.add_bos_token', false) ? bosId : null, stopIds, chatTemplate });
  }
  throw new Error(`${src}: unsupported tokenizer.ggml.model ${JSON.stringify(model)} (supported: llama, gpt2)`);
}
