import type { AttentionArgs, Backend } from '../backend.js';
import { checkAttention, checkMatmul, checkMatmulBf16, checkRmsnorm, checkRope, checkSiluMul } from '../native/checks.js';
import { clampThreads, maxThreads } from '../native/index.js';
import { kernelsWasmBase64 } from './kernels-wasm.js';
import { TASK_ATTENTION, TASK_MATMUL, TASK_MATMUL_BF16, WORKER_STACK, type Exports } from './module.js';
import { Pool } from './pool.js';

interface Loaded {
  exports: Exports;
  memory: WebAssembly.Memory;
  pool: Pool;
  /** First byte the backend may lay calls out from (past the module's data and the worker stacks). */
  arena: number;
}

export type WasmLoad = { ok: true; module: Loaded } | { ok: false; reason: string };

let cached: WasmLoad | undefined;

/** Compiles the embedded module (≈27 KB) and instantiates it on a shared memory, once per process. */
export function loadWasm(): WasmLoad {
  if (!cached) {
    try {
      const module = new WebAssembly.Module(Buffer.from(kernelsWasmBase64, 'base64'));
      const memory = new WebAssembly.Memory({ initial: 16, maximum: 65536, shared: true });
      const exports = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as Exports;
      const stackBase = align(exports.__heap_base.value as number);
      const workers = maxThreads() - 1;
      const pool = new Pool(module, memory, exports, stackBase, workers);
      cached = { ok: true, module: { exports, memory, pool, arena: stackBase + workers * WORKER_STACK } };
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
  readonly #base: number;
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
    this.#base = m.arena;
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

  /** Starts a call's layout of `bytes` in linear memory, growing the memory if needed. */
  #begin(bytes: number): void {
    const mem = this.#mem;
    const need = this.#base + bytes;
    if (need > mem.buffer.byteLength) {
      if (need > 4 * 1024 ** 3) throw new RangeError(`wasm backend: a call needs ${need} bytes, over WebAssembly's 4 GiB`);
      mem.grow(Math.ceil((need - mem.buffer.byteLength) / 65536));
    }
    // A grown shared memory hands out a longer buffer; views of the old one stop short.
    if (this.#f32.byteLength !== mem.buffer.byteLength) {
      this.#f32 = new Float32Array(mem.buffer);
      this.#i32 = new Int32Array(mem.buffer);
      this.#u16 = new Uint16Array(mem.buffer);
    }
    this.#top = this.#base;
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
}

/** Rounds up to a cache line (plain arithmetic: addresses may pass 2³¹). */
function align(bytes: number): number {
  return Math.ceil(bytes / 64) * 64;
}
