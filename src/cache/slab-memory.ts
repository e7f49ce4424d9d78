import { KV_DTYPES, type KvFormat } from './format.js';
import type { PageMemory, PageRegion } from './kv-cache.js';

/** What SlabMemory needs from the native addon (native/addon.cc). */
export interface SlabSource {
  /**
   * An ArrayBuffer over `bytes` of fresh anonymous memory, unmapped when collected, and the id
   * that names it in page addresses — unique in the process, whatever thread asks (the addon's
   * slab table is shared by every worker that loads it).
   */
  kvSlab(bytes: number): { buffer: ArrayBuffer; id: number };
  /** Hands the whole OS pages [offset, offset + bytes) of a slab back (its RSS falls now). */
  kvRelease(slab: ArrayBuffer, offset: number, bytes: number): void;
  /** The OS page size. */
  kvOsPage(): number;
  /** Row encoder (native/kv_encode.c): dtype is the index in KV_DTYPES. Absent from older builds. */
  kvEncodeRows?(dtype: number, src: Float32Array, srcOffset: number, srcStride: number, rows: number, headDim: number, block: number, blockBytes: number, dst: Uint8Array, dstOffset: number, rowBytes: number): void;
}

/** Bytes of one slab (a slab holds pages of one size). */
const SLAB_BYTES = 2 << 20;
/** Addresses are slab · 2³² + byte offset. */
const SLAB_STRIDE = 2 ** 32;

interface Slab {
  readonly id: number;
  readonly buffer: ArrayBuffer;
  readonly bytes: number;
  /** Per slot: whether a page holds it. */
  readonly used: Uint8Array;
  /** Free slots, lowest last (so pages pack at the front of the slab). */
  readonly free: number[];
}

/**
 * KV cache pages in slabs of memory that the OS takes back page by page. A page an ArrayBuffer
 * of its own is ~33 KB on the small shape: below malloc's mmap threshold, so freed pages stay in
 * the heap and the process RSS barely falls after a press evicts them. Here a page given back
 * returns its whole OS pages at once (with those it shares with free neighbours); the slab's
 * slot is reused by the next page of its size.
 */
export class SlabMemory implements PageMemory {
  readonly #src: SlabSource;
  readonly #os: number;
  readonly #slabs = new Map<number, Slab>();
  /** Per page size: the slabs that have a free slot. */
  readonly #open = new Map<number, Slab[]>();

  readonly encodeRows?: PageMemory['encodeRows'];

  constructor(src: SlabSource) {
    this.#src = src;
    this.#os = src.kvOsPage();
    const encode = src.kvEncodeRows?.bind(src);
    if (encode) {
      this.encodeRows = (f: KvFormat, x: Float32Array, so: number, stride: number, rows: number, dst: Uint8Array, at: number) =>
        encode(KV_DTYPES.indexOf(f.dtype), x, so, stride, rows, f.headDim, f.block, f.blockBytes, dst, at, f.rowBytes);
    }
  }

  alloc(bytes: number): PageRegion {
    let open = this.#open.get(bytes);
    if (!open) this.#open.set(bytes, (open = []));
    let slab = open[open.length - 1];
    if (!slab) {
      const slots = Math.max(1, Math.floor(SLAB_BYTES / bytes)), size = Math.ceil((slots * bytes) / this.#os) * this.#os;
      const { buffer, id } = this.#src.kvSlab(size);
      slab = { id, buffer, bytes, used: new Uint8Array(slots), free: Array.from({ length: slots }, (_, i) => slots - 1 - i) };
      this.#slabs.set(id, slab);
      open.push(slab);
    }
    const slot = slab.free.pop()!;
    slab.used[slot] = 1;
    if (slab.free.length === 0) open.pop();
    return { buffer: slab.buffer, byteOffset: slot * bytes, address: slab.id * SLAB_STRIDE + slot * bytes };
  }

  free(address: number, bytes: number): void {
    const slab = this.#slabs.get(Math.floor(address / SLAB_STRIDE)), start = address % SLAB_STRIDE, slot = start / bytes;
    if (!slab || slab.bytes !== bytes || !slab.used[slot]) throw new Error(`SlabMemory: no page of ${bytes} bytes at ${address}`);
    slab.used[slot] = 0;
    if (slab.free.length === 0) this.#open.get(bytes)!.push(slab);
    // Kept descending by a binary insertion: sorting the whole list on every free cost up to
    // 3 ms of CPU to release a 341-token answer's pages on stories260K.
    const free = slab.free;
    let at = 0, top = free.length;
    while (at < top) {
      const mid = (at + top) >>> 1;
      if (free[mid] > slot) at = mid + 1;
      else top = mid;
    }
    free.splice(at, 0, slot);
    // The OS pages wholly inside this page, and those it shares with a free neighbour.
    if (bytes < this.#os) return;
    const os = this.#os, end = start + bytes;
    const lo = slot === 0 || !slab.used[slot - 1] ? Math.floor(start / os) * os : Math.ceil(start / os) * os;
    const hi = slot === slab.used.length - 1 || !slab.used[slot + 1] ? Math.min(Math.ceil(end / os) * os, slab.buffer.byteLength) : Math.floor(end / os) * os;
    if (hi > lo) this.#src.kvRelease(slab.buffer, lo, hi - lo);
  }
}
