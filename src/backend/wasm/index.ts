import { KV_DTYPES } from '../../cache/format.js';
import type { PageMemory, PageRegion } from '../../cache/kv-cache.js';
import type { AttentionArgs, Backend, PagedAttentionArgs } from '../backend.js';
import { checkAttention, checkMatmul, checkMatmulBf16, checkPagedAttention, checkRmsnorm, checkRope, checkSiluMul } from '../native/checks.js';
import { clampThreads, maxThreads } from '../native/index.js';
import { kernelsWasmBase64 } from './kernels-wasm.js';
import { TASK_ATTENTION, TASK_KV_ATTENTION, TASK_MATMUL, TASK_MATMUL_BF16, WORKER_STACK, type Exports } from './module.js';
import { Pool } from './pool.js';

interface Loaded {
  exports: Exports;
  memory: WebAssembly.Memory;
  pool: Pool;
  regions: LinearMemory;
}

/** Bytes the linear memory grows by at least when KV cache pages need room. */
const PAGE_SLAB = 1 << 20;

/**
 * The linear memory past the module's data and the worker stacks, shared by every WasmBackend of
 * the process: one call arena (the operands of the current kernel call) and the KV cache pages
 * (the PageMemory of Model.newCache), so that paged attention reads the pages where they lie.
 * WebAssembly memory only grows: a page given back is reused by the next page of its size, and
 * an arena that must grow moves to the end and leaves its old room to pages.
 */
class LinearMemory implements PageMemory {
  #arena: number;
  #arenaBytes: number;
  /** Free page regions by size. */
  readonly #free = new Map<number, number[]>();
  /** The memory's buffers that pages were handed out on (a grown memory has a new one). */
  readonly #buffers = new WeakSet<ArrayBufferLike>();
  /** Room not yet handed out: [start, end) byte ranges. */
  readonly #spare: [number, number][] = [];

  constructor(readonly memory: WebAssembly.Memory, start: number) {
    this.#arena = start;
    this.#arenaBytes = memory.buffer.byteLength - start;
  }

  /** Byte address of an arena of at least `bytes` bytes (valid until the next arena call). */
  arena(bytes: number): number {
    if (bytes > this.#arenaBytes) {
      if (this.#arenaBytes > 0) this.#spare.push([this.#arena, this.#arena + this.#arenaBytes]);
      const size = Math.max(bytes, 2 * this.#arenaBytes);
      this.#arena = this.#extend(size);
      this.#arenaBytes = size;
    }
    return this.#arena;
  }

  alloc(bytes: number): PageRegion {
    let address = this.#free.get(bytes)?.pop();
    if (address === undefined) {
      let r = this.#spare.find(([a, b]) => b - a >= bytes);
      if (!r) {
        const size = Math.max(bytes, PAGE_SLAB), start = this.#extend(size);
        this.#spare.push((r = [start, start + size]));
      }
      address = r[0];
      r[0] = align(r[0] + bytes);
      if (r[0] >= r[1]) this.#spare.splice(this.#spare.indexOf(r), 1);
    }
    this.#buffers.add(this.memory.buffer);
    return { buffer: this.memory.buffer, byteOffset: address, address };
  }

  /** Whether `buffer` is (a view of) this memory. */
  owns(buffer: ArrayBufferLike): boolean {
    return this.#buffers.has(buffer);
  }

  free(address: number, bytes: number): void {
    const list = this.#free.get(bytes);
    if (list) list.push(address);
    else this.#free.set(bytes, [address]);
  }

  /** Grows the memory by at least `bytes` at its end; returns the (aligned) start of the new room. */
  #extend(bytes: number): number {
    const start = align(this.memory.buffer.byteLength), need = start + bytes;
    if (need > 4 * 1024 ** 3) throw new RangeError(`wasm backend: ${need} bytes of linear memory are needed, over WebAssembly's 4 GiB`);
    this.memory.grow(Math.ceil((need - this.memory.buffer.byteLength) / 65536));
    return start;
  }
}

export type WasmLoad = { ok: true; module: Loaded } | { ok: false; reason: string };

let cached: WasmLoad | undefined;

/** Compiles the embedded module (≈96 KB) and instantiates it on a shared memory, once per process. */
export function loadWasm(): WasmLoad {
  if (!cached) {
    try {
      const module = new WebAssembly.Module(Buffer.from(kernelsWasmBase64, 'base64'));
      const memory = new WebAssembly.Memory({ initial: 16, maximum: 65536, shared: true });
      const exports = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as Exports;
      const stackBase = align(exports.__heap_base.value as number);
      const workers = maxThreads() - 1;
      const pool = new Pool(module, memory, exports, stackBase, workers);
      cached = { ok: true, module: { exports, memory, pool, regions: new LinearMemory(memory, align(stackBase + workers * WORKER_STACK)) } };
    } catch (e) {
      cached = { ok: false, reason: `WebAssembly SIMD with threads unavailable (${(e as Error).message.split('\n')[0]})` };
    }
  }
  return cached;
}

/** Multiply-adds below which a kernel stays on the calling thread (waking workers costs ~20 µs). */
const PARALLEL_MIN = 1 << 20;

/**
 * The kernels compiled to WebAssembly SIMD128. Each call copies its operands into the shared
 * linear memory (which grows to the largest call and stays), runs there — matmul and
 * attention split across worker threads when big enough — and copies the result back.
 */
export class WasmBackend implements Backend {
  readonly name = 'wasm';
  readonly description: string;
  readonly #w: Exports;
  readonly #mem: WebAssembly.Memory;
  readonly #pool: Pool;
  readonly #regions: LinearMemory;
  readonly #tileRows: number;
  readonly #keyBlock: number;
  #threads: number;
  #f32: Float32Array;
  #i32: Int32Array;
  #u16: Uint16Array;
  /** Next free byte of the current call's layout. */
  #top = 0;

  constructor(m: Loaded, threads = maxThreads(), description = 'WebAssembly SIMD128 kernels') {
    this.#w = m.exports;
    this.#mem = m.memory;
    this.#pool = m.pool;
    this.#regions = m.regions;
    this.#threads = clampThreads(threads);
    this.description = description;
    this.#tileRows = m.exports.tile_rows();
    this.#keyBlock = m.exports.key_block();
    this.#f32 = new Float32Array(m.memory.buffer);
    this.#i32 = new Int32Array(m.memory.buffer);
    this.#u16 = new Uint16Array(m.memory.buffer);
  }

  get threads(): number {
    return this.#threads;
  }

  setThreads(n: number): void {
    this.#threads = clampThreads(n);
  }

  /** Parts to split a kernel of `work` multiply-adds into. */
  #parts(work: number): number {
    return work >= PARALLEL_MIN && this.#threads > 1 ? this.#pool.parts(this.#threads) : 1;
  }

  /** Where the KV cache pages of this backend's models live: its linear memory. */
  get pageMemory(): PageMemory {
    return this.#regions;
  }

  /** Starts a call's layout of `bytes` in the arena, growing the memory if needed. */
  #begin(bytes: number): void {
    this.#top = this.#regions.arena(bytes);
    this.#views();
  }

  /** A grown shared memory hands out a longer buffer; views of the old one stop short. */
  #views(): void {
    const mem = this.#mem;
    if (this.#f32.byteLength !== mem.buffer.byteLength) {
      this.#f32 = new Float32Array(mem.buffer);
      this.#i32 = new Int32Array(mem.buffer);
      this.#u16 = new Uint16Array(mem.buffer);
    }
  }

  /** Reserves `floats` 4-byte slots and returns their byte address. */
  #take(floats: number): number {
    const at = this.#top;
    this.#top = align(at + floats * 4);
    return at;
  }

  #put(src: Float32Array, floats: number): number {
    const at = this.#take(floats);
    this.#f32.set(floats === src.length ? src : src.subarray(0, floats), at >>> 2);
    return at;
  }

  #get(dst: Float32Array, at: number, floats: number): void {
    dst.set(this.#f32.subarray(at >>> 2, (at >>> 2) + floats));
  }

  matmul(out: Float32Array, x: Float32Array, w: Float32Array, m: number, n: number, k: number, bias?: Float32Array | null): void {
    checkMatmul(out, x, w, m, n, k, bias);
    if (m === 0 || n === 0) return;
    const kb = this.#keyBlock;
    const parts = this.#parts(m * n * k);
    const scratch = align(4 * (k * kb + this.#tileRows * kb));
    this.#begin(4 * (m * k + n * k + n + m * n) + parts * scratch + 5 * 64);
    const xo = this.#put(x, m * k), wo = this.#put(w, n * k);
    const bo = bias ? this.#put(bias, n) : 0;
    const oo = this.#take(m * n), so = this.#take((parts * scratch) / 4);
    if (parts === 1) {
      this.#w.matmul(oo, xo, wo, m, n, k, bo, so, so + 4 * k * kb, 0, n);
    } else {
      this.#pool.args.set([oo, xo, wo, m, n, k, bo, so, scratch, kb]);
      this.#pool.run(TASK_MATMUL, parts);
    }
    this.#get(out, oo, m * n);
  }

  matmulBf16(out: Float32Array, x: Float32Array, w: Uint16Array, m: number, n: number, k: number, bias?: Float32Array | null): void {
    checkMatmulBf16(out, x, w, m, n, k, bias);
    if (m === 0 || n === 0) return;
    const parts = this.#parts(m * n * k);
    this.#begin(4 * (m * k + n + m * n) + 2 * n * k + 4 * 64);
    const xo = this.#put(x, m * k);
    // Half the bytes of the f32 weights to copy in, as well as to read.
    const wo = this.#take(Math.ceil((n * k) / 2));
    this.#u16.set(w.length === n * k ? w : w.subarray(0, n * k), wo >>> 1);
    const bo = bias ? this.#put(bias, n) : 0;
    const oo = this.#take(m * n);
    if (parts === 1) {
      this.#w.matmul_bf16(oo, xo, wo, m, n, k, bo, 0, n);
    } else {
      this.#pool.args.set([oo, xo, wo, m, n, k, bo]);
      this.#pool.run(TASK_MATMUL_BF16, parts);
    }
    this.#get(out, oo, m * n);
  }

  rmsnorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, dim: number, eps: number): void {
    checkRmsnorm(out, x, weight, rows, dim, eps);
    const len = rows * dim;
    this.#begin(4 * (2 * len + dim) + 3 * 64);
    const xo = this.#put(x, len), wo = this.#put(weight, dim), oo = this.#take(len);
    this.#w.rmsnorm(oo, xo, wo, rows, dim, eps);
    this.#get(out, oo, len);
  }

  rope(x: Float32Array, rows: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
    checkRope(x, rows, heads, headDim, cos, sin);
    const len = rows * heads * headDim, half = (rows * headDim) / 2;
    this.#begin(4 * (len + 2 * half) + 3 * 64);
    const xo = this.#put(x, len), co = this.#put(cos, half), so = this.#put(sin, half);
    this.#w.rope(xo, rows, heads, headDim, co, so);
    this.#get(x, xo, len);
  }

  siluMul(gate: Float32Array, up: Float32Array, n: number): void {
    checkSiluMul(gate, up, n);
    this.#begin(8 * n + 2 * 64);
    const go = this.#put(gate, n), uo = this.#put(up, n);
    this.#w.silu_mul(go, uo, n);
    this.#get(gate, go, n);
  }

  attention(a: AttentionArgs): void {
    const maxLen = checkAttention(a);
    const { rows, numHeads, numKvHeads: nkv, headDim: hd, lengths } = a;
    if (rows === 0 || numHeads === 0 || hd === 0) return;
    const kb = this.#keyBlock, tr = this.#tileRows;
    const nq = rows * (numHeads / nkv), items = nkv * Math.ceil(nq / tr);
    // Packing the keys pays off once enough query rows share them (as in native/addon.cc).
    const packed = nq >= 2 * tr;
    const qLen = rows * numHeads * hd;
    const sld = Math.ceil(maxLen / kb) * kb + kb;
    let cacheFloats = 0, packedFloats = 0;
    for (let g = 0; g < nkv; g++) {
      cacheFloats += 2 * lengths[g] * hd;
      if (packed) packedFloats += Math.ceil(lengths[g] / kb) * kb * hd;
    }
    const parts = this.#parts(nq * maxLen * hd);
    const scratch = align(4 * tr * sld);
    this.#begin(4 * (2 * qLen + cacheFloats + 4 * nkv + packedFloats) + parts * scratch + (2 * nkv + 8) * 64);
    const qo = this.#put(a.q, qLen), oo = this.#take(qLen);
    const ko = this.#take(nkv), vo = this.#take(nkv), lo = this.#take(nkv), to = this.#take(nkv);
    let off = 0;
    for (let g = 0; g < nkv; g++) {
      this.#i32[(ko >>> 2) + g] = this.#put(a.keys[g], lengths[g] * hd);
      this.#i32[(vo >>> 2) + g] = this.#put(a.values[g], lengths[g] * hd);
      this.#i32[(lo >>> 2) + g] = lengths[g];
      this.#i32[(to >>> 2) + g] = off;
      off += Math.ceil(lengths[g] / kb) * kb * hd;
    }
    const kt = this.#take(packedFloats), so = this.#take((parts * scratch) / 4);
    const ktOff = packed ? to : 0;
    if (packed) this.#w.attention_pack(rows, numHeads, nkv, hd, ko, lo, kt, to);
    if (parts === 1) {
      this.#w.attention_tiles(oo, qo, rows, numHeads, nkv, hd, ko, vo, lo, a.scale, kt, ktOff, so, sld, 0, items);
    } else {
      this.#pool.args.set([oo, qo, rows, numHeads, nkv, hd, ko, vo, lo, a.scale, kt, ktOff, so, scratch, sld, items]);
      this.#pool.run(TASK_ATTENTION, parts);
    }
    this.#get(a.out, oo, qLen);
  }

  /**
   * Attention read in place from the cache's pages (native/kv_attn.c compiled to wasm). Pages of
   * this backend's caches already lie in the linear memory; pages of a cache made without it
   * (KVCache built directly) are copied in for the call.
   */
  attentionPaged(a: PagedAttentionArgs): void {
    const f = checkPagedAttention(a);
    const { rows, numHeads, numKvHeads: nkv, headDim: hd, cache } = a;
    if (rows === 0 || numHeads === 0) return;
    const E = cache.pool.pageEntries, pageBytes = 2 * E * f.rowBytes + 4 * E;
    const tq = this.#w.kv_tile_queries(), ch = this.#w.kv_run_entries();
    let maxLen = 0, tables = 0, foreign = 0;
    for (let g = 0; g < nkv; g++) {
      const pages = cache.pages[g], n = Math.ceil(cache.lengths[g] / E);
      maxLen = Math.max(maxLen, cache.lengths[g]);
      tables += n;
      if (n > 0 && !this.#mine(pages[0])) foreign += n;
    }
    const nq = rows * (numHeads / nkv), items = nkv * Math.ceil(nq / tq);
    const parts = this.#parts(nq * nkv * maxLen * hd);
    const scratch = align(4 * (tq * maxLen + ch * hd));
    const qLen = rows * numHeads * hd;
    // Channel-pruned heads (ThinK): per KV head a kv_key_layout {channels, n_kept, dim, block,
    // blockBytes, rowBytes} (dim 0: all channels), then the channel lists.
    const kc = cache.keyChannels?.some((c) => c) ? cache.keyChannels : undefined;
    const channels = kc ? kc.reduce((n, c) => n + (c?.length ?? 0), 0) : 0;
    // Column sums (a.columnSums): one float64 [nkv][maxLen] block per part, added up afterwards.
    const colBytes = a.columnSums ? parts * nkv * maxLen * 8 : 0;
    this.#begin(4 * (2 * qLen + 2 * nkv + rows + tables) + foreign * align(pageBytes) + parts * scratch + (nkv + 8) * 64 + (kc ? 4 * (6 * nkv + channels) + (nkv + 1) * 64 : 0) + colBytes + 64);
    const qo = this.#put(a.q, qLen), oo = this.#take(qLen);
    const lo = this.#take(nkv), po = this.#take(rows), heads = this.#take(nkv);
    this.#i32.set(cache.lengths.subarray(0, nkv), lo >>> 2);
    this.#i32.set(a.queryPositions.subarray(0, rows), po >>> 2);
    const u8 = new Uint8Array(this.#mem.buffer);
    for (let g = 0; g < nkv; g++) {
      const pages = cache.pages[g], n = Math.ceil(cache.lengths[g] / E), table = this.#take(n);
      this.#i32[(heads >>> 2) + g] = table;
      const mine = n > 0 && this.#mine(pages[0]);
      for (let p = 0; p < n; p++) {
        let at = pages[p].address;
        if (!mine) {
          at = this.#take(align(pageBytes) / 4);
          u8.set(pages[p].u8, at);
          this.#i32.set(pages[p].pos, (at + pages[p].u8.length) >>> 2);
        }
        this.#i32[(table >>> 2) + p] = at;
      }
    }
    let layouts = 0;
    if (kc) {
      layouts = this.#take(6 * nkv);
      for (let g = 0; g < nkv; g++) {
        const ch = kc[g], kf = ch && cache.pages[g].length ? cache.pages[g][0].keyFmt : null, at = (layouts >>> 2) + 6 * g;
        if (!ch || !kf) {
          this.#i32.fill(0, at, at + 6);
          continue;
        }
        const list = this.#take(ch.length);
        this.#i32.set(ch, list >>> 2);
        this.#i32.set([list, ch.length, kf.headDim, kf.block, kf.blockBytes, kf.rowBytes], at);
      }
    }
    const so = this.#take((parts * scratch) / 4), bufOff = align(4 * tq * maxLen);
    const cols = colBytes ? this.#take(colBytes / 4) : 0;
    if (cols) new Float64Array(this.#mem.buffer, cols, colBytes / 8).fill(0);
    const dtype = KV_DTYPES.indexOf(f.dtype), vOff = E * f.rowBytes, window = a.window ?? 0;
    if (parts === 1) {
      this.#w.kv_attention(oo, qo, rows, numHeads, nkv, hd, dtype, f.block, f.blockBytes, f.rowBytes, E, vOff, heads, lo, po, window, a.scale, so, maxLen, so + bufOff, 0, items, layouts, cols);
    } else {
      this.#pool.args.set([oo, qo, rows, numHeads, nkv, hd, dtype, f.block, f.blockBytes, f.rowBytes, E, vOff, heads, lo, po, window, a.scale, so, scratch, maxLen, bufOff, items, layouts, cols]);
      this.#pool.run(TASK_KV_ATTENTION, parts);
    }
    this.#get(a.out, oo, qLen);
    if (cols) addColumnParts(a, new Float64Array(this.#mem.buffer, cols, colBytes / 8), parts, maxLen);
  }

  /** Whether a page lies in this backend's linear memory. */
  #mine(p: { address: number; u8: Uint8Array }): boolean {
    return p.address >= 0 && this.#regions.owns(p.u8.buffer);
  }
}

/** a.columnSums[g·columnStride + t] += the parts' sums ([part][g][maxLen]) of entry t of KV head g. */
function addColumnParts(a: PagedAttentionArgs, sums: Float64Array, parts: number, maxLen: number): void {
  const out = a.columnSums!, stride = a.columnStride!;
  for (let p = 0; p < parts; p++) {
    for (let g = 0; g < a.numKvHeads; g++) {
      const src = (p * a.numKvHeads + g) * maxLen, dst = g * stride;
      for (let t = 0, n = a.cache.lengths[g]; t < n; t++) out[dst + t] += sums[src + t];
    }
  }
}

/** Rounds up to a cache line (plain arithmetic: addresses may pass 2³¹). */
function align(bytes: number): number {
  return Math.ceil(bytes / 64) * 64;
}
