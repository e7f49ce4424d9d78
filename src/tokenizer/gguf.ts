import { Tokenizer as HfLibTokenizer } from '@huggingface/tokenizers';
import type { GgufFile, GgufValue } from '../model/loaders/gguf.js';
import { HfTokenizer } from './hf.js';
import { checkIds, decodePieces, type Tokenizer } from './tokenizer.js';

/** `tokenizer.ggml.token_type` values (llama.cpp's llama_token_type). */
const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

const SPACE = '\u2581'; // SentencePiece's visible space

/** The pieces of the vocabulary that text is split on before tokenization (special tokens). */
function specialSplitter(pieces: string[], types: ArrayLike<number>): ((text: string) => (string | number)[]) | null {
  const specials = new Map<string, number>();
  pieces.forEach((p, id) => {
    if ((types[id] === TOKEN_TYPE.CONTROL || types[id] === TOKEN_TYPE.USER_DEFINED) && p.length > 0 && !specials.has(p)) specials.set(p, id);
  });
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

/**
 * GGUF's `llama` tokenizer: SentencePiece BPE over scored pieces. Spaces become U+2581 (with a
 * leading one when `add_space_prefix`), the text is split into characters, and the adjacent pair
 * whose concatenation is the highest-scored piece is merged (leftmost on ties) until no pair is a
 * piece; characters that are not pieces fall back to their UTF-8 bytes (`<0xXX>` pieces).
 * Control and user-defined pieces in the text are matched as whole tokens first.
 */
export class SpmTokenizer implements Tokenizer {
  readonly bosId: number | null;
  readonly stopIds: readonly number[];
  readonly chatTemplate: string | null;
  private readonly ids = new Map<string, number>();
  private readonly byteIds = new Int32Array(256).fill(-1);
  /** Bytes of piece i: bytes[offsets[i] … offsets[i + 1]). */
  private readonly bytes: Uint8Array;
  private readonly offsets: Uint32Array;
  private readonly split: ((text: string) => (string | number)[]) | null;

  constructor(readonly pieces: string[], readonly scores: Float32Array, readonly types: Uint8Array, private readonly opts: SpmOptions) {
    this.bosId = opts.addBos ? opts.bosId : null;
    this.stopIds = opts.stopIds;
    this.chatTemplate = opts.chatTemplate;
    // Every piece's bytes packed into one array: a typed array per piece costs ~50 MiB of V8
    // heap for a 49k vocabulary (measured), more than a tenth of a small quantized model.
    const enc = new TextEncoder();
    const text = pieces.map((p, id) => {
      const m = types[id] === TOKEN_TYPE.BYTE ? /^<0x([0-9A-Fa-f]{2})>$/.exec(p) : null;
      if (m) {
        this.byteIds[parseInt(m[1], 16)] = id;
        return String.fromCharCode(parseInt(m[1], 16));
      }
      if (types[id] === TOKEN_TYPE.CONTROL || types[id] === TOKEN_TYPE.UNKNOWN || types[id] === TOKEN_TYPE.UNUSED) return '';
      return null;
    });
    this.offsets = new Uint32Array(pieces.length + 1);
    let total = 0;
    pieces.forEach((p, id) => (total += text[id] === null ? 3 * p.length : text[id]!.length));
    const packed = new Uint8Array(total);
    let at = 0;
    pieces.forEach((p, id) => {
      const t = text[id];
      if (t === null) at += enc.encodeInto(p.replaceAll(SPACE, ' '), packed.subarray(at)).written;
      else for (let i = 0; i < t.length; i++) packed[at++] = t.charCodeAt(i);
      this.offsets[id + 1] = at;
    });
    this.bytes = packed.slice(0, at);
    pieces.forEach((p, id) => {
      if (types[id] !== TOKEN_TYPE.BYTE && !this.ids.has(p)) this.ids.set(p, id);
    });
    this.split = specialSplitter(pieces, types);
  }

  get vocabSize(): number {
    return this.pieces.length;
  }

  /** The literal text of a token (chat templates print `bos_token`/`eos_token`). */
  tokenText(id: number): string {
    return this.pieces[id] ?? '';
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
    const syms = [...text.replaceAll(' ', SPACE)];
    const n = syms.length;
    if (n === 0) return;
    // Symbols form a linked list; candidate merges wait in a heap ordered by score, then by the
    // left symbol's index (leftmost first). A candidate is stale once either side has changed.
    const next = Int32Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
    const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
    const heap = new MergeHeap();
    const offer = (l: number) => {
      const r = next[l];
      if (l < 0 || r < 0) return;
      const id = this.ids.get(syms[l] + syms[r]);
      if (id !== undefined) heap.push(this.scores[id], l, r, syms[l].length + syms[r].length);
    };
    for (let i = 0; i + 1 < n; i++) offer(i);
    for (let c = heap.pop(); c; c = heap.pop()) {
      const { left: l, right: r } = c;
      if (syms[l] === '' || syms[r] === '' || next[l] !== r || syms[l].length + syms[r].length !== c.size) continue;
      syms[l] += syms[r];
      syms[r] = '';
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      offer(prev[l]);
      offer(l);
    }
    const enc = new TextEncoder();
    for (let i = 0; i >= 0; i = next[i]) {
      const s = syms[i];
      const id = this.ids.get(s);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      for (const b of enc.encode(s)) {
        const bid = this.byteIds[b];
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
    const b = this.bytes.subarray(this.offsets[id], this.offsets[id + 1]);
    // The dummy-prefix space of the first piece after BOS is not part of the text.
    return this.opts.addSpacePrefix && prev === this.opts.bosId && b[0] === 0x20 ? b.subarray(1) : b;
  }
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
export function bpeTokenizerJson(pieces: string[], types: ArrayLike<number>, merges: string[], pre: string, source: string): object {
  if (!(pre in PRE_TOKENIZERS)) {
    throw new Error(`${source}: unsupported tokenizer.ggml.pre ${JSON.stringify(pre)} (supported: ${Object.keys(PRE_TOKENIZERS).join(', ')})`);
  }
  const regex = PRE_TOKENIZERS[pre];
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: regex === null };
  const vocab: Record<string, number> = Object.create(null);
  pieces.forEach((p, id) => { if (!(p in vocab)) vocab[p] = id; });
  const added = pieces.flatMap((p, id) =>
    types[id] === TOKEN_TYPE.CONTROL || types[id] === TOKEN_TYPE.USER_DEFINED
      ? [{ id, content: p, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }]
      : []);
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
      fuse_unk: false, byte_fallback: false, ignore_merges: pre === 'llama-bpe' || pre === 'llama3', vocab, merges,
    },
  };
}

/** The tokenizer described by a GGUF file's `tokenizer.*` metadata, or null when it has none. */
export function loadGgufTokenizer(f: GgufFile): Tokenizer | null {
  const src = f.path;
  const model = f.get('tokenizer.ggml.model');
  if (model === undefined) return null;
  const strings = (key: string, required: boolean): string[] | null => {
    const v = f.get(key);
    if (v === undefined && !required) return null;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`${src}: missing or invalid ${key} (an array of strings)`);
    return v as string[];
  };
  const pieces = strings('tokenizer.ggml.tokens', true)!;
  const n = pieces.length;
  const numbers = (key: string): GgufValue[] | null => {
    const v = f.get(key);
    if (v === undefined) return null;
    if (!Array.isArray(v) || v.length !== n || !v.every((x) => typeof x === 'number')) throw new Error(`${src}: ${key} must hold ${n} numbers`);
    return v;
  };
  const types = Uint8Array.from((numbers('tokenizer.ggml.token_type') ?? new Array(n).fill(TOKEN_TYPE.NORMAL)) as number[]);
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
    const scores = Float32Array.from((numbers('tokenizer.ggml.scores') ?? new Array(n).fill(0)) as number[]);
    return new SpmTokenizer(pieces, scores, types, {
      bosId, unkId: id('tokenizer.ggml.unknown_token_id'),
      addBos: flag('tokenizer.ggml.add_bos_token', true),
      addSpacePrefix: flag('tokenizer.ggml.add_space_prefix', true),
      stopIds, chatTemplate,
    });
  }
  if (model === 'gpt2') {
    const merges = strings('tokenizer.ggml.merges', true)!;
    const pre = f.get('tokenizer.ggml.pre') ?? 'default';
    if (typeof pre !== 'string') throw new Error(`${src}: tokenizer.ggml.pre must be a string`);
    let lib: HfLibTokenizer;
    try {
      lib = new HfLibTokenizer(bpeTokenizerJson(pieces, types, merges, pre, src), { clean_up_tokenization_spaces: false });
    } catch (e) {
      throw new Error(`${src}: cannot build the BPE tokenizer (${(e as Error).message.replace(/\s+/g, ' ')})`);
    }
    return new HfTokenizer(lib, { bosId: flag('tokenizer.ggml.add_bos_token', false) ? bosId : null, stopIds, chatTemplate });
  }
  throw new Error(`${src}: unsupported tokenizer.ggml.model ${JSON.stringify(model)} (supported: llama, gpt2)`);
}
