import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { endianness } from 'node:os';
import { bf16Bits } from '../../backend/js/kernels.js';
import { f16Table } from '../quant/formats.js';
import { printable } from '../../tokenizer/tokenizer.js';

/** The floating-point dtypes we load (converted to f32) and write. */
export type FloatDtype = 'F32' | 'F16' | 'BF16';

export interface TensorData {
  dtype: FloatDtype;
  shape: number[];
  data: Float32Array;
}

/** One tensor's header entry; `start`/`end` are absolute byte offsets in the file. */
export interface TensorEntry {
  dtype: string;
  shape: number[];
  start: number;
  end: number;
}

/** Bytes per element of every dtype the safetensors format defines (to check offsets). */
const DTYPE_BYTES = new Map<string, number>([
  ['BOOL', 1], ['U8', 1], ['I8', 1], ['F8_E4M3', 1], ['F8_E5M2', 1],
  ['U16', 2], ['I16', 2], ['F16', 2], ['BF16', 2],
  ['U32', 4], ['I32', 4], ['F32', 4],
  ['U64', 8], ['I64', 8], ['F64', 8],
]);

/** A header is JSON text; real ones are well under 10 MB even for thousands of tensors. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** fs reads are capped at 2 GiB − 1 per call. */
const MAX_READ = 1 << 30;

function checkHostEndianness(): void {
  // Tensors are read straight into Float32Array memory, which is host-endian.
  if (endianness() !== 'LE') throw new Error('safetensors: big-endian hosts are not supported');
}

const errnoText = (e: unknown) => (e as NodeJS.ErrnoException).code ?? String(e);

/**
 * An open safetensors file whose header has been fully validated: every tensor lies inside
 * the file, no two overlap, and each byte range matches its shape × dtype size. Tensors are
 * read on demand, straight into their destination arrays.
 */
export class SafetensorsFile {
  readonly tensors: ReadonlyMap<string, TensorEntry>;
  readonly metadata: Readonly<Record<string, string>>;
  private fd: number | null;

  private constructor(readonly path: string, fd: number, tensors: Map<string, TensorEntry>, metadata: Record<string, string>) {
    this.fd = fd;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  static open(path: string): SafetensorsFile {
    checkHostEndianness();
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new Error(`${path}: cannot open safetensors file (${errnoText(e)})`);
    }
    try {
      const { tensors, metadata } = readHeader(path, fd);
      return new SafetensorsFile(path, fd, tensors, metadata);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** The tensor converted to f32; throws naming the file for a missing tensor or unsupported dtype. */
  read(name: string): Float32Array {
    if (this.fd === null) throw new Error(`${this.path}: file already closed`);
    const t = this.tensors.get(name);
    if (!t) throw new Error(`${this.path}: missing tensor ${name}`);
    const n = t.shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    const bytes = new Uint8Array(out.buffer);
    switch (t.dtype) {
      case 'F32':
        readFully(this.path, this.fd, bytes, t.start, t.end - t.start);
        break;
      case 'F16':
      case 'BF16': {
        // The 2-byte values land in the upper half of the destination and are widened in place
        // front to back: writing element i only touches source elements already read.
        readFully(this.path, this.fd, bytes.subarray(2 * n), t.start, 2 * n);
        const src = new Uint16Array(out.buffer, 2 * n, n);
        if (t.dtype === 'BF16') {
          const dst = new Int32Array(out.buffer); // bf16 is the upper half of an f32
          for (let i = 0; i < n; i++) dst[i] = src[i] << 16;
        } else {
          const table = f16Table();
          for (let i = 0; i < n; i++) out[i] = table[src[i]];
        }
        break;
      }
      default:
        throw new Error(`${this.path}: tensor ${name} has dtype ${t.dtype}; supported: F32, F16, BF16`);
    }
    return out;
  }

  /**
   * The tensor rounded to bf16 bits (to nearest even), read through a small buffer: no f32 copy
   * of the tensor is made (a freed one would stay in the process's heap). BF16 reads as stored.
   */
  readAsBf16(name: string): Uint16Array {
    if (this.fd === null) throw new Error(`${this.path}: file already closed`);
    const t = this.tensors.get(name);
    if (!t) throw new Error(`${this.path}: missing tensor ${name}`);
    if (t.dtype === 'BF16') return this.readBf16(name);
    if (t.dtype !== 'F32' && t.dtype !== 'F16') throw new Error(`${this.path}: tensor ${name} has dtype ${t.dtype}; supported: F32, F16, BF16`);
    const n = t.shape.reduce((a, b) => a * b, 1), width = t.dtype === 'F32' ? 4 : 2;
    const out = new Uint16Array(n), step = 1 << 16, raw = new Uint8Array(step * width);
    const bits = new Uint32Array(raw.buffer), halves = new Uint16Array(raw.buffer);
    // f16 → bf16 through the exact f32 of each f16.
    const table = width === 2 ? Uint16Array.from(new Uint32Array(f16Table().buffer), bf16Bits) : null;
    for (let i = 0; i < n; i += step) {
      const len = Math.min(step, n - i);
      readFully(this.path, this.fd, raw.subarray(0, len * width), t.start + i * width, len * width);
      if (table) for (let j = 0; j < len; j++) out[i + j] = table[halves[j]];
      else for (let j = 0; j < len; j++) out[i + j] = bf16Bits(bits[j]);
    }
    return out;
  }

  /** A BF16 tensor's bits as stored (no conversion); throws for any other dtype. */
  readBf16(name: string): Uint16Array {
    if (this.fd === null) throw new Error(`${this.path}: file already closed`);
    const t = this.tensors.get(name);
    if (!t) throw new Error(`${this.path}: missing tensor ${name}`);
    if (t.dtype !== 'BF16') throw new Error(`${this.path}: tensor ${name} has dtype ${t.dtype}, not BF16`);
    const out = new Uint16Array((t.end - t.start) / 2);
    readFully(this.path, this.fd, new Uint8Array(out.buffer), t.start, t.end - t.start);
    return out;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

function readFully(path: string, fd: number, dst: Uint8Array, position: number, length: number): void {
  let done = 0;
  while (done < length) {
    const got = readSync(fd, dst, done, Math.min(MAX_READ, length - done), position + done);
    if (got <= 0) throw new Error(`${path}: unexpected end of file at byte ${position + done}`);
    done += got;
  }
}

function readHeader(path: string, fd: number): { tensors: Map<string, TensorEntry>; metadata: Record<string, string> } {
  const size = fstatSync(fd).size;
  if (size < 8) throw new Error(`${path}: truncated safetensors file: ${size} bytes, smaller than the 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  readFully(path, fd, lenBuf, 0, 8);
  const headerLen = lenBuf.readBigUInt64LE(0);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) throw new Error(`${path}: absurd safetensors header length ${headerLen} (limit ${MAX_HEADER_BYTES} bytes)`);
  if (headerLen > BigInt(size - 8)) throw new Error(`${path}: safetensors header claims ${headerLen} bytes but the file has only ${size - 8} after the length field`);
  const hl = Number(headerLen);
  const headerBuf = Buffer.alloc(hl);
  readFully(path, fd, headerBuf, 8, hl);
  let header: unknown;
  try {
    header = JSON.parse(headerBuf.toString('utf8'));
  } catch (e) {
    throw new Error(`${path}: safetensors header is not valid JSON (${printable((e as Error).message)})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new Error(`${path}: safetensors header is not a JSON object`);

  const dataStart = 8 + hl;
  const dataBytes = size - dataStart;
  const tensors = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(path, raw);
      continue;
    }
    tensors.set(name, parseEntry(path, name, raw, dataStart, dataBytes));
  }
  const sorted = [...tensors.entries()].sort((a, b) => a[1].start - b[1].start || a[1].end - b[1].end);
  for (let i = 1; i < sorted.length; i++) {
    const [pn, p] = sorted[i - 1], [cn, c] = sorted[i];
    if (c.start < p.end) throw new Error(`${path}: tensors ${pn} and ${cn} overlap in the data section`);
  }
  return { tensors, metadata };
}

function parseMetadata(path: string, raw: unknown): Record<string, string> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${path}: __metadata__ is not an object`);
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'string') throw new Error(`${path}: __metadata__.${k} is not a string`);
  }
  return Object.fromEntries(Object.entries(raw));
}

function parseEntry(path: string, name: string, raw: unknown, dataStart: number, dataBytes: number): TensorEntry {
  const bad = (what: string) => new Error(`${path}: tensor ${name}: ${what}`);
  if (typeof raw !== 'object' || raw === null) throw bad('header entry is not an object');
  const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
  if (typeof dtype !== 'string') throw bad('missing dtype');
  const width = DTYPE_BYTES.get(dtype);
  if (width === undefined) throw bad(`unknown dtype ${JSON.stringify(dtype)}`);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad(`invalid shape ${JSON.stringify(shape)}`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || offsets[0] > offsets[1]) {
    throw bad(`invalid data_offsets ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  if (end > dataBytes) throw bad(`data_offsets [${begin}, ${end}] exceed the ${dataBytes} data bytes in the file`);
  // end ≤ file size bounds the element count, so the product below cannot be absurd.
  const numel = (shape as number[]).reduce((a, b) => a * b, 1);
  if (numel * width !== end - begin) throw bad(`shape [${shape.join(', ')}] × ${dtype} needs ${numel * width} bytes but data_offsets span ${end - begin}`);
  return { dtype, shape: shape as number[], start: dataStart + begin, end: dataStart + end };
}

/** Reads every tensor of a file (converted to f32), with the file's metadata. */
export function readSafetensors(path: string): { tensors: Record<string, TensorData>; metadata: Record<string, string> } {
  const f = SafetensorsFile.open(path);
  try {
    // fromEntries keeps a tensor named "__proto__" an ordinary key.
    const tensors = Object.fromEntries([...f.tensors].map(([name, t]) => [name, { dtype: t.dtype as FloatDtype, shape: t.shape, data: f.read(name) }]));
    return { tensors, metadata: { ...f.metadata } };
  } finally {
    f.close();
  }
}

/**
 * Writes tensors in the safetensors format, each converted from f32 to its dtype with
 * round-to-nearest-even. The header is padded with spaces to 8 bytes, as the reference
 * implementation does, so data stays aligned.
 */
export function writeSafetensors(path: string, tensors: Record<string, TensorData>, metadata?: Record<string, string>): void {
  checkHostEndianness();
  const entries: [string, unknown][] = metadata ? [['__metadata__', metadata]] : [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) throw new Error(`${path}: tensor ${name} has ${t.data.length} values but shape [${t.shape.join(', ')}]`);
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') throw new Error(`${path}: tensor ${name}: cannot write dtype ${t.dtype}`);
    const bytes = numel * (t.dtype === 'F32' ? 4 : 2);
    entries.push([name, { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] }]);
    offset += bytes;
  }
  let json = JSON.stringify(Object.fromEntries(entries));
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const jsonBuf = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(jsonBuf.length));

  const fd = openSync(path, 'w');
  try {
    writeSync(fd, lenBuf);
    writeSync(fd, jsonBuf);
    for (const t of Object.values(tensors)) {
      const data = t.dtype === 'F32' ? t.data : t.dtype === 'F16' ? toF16(t.data) : toBf16(t.data);
      writeSync(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    }
  } finally {
    closeSync(fd);
  }
}

/** f32 → IEEE half, round to nearest even (overflow → ±Inf, NaN kept). */
function toF16(x: Float32Array): Uint16Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const b = bits[i];
    const sign = (b >>> 16) & 0x8000;
    const exp = (b >>> 23) & 0xff;
    const mant = b & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 112; // rebias 127 → 15
    let h: number;
    if (e >= 0x1f) h = 0x7c00;
    else if (e > 0) {
      h = (e << 10) | (mant >>> 13);
      const rem = mant & 0x1fff;
      // A carry out of the mantissa correctly bumps the exponent (up to Inf).
      if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
    } else if (e >= -10) {
      // Subnormal half: value = m · 2^-24.
      const full = mant | 0x800000;
      const shift = 14 - e;
      h = full >>> shift;
      const rem = full & ((1 << shift) - 1), halfway = 1 << (shift - 1);
      if (rem > halfway || (rem === halfway && (h & 1))) h++;
    } else h = 0;
    out[i] = sign | h;
  }
  return out;
}

/** f32 → bfloat16, round to nearest even (NaN kept quiet). */
function toBf16(x: Float32Array): Uint16Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const b = bits[i];
    if ((b & 0x7f800000) === 0x7f800000 && b & 0x7fffff) out[i] = (b >>> 16) | 0x40;
    else out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}
