import { PackedStrings } from '../../tokenizer/packed.js';
import { printable } from '../../tokenizer/tokenizer.js';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { endianness } from 'node:os';
import { blockFormat, dequantize, ggmlTypeName, type BlockFormat } from '../quant/formats.js';

/**
 * A GGUF file (versions 2 and 3): header, metadata and tensor infos, every count, length, offset
 * and shape checked against the file size before anything is allocated from it. Tensor data is
 * read on demand, one tensor at a time, straight from the file descriptor.
 *
 * Layout (little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count, then the
 * metadata key/values, the tensor infos (name, u32 n_dims, u64 dims[n_dims] innermost first,
 * u32 ggml type, u64 offset into the data section), padding to `general.alignment` (default 32),
 * and the data section.
 */

/** A metadata value: numbers (u64/i64 as bigint only beyond 2^53), strings, booleans, arrays (read when asked for). */
export type GgufValue = number | bigint | string | boolean | GgufArray;

export interface GgufTensorInfo {
  name: string;
  /** Dimensions innermost first (ggml's ne[]): a [rows][cols] matrix is [cols, rows]. */
  dims: number[];
  /** ggml type id. */
  type: number;
  typeName: string;
  elements: number;
  /** Absolute byte range in the file. */
  start: number;
  bytes: number;
}

const MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const MAX_DIMS = 4; // ggml tensors have at most 4 dimensions
const DEFAULT_ALIGNMENT = 32;
/** Bytes read from the file per refill of the header buffer. */
const CHUNK = 1 << 20;
const MAX_READ = 1 << 30;

/** Smallest encoding of each metadata value type (to bound array counts before reading them). */
const VALUE_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: 8, 9: 12, 10: 8, 11: 8, 12: 8 };

const errnoText = (e: unknown) => (e as NodeJS.ErrnoException).code ?? String(e);

/** A bad header. Names read from the file may hold any bytes: the message shows them escaped and clipped, on one line. */
class GgufFormatError extends Error {
  constructor(message: string) {
    const line = printable(message);
    super(line.length > 300 ? `${line.slice(0, 300)}…` : line);
  }
}

/** Sequential reader over the header, refilled from the file in chunks (never the whole file). */
class HeaderCursor {
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  pos = 0;

  constructor(private readonly fd: number, readonly size: number) {}

  /** Bytes left in the file from the cursor. */
  get remaining(): number {
    return this.size - this.pos;
  }

  private need(n: number, what: string): number {
    if (n > this.remaining) throw new GgufFormatError(`truncated: ${what} at byte ${this.pos} needs ${n} bytes, ${this.remaining} left`);
    const end = this.pos + n;
    if (this.pos < this.bufStart || end > this.bufStart + this.buf.length) {
      const len = Math.min(this.size - this.pos, Math.max(n, CHUNK));
      this.buf = Buffer.alloc(len);
      readFully(this.fd, this.buf, this.pos, len);
      this.bufStart = this.pos;
    }
    const at = this.pos - this.bufStart;
    this.pos = end;
    return at;
  }

  // need() may replace the buffer, so it runs before the buffer is read.
  u8(what: string): number { const at = this.need(1, what); return this.buf.readUInt8(at); }
  i8(what: string): number { const at = this.need(1, what); return this.buf.readInt8(at); }
  u16(what: string): number { const at = this.need(2, what); return this.buf.readUInt16LE(at); }
  i16(what: string): number { const at = this.need(2, what); return this.buf.readInt16LE(at); }
  u32(what: string): number { const at = this.need(4, what); return this.buf.readUInt32LE(at); }
  i32(what: string): number { const at = this.need(4, what); return this.buf.readInt32LE(at); }
  f32(what: string): number { const at = this.need(4, what); return this.buf.readFloatLE(at); }
  f64(what: string): number { const at = this.need(8, what); return this.buf.readDoubleLE(at); }
  u64(what: string): bigint { const at = this.need(8, what); return this.buf.readBigUInt64LE(at); }
  i64(what: string): bigint { const at = this.need(8, what); return this.buf.readBigInt64LE(at); }

  /** A u64 that must stay ≤ `limit` (something the file can hold, so below 2^53). */
  count(what: string, limit: number): number {
    const at = this.need(8, what);
    const lo = this.buf.readUInt32LE(at), hi = this.buf.readUInt32LE(at + 4);
    // Inexact beyond 2^53, where it is past any limit anyway; read as two halves, no bigint per string.
    const v = hi * 2 ** 32 + lo;
    if (v > limit) throw new GgufFormatError(`${what} ${(BigInt(hi) << 32n) | BigInt(lo)} is impossible in a file of ${this.size} bytes`);
    return v;
  }

  /** Moves past n bytes (checked against the file; nothing is read). */
  skip(n: number, what: string): void {
    if (n > this.remaining) throw new GgufFormatError(`truncated: ${what} at byte ${this.pos} needs ${n} bytes, ${this.remaining} left`);
    this.pos += n;
  }

  /** Moves past n length-prefixed strings, each length checked; no message is built unless one fails. */
  skipStrings(n: number, key: string): void {
    for (let i = 0; i < n; i++) {
      if (this.remaining < 8) throw new GgufFormatError(`truncated: metadata ${key} string ${i} length at byte ${this.pos} needs 8 bytes, ${this.remaining} left`);
      const at = this.need(8, key);
      const lo = this.buf.readUInt32LE(at), hi = this.buf.readUInt32LE(at + 4);
      if (hi !== 0 || lo > this.remaining) throw new GgufFormatError(`metadata ${key} string ${i} length ${(BigInt(hi) << 32n) | BigInt(lo)} is impossible in a file of ${this.size} bytes`);
      this.pos += lo;
    }
  }

  string(what: string): string {
    const n = this.count(`${what} length`, this.remaining - 8);
    if (n === 0) return '';
    const at = this.need(n, what);
    return this.buf.toString('utf8', at, at + n);
  }
}

function readFully(fd: number, dst: Uint8Array, position: number, length: number): void {
  let done = 0;
  while (done < length) {
    const got = readSync(fd, dst, done, Math.min(MAX_READ, length - done), position + done);
    if (got <= 0) throw new GgufFormatError(`unexpected end of file at byte ${position + done}`);
    done += got;
  }
}

/** The numeric metadata types by type id: their name and the typed array that holds them. */
const NUMERIC: Record<number, { name: string; make: (buf: ArrayBuffer, n: number) => GgufNumbers }> = {
  0: { name: 'u8', make: (b, n) => new Uint8Array(b, 0, n) },
  1: { name: 'i8', make: (b, n) => new Int8Array(b, 0, n) },
  2: { name: 'u16', make: (b, n) => new Uint16Array(b, 0, n) },
  3: { name: 'i16', make: (b, n) => new Int16Array(b, 0, n) },
  4: { name: 'u32', make: (b, n) => new Uint32Array(b, 0, n) },
  5: { name: 'i32', make: (b, n) => new Int32Array(b, 0, n) },
  6: { name: 'f32', make: (b, n) => new Float32Array(b, 0, n) },
  7: { name: 'bool', make: (b, n) => new Uint8Array(b, 0, n) },
  10: { name: 'u64', make: (b, n) => new BigUint64Array(b, 0, n) },
  11: { name: 'i64', make: (b, n) => new BigInt64Array(b, 0, n) },
  12: { name: 'f64', make: (b, n) => new Float64Array(b, 0, n) },
};
const STRING = 8;

/** A numeric metadata array as the file stores it (bool: 0 or 1). */
export type GgufNumbers = Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array | BigUint64Array | BigInt64Array;

/** The open file descriptor, shared by the file and its metadata arrays; null once closed. */
class FileHandle {
  constructor(readonly path: string, public fd: number | null) {}

  /** `bytes` bytes at `start`, into fresh memory; errors name the file and `what`. */
  read(start: number, bytes: number, what: string): Uint8Array {
    if (this.fd === null) throw new Error(`${this.path}: file already closed (reading ${what})`);
    const out = new Uint8Array(bytes);
    try {
      readFully(this.fd, out, start, bytes);
    } catch (e) {
      throw new Error(`${this.path}: reading ${what}: ${(e as Error).message}`);
    }
    return out;
  }
}

/**
 * A metadata array. Its extent was checked when the header was read; its values are read from
 * the file only when asked for, straight into a typed array (numbers) or one byte buffer
 * (strings), and are not kept: a 49k-token vocabulary parsed into JS values held 4.5 MiB of V8
 * heap, and V8 kept 9 MiB more of pages touched while building them.
 */
export class GgufArray {
  /** @internal */
  constructor(
    private readonly file: FileHandle,
    readonly key: string,
    /** GGUF value type id of the elements (8: string). */
    readonly elementType: number,
    readonly length: number,
    /** Absolute byte range of the elements in the file. */
    private readonly start: number,
    private readonly end: number,
  ) {}

  /** Element type name: u8, i8, u16, i16, u32, i32, f32, bool, string, u64, i64, f64. */
  get typeName(): string {
    return this.elementType === STRING ? 'string' : NUMERIC[this.elementType].name;
  }

  /** Numeric elements as stored (bool as 0/1 bytes); throws for a string array. */
  numbers(): GgufNumbers {
    const kind = NUMERIC[this.elementType];
    if (!kind) throw new Error(`${this.file.path}: metadata ${this.key} is an array of ${this.typeName}, not numbers`);
    const raw = this.file.read(this.start, this.end - this.start, `metadata ${this.key}`);
    if (this.elementType === 7 && raw.some((b) => b > 1)) throw new Error(`${this.file.path}: metadata ${this.key}: invalid bool ${raw.find((b) => b > 1)}`);
    return kind.make(raw.buffer as ArrayBuffer, this.length);
  }

  /** String elements packed as UTF-8 bytes and offsets; throws for a numeric array. */
  strings(): PackedStrings {
    if (this.elementType !== STRING) throw new Error(`${this.file.path}: metadata ${this.key} is an array of ${this.typeName}, not strings`);
    const what = `metadata ${this.key}`;
    const raw = this.file.read(this.start, this.end - this.start, what);
    // Each element is a u64 length and its bytes: the bytes are moved down over the lengths.
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const offsets = new Uint32Array(this.length + 1);
    let pos = 0, at = 0;
    for (let i = 0; i < this.length; i++) {
      const n = pos + 8 <= raw.length && view.getUint32(pos + 4, true) === 0 ? view.getUint32(pos, true) : -1;
      // The header was checked when opened; a file rewritten since then is caught here.
      if (n < 0 || n > raw.length - pos - 8) throw new Error(`${this.file.path}: ${what}: string ${i} runs past the array (file changed since it was opened?)`);
      raw.copyWithin(at, pos + 8, pos + 8 + n);
      at += n;
      pos += 8 + n;
      offsets[i + 1] = at;
    }
    return new PackedStrings(raw.slice(0, at), offsets);
  }
}

/** Integers as numbers where exact, bigint beyond 2^53. */
const int64 = (v: bigint): number | bigint => (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);

function readValue(c: HeaderCursor, file: FileHandle, type: number, key: string): GgufValue {
  switch (type) {
    case 0: return c.u8(key);
    case 1: return c.i8(key);
    case 2: return c.u16(key);
    case 3: return c.i16(key);
    case 4: return c.u32(key);
    case 5: return c.i32(key);
    case 6: return c.f32(key);
    case 7: {
      const b = c.u8(key);
      if (b > 1) throw new GgufFormatError(`metadata ${key}: invalid bool ${b}`);
      return b === 1;
    }
    case 8: return c.string(key);
    case 9: {
      const elemType = c.u32(`${key} element type`);
      if (elemType === 9) throw new GgufFormatError(`metadata ${key}: nested arrays are not supported`);
      const width = VALUE_BYTES[elemType];
      if (width === undefined) throw new GgufFormatError(`metadata ${key}: unknown array element type ${elemType}`);
      const n = c.count(`metadata ${key} array length`, Math.floor(c.remaining / width));
      const start = c.pos;
      if (elemType === STRING) {
        // Strings are walked (their lengths checked) but not decoded.
        c.skipStrings(n, key);
        if (c.pos - start > 0xffffffff) throw new GgufFormatError(`metadata ${key}: ${c.pos - start} bytes of strings (at most 4 GiB)`);
      } else {
        c.skip(n * width, `metadata ${key}`);
      }
      return new GgufArray(file, key, elemType, n, start, c.pos);
    }
    case 10: return int64(c.u64(key));
    case 11: return int64(c.i64(key));
    case 12: return c.f64(key);
    default:
      throw new GgufFormatError(`metadata ${key}: unknown value type ${type}`);
  }
}

/** An open GGUF file whose header has been fully validated. */
export class GgufFile {
  private constructor(
    readonly path: string,
    private readonly file: FileHandle,
    readonly version: number,
    readonly metadata: ReadonlyMap<string, GgufValue>,
    readonly tensors: ReadonlyMap<string, GgufTensorInfo>,
    readonly dataStart: number,
    readonly size: number,
  ) {}

  static open(path: string): GgufFile {
    if (endianness() !== 'LE') throw new Error(`${path}: big-endian hosts are not supported`);
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new Error(`${path}: cannot open GGUF file (${errnoText(e)})`);
    }
    try {
      return GgufFile.parse(path, fd);
    } catch (e) {
      closeSync(fd);
      if (e instanceof GgufFormatError) throw new Error(`${path}: invalid GGUF file: ${e.message}`);
      throw e;
    }
  }

  private static parse(path: string, fd: number): GgufFile {
    const size = fstatSync(fd).size;
    const c = new HeaderCursor(fd, size);
    const file = new FileHandle(path, fd);
    if (size < 24) throw new GgufFormatError(`${size} bytes, smaller than the 24-byte header`);
    const magic = c.u32('magic');
    if (magic !== MAGIC) throw new GgufFormatError('no GGUF magic (not a GGUF file)');
    const version = c.u32('version');
    if (version !== 2 && version !== 3) throw new GgufFormatError(`version ${version} is not supported (only 2 and 3)`);
    // Each tensor info takes at least 8 (name) + 4 + 4 + 8 bytes, each key/value at least 8 + 4 + 1.
    const tensorCount = c.count('tensor count', Math.floor(c.remaining / 24));
    const kvCount = c.count('metadata count', Math.floor(c.remaining / 13));

    const metadata = new Map<string, GgufValue>();
    for (let i = 0; i < kvCount; i++) {
      const key = c.string(`metadata key ${i}`);
      if (metadata.has(key)) throw new GgufFormatError(`duplicate metadata key ${key}`);
      metadata.set(key, readValue(c, file, c.u32(`${key} type`), key));
    }
    const alignment = metadata.get('general.alignment') ?? DEFAULT_ALIGNMENT;
    if (typeof alignment !== 'number' || !Number.isInteger(alignment) || alignment <= 0 || alignment & (alignment - 1) || alignment > 1 << 20) {
      throw new GgufFormatError(`general.alignment ${String(alignment)} is not a power of two`);
    }

    const raw: { name: string; dims: number[]; type: number; offset: number }[] = [];
    const names = new Set<string>();
    for (let i = 0; i < tensorCount; i++) {
      const name = c.string(`tensor ${i} name`);
      if (names.has(name)) throw new GgufFormatError(`duplicate tensor ${name}`);
      names.add(name);
      const nDims = c.u32(`tensor ${name} dimension count`);
      if (nDims < 1 || nDims > MAX_DIMS) throw new GgufFormatError(`tensor ${name}: ${nDims} dimensions (1 to ${MAX_DIMS} allowed)`);
      const dims: number[] = [];
      for (let d = 0; d < nDims; d++) dims.push(c.count(`tensor ${name} dimension ${d}`, size));
      const type = c.u32(`tensor ${name} type`);
      const offset = c.count(`tensor ${name} offset`, size);
      raw.push({ name, dims, type, offset });
    }
    const dataStart = Math.ceil(c.pos / alignment) * alignment;
    if (dataStart > size) throw new GgufFormatError(`data section starts at byte ${dataStart}, past the end of the ${size}-byte file`);

    const tensors = new Map<string, GgufTensorInfo>();
    for (const t of raw) {
      const where = `tensor ${t.name}`;
      const fmt: BlockFormat | null = blockFormat(t.type);
      const typeName = ggmlTypeName(t.type);
      // Elements: the product is bounded step by step so it never exceeds what the file could hold.
      let elements = 1;
      for (const d of t.dims) {
        elements *= d;
        if (elements > 8 * size) throw new GgufFormatError(`${where}: shape [${t.dims.join(', ')}] is larger than the file`);
      }
      if (t.offset % alignment !== 0) throw new GgufFormatError(`${where}: offset ${t.offset} is not a multiple of the alignment ${alignment}`);
      let bytes = 0;
      if (fmt) {
        if (t.dims[0] % fmt.blockElements !== 0) {
          throw new GgufFormatError(`${where}: row length ${t.dims[0]} is not a multiple of the ${typeName} block of ${fmt.blockElements}`);
        }
        bytes = (elements / fmt.blockElements) * fmt.blockBytes;
        if (t.offset + bytes > size - dataStart) {
          throw new GgufFormatError(`${where}: ${bytes} bytes at data offset ${t.offset} run past the end of the file (${size - dataStart} data bytes)`);
        }
      }
      tensors.set(t.name, { name: t.name, dims: t.dims, type: t.type, typeName, elements, start: dataStart + t.offset, bytes });
    }
    // Tensors of an unknown type have unknown sizes: they may only be rejected when read.
    const sized = [...tensors.values()].filter((t) => blockFormat(t.type)).sort((a, b) => a.start - b.start);
    for (let i = 1; i < sized.length; i++) {
      if (sized[i].start < sized[i - 1].start + sized[i - 1].bytes) throw new GgufFormatError(`tensors ${sized[i - 1].name} and ${sized[i].name} overlap`);
    }
    return new GgufFile(path, file, version, metadata, tensors, dataStart, size);
  }

  /** The raw bytes of a tensor, as stored. */
  readRaw(name: string): Uint8Array {
    const t = this.info(name);
    const out = new Uint8Array(t.bytes);
    this.readInto(t, out);
    return out;
  }

  /**
   * The raw bytes of a tensor of `rows` equal rows, row r of the result being row order[r] of
   * the file: each row read straight into place (no second copy of the tensor).
   */
  readRawRows(name: string, rows: number, order: ArrayLike<number>): Uint8Array {
    return this.readRows(name, rows, 0, rows, order);
  }

  /**
   * Raw bytes of rows [from, from + count) of a tensor of `rows` equal rows; with `order`, row r
   * is row order[r] of the file. Consecutive rows are read at once.
   */
  readRows(name: string, rows: number, from: number, count: number, order?: ArrayLike<number> | null): Uint8Array {
    const t = this.info(name), rb = t.bytes / rows;
    if (!Number.isInteger(rb) || (order && order.length !== rows)) throw new Error(`${this.path}: tensor ${name} does not hold ${order?.length ?? rows} rows`);
    if (!(from >= 0 && count >= 0 && from + count <= rows)) throw new Error(`${this.path}: tensor ${name}: rows ${from}…${from + count} out of range`);
    const out = new Uint8Array(count * rb);
    for (let r = 0; r < count;) {
      const src = order ? order[from + r] : from + r;
      if (!(src >= 0 && src < rows)) throw new Error(`${this.path}: tensor ${name}: row ${src} out of range`);
      let run = 1;
      while (r + run < count && (order ? order[from + r + run] : from + r + run) === src + run) run++;
      this.readInto({ ...t, start: t.start + src * rb, bytes: run * rb }, out.subarray(r * rb, (r + run) * rb));
      r += run;
    }
    return out;
  }

  /**
   * The tensor as f32, dequantized block by block. INTERIM (until quantized weights are kept
   * quantized): quantized tensors become f32 arrays at load.
   */
  readF32(name: string): Float32Array {
    const t = this.info(name);
    const out = new Float32Array(t.elements);
    if (t.type === 0) this.readInto(t, new Uint8Array(out.buffer));
    else dequantize(t.type, this.readRaw(name), out);
    return out;
  }

  info(name: string): GgufTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`${this.path}: missing tensor ${name}`);
    if (!blockFormat(t.type)) throw new Error(`${this.path}: tensor ${name} has type ${t.typeName}, which is not supported (supported: ${supportedList()})`);
    return t;
  }

  close(): void {
    if (this.file.fd !== null) closeSync(this.file.fd);
    this.file.fd = null;
  }

  private readInto(t: GgufTensorInfo, dst: Uint8Array): void {
    if (this.file.fd === null) throw new Error(`${this.path}: file already closed`);
    try {
      readFully(this.file.fd, dst, t.start, t.bytes);
    } catch (e) {
      throw new Error(`${this.path}: reading tensor ${t.name}: ${(e as Error).message}`);
    }
  }

  /** A metadata value by key, or undefined. */
  get(key: string): GgufValue | undefined {
    return this.metadata.get(key);
  }
}

function supportedList(): string {
  const names: string[] = [];
  for (let t = 0; t < 64; t++) if (blockFormat(t)) names.push(ggmlTypeName(t));
  return names.join(', ');
}
