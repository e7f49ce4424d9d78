import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AttentionArgs, Backend, PagedAttentionArgs, PressAttentionArgs } from '../backend.js';
import { KV_DTYPES } from '../../cache/format.js';
import type { PageMemory } from '../../cache/kv-cache.js';
import { SlabMemory, type SlabSource } from '../../cache/slab-memory.js';
import { checkAdd, checkAttention, checkPagedAttention, checkPressAttention, checkCount, checkEaLogits64, checkEaQueryMoments64, checkEaScores64, checkGram64, checkMatmul, checkMatmulBf16, checkMatmulQuant, checkRmsnorm, checkRope, checkSiluMul, checkValueNormsL1, checkWindowSoftmaxSums } from './checks.js';
import { checkedLinalg64, type Linalg64 } from '../linalg64.js';

/** What the compiled addon (native/addon.cc) exports. */
interface Addon {
  setThreads(n: number): void;
  matmul(out: Float32Array, x: Float32Array, w: Float32Array, m: number, n: number, k: number, bias: Float32Array | null): void;
  /** Absent from older builds (then NativeBackend.matmulRows takes the rows one by one). */
  matmulRows?(out: Float32Array, x: Float32Array, w: Float32Array, m: number, n: number, k: number, bias: Float32Array | null): void;
  matmulBf16(out: Float32Array, x: Float32Array, w: Uint16Array, m: number, n: number, k: number, bias: Float32Array | null): void;
  matmulQuant(out: Float32Array, x: Float32Array, w: Uint8Array, type: number, rowBytes: number, m: number, n: number, k: number, bias: Float32Array | null): void;
  rmsnorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, dim: number, eps: number): void;
  rope(x: Float32Array, rows: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void;
  siluMul(gate: Float32Array, up: Float32Array, n: number): void;
  add(x: Float32Array, y: Float32Array, n: number): void;
  attention(
    out: Float32Array, q: Float32Array, rows: number, numHeads: number, numKvHeads: number, headDim: number,
    keys: Float32Array[], values: Float32Array[], lengths: Int32Array, scale: number,
  ): void;
  attentionPaged(
    out: Float32Array, q: Float32Array, rows: number, numHeads: number, numKvHeads: number, headDim: number,
    dtype: number, block: number, blockBytes: number, rowBytes: number, pageEntries: number, valuesOffset: number,
    pages: readonly (readonly { u8: Uint8Array; pos: Int32Array }[])[], lengths: Int32Array, queryPositions: Int32Array, window: number, scale: number,
    addresses: Float64Array | null,
    keyLayouts?: (Int32Array | null)[],
    columnSums?: Float64Array | null, columnStride?: number,
  ): void;
  gram64(out: Float64Array, x: Float64Array, n: number, d: number): void;
  pressAttention(
    out: Float64Array, q: Float32Array, qStride: number, heads: Int32Array, keys: Float32Array, n: number, d: number, rows: number,
    lo: Int32Array, hi: Int32Array, pad: Int32Array | null, padLogit: number, scale: number, rowWeight: Float32Array | null, mode: number,
  ): void;
  eaLogits64(
    z: Float64Array, keys: Float32Array, s0: number, m: number, d: number, G: number,
    mus: Float64Array, quad: Float64Array | null, stride: number,
  ): void;
  eaQueryMoments64(
    mean: Float64Array, cov: Float64Array | null, q: Float32Array, qStride: number, start: number, n: number, H: number, d: number,
    cos: Float64Array, sin: Float64Array,
  ): void;
  eaScores64(out: Float64Array, z: Float64Array, stride: number, s0: number, m: number, G: number, values: Float32Array | readonly Float32Array[], d: number, useVnorm: boolean, epsilon: number): number;
  windowSoftmaxSums(
    acc: Float64Array, q: Float32Array, qStride: number, h0: number, G: number, d: number, first: number, w: number,
    keys: Float32Array, T: number, keyPositions: Int32Array, rowPositions: Int32Array, scale: number, weights: Float64Array | null,
  ): void;
  valueNormsL1(out: Float64Array, values: Float32Array, block: Float32Array, T: number, D: number, hd: number, divisor: number, rows: Int32Array | null): void;
  pressGemm64: Linalg64['gemm'];
  pressCenterRows: Linalg64['centerRows'];
  pressScaleRows: Linalg64['scaleRows'];
  pressRowDots: Linalg64['rowDots'];
  pressInverseForm: Linalg64['inverseForm'];
  fmaProbe(iterations: number, threads: number): number;
  /** Seconds for the vdpbf16ps probe; null where bf16 products go by conversion to f32. */
  bf16Probe(iterations: number, threads: number): number | null;
  info(): AddonInfo;
  /** Page memory for the KV cache (absent on platforms without mmap). */
  kvSlab?: SlabSource['kvSlab'];
  kvRelease?: SlabSource['kvRelease'];
  kvOsPage?: SlabSource['kvOsPage'];
  kvEncodeRows?: SlabSource['kvEncodeRows'];
}

let slabs: SlabMemory | undefined;

export interface AddonInfo {
  /** Instruction set of the kernels picked for this CPU: "avx512", "avx2" or "base". */
  isa: string;
  vectorFloats: number;
  /** Floating-point operations of one iteration of the FMA peak probe. */
  probeFlopsPerIteration: number;
  /** Floating-point operations of one iteration of the bf16 probe (0: no vdpbf16ps). */
  bf16ProbeFlopsPerIteration: number;
  /** The GEMM micro-kernels that run, e.g. "avx512 8x32" and "avx512bf16 8x32". */
  gemmF32: string;
  gemmBf16: string;
  /** The build whose integer dot products run decode steps on quantized weights: "avx512vnni" (vpdpbusd), "avx512", "avx2" or "base". */
  quantDot: string;
  /** Data cache sizes read at load time, which size the GEMM's blocks. */
  cacheBytes: { l1: number; l2: number; l3: number };
  blockingF32: { kc: number; mc: number; nc: number };
  blockingBf16: { kc: number; mc: number; nc: number };
}

export type NativeLoad =
  | { ok: true; addon: Addon; info: AddonInfo }
  | { ok: false; reason: string };

const ADDON = 'build/Release/kvpress_native.node';

/**
 * The addon to load, node-gyp-build's convention: a prebuilt binary shipped in the package
 * (`prebuilds/<platform>-<arch>/*.node`) when there is one for this machine, else the one
 * `npm install` built.
 */
function addonPath(root: string): string {
  const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  if (existsSync(dir)) {
    const file = readdirSync(dir).filter((f) => f.endsWith('.node')).sort()[0];
    if (file) return join(dir, file);
  }
  return join(root, ADDON);
}
/** Written by native/build.mjs when the install-time build fails. */
const BUILD_STATUS = 'build/native-build.json';

/** The package root: the nearest folder above this module holding our package.json. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'kvpress-ts') return dir;
    dir = dirname(dir);
  }
  throw new Error('kvpress-ts: cannot find the package root above ' + fileURLToPath(import.meta.url));
}

let cached: NativeLoad | undefined;

/** Loads the addon once per process; later calls return the same outcome. */
export function loadNative(): NativeLoad {
  if (!cached) cached = load();
  return cached;
}

function load(): NativeLoad {
  let root: string;
  try {
    root = packageRoot();
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  const file = addonPath(root);
  if (!existsSync(file)) {
    let why = 'run `npm rebuild` with a C++ compiler installed';
    const status = join(root, BUILD_STATUS);
    if (existsSync(status)) {
      try {
        why = (JSON.parse(readFileSync(status, 'utf8')) as { reason: string }).reason;
      } catch {
        // An unreadable status file just loses the detail.
      }
    }
    return { ok: false, reason: `addon not built (${why})` };
  }
  // Idle OpenMP threads sleep instead of spinning. On 2-vCPU machines whose second core is
  // throttled, a spinning waiter burns the CPU quota the working thread needs: measured on the
  // small model at 2 threads, prefill fell from 376 to 127 tok/s and decode from 22 to 1.3.
  if (!process.env.OMP_WAIT_POLICY && !process.env.GOMP_SPINCOUNT) process.env.OMP_WAIT_POLICY = 'passive';
  try {
    const addon = createRequire(import.meta.url)(file) as Addon;
    return { ok: true, addon, info: addon.info() };
  } catch (e) {
    return { ok: false, reason: `addon failed to load (${(e as Error).message.split('\n')[0]})` };
  }
}

/** Cores this process may use: the default and the ceiling of every backend's thread count. */
export function maxThreads(): number {
  return availableParallelism();
}

/** The thread count the addon is set to; backends with another count re-apply theirs. */
let appliedThreads = 0;

/**
 * Our C kernels (AVX-512 / AVX2 / baseline picked at load time; the bf16 GEMM on AVX512-BF16
 * where the CPU has it), on zero-copy views of the caller's arrays.
 */
export class NativeBackend implements Backend {
  readonly name = 'native';
  readonly description: string;
  #threads: number;

  constructor(private readonly addon: Addon, readonly info: AddonInfo, threads = maxThreads()) {
    this.#threads = clampThreads(threads);
    this.description = `native addon: ${info.isa} kernels, GEMM ${info.gemmF32} (f32) / ${info.gemmBf16} (bf16)`;
  }

  /** On the calling thread: each call is at most n·d or d²·k multiply-adds. */
  readonly linalg64: Linalg64 = checkedLinalg64({
    gemm: (c, a, b, m, n, k, transA) => this.addon.pressGemm64(c, a, b, m, n, k, transA),
    centerRows: (k32, x, mean, src, stride, n, d) => this.addon.pressCenterRows(k32, x, mean, src, stride, n, d),
    scaleRows: (x, src, stride, n, d, scale) => this.addon.pressScaleRows(x, src, stride, n, d, scale),
    rowDots: (out, src, stride, n, d, vecs, g, index, norms) => this.addon.pressRowDots(out, src, stride, n, d, vecs, g, index, norms),
    inverseForm: (w, L, k, p, d) => this.addon.pressInverseForm(w, L, k, p, d),
  });

  get threads(): number {
    return this.#threads;
  }

  setThreads(n: number): void {
    this.#threads = clampThreads(n);
  }

  #apply(): void {
    if (appliedThreads !== this.#threads) {
      this.addon.setThreads(this.#threads);
      appliedThreads = this.#threads;
    }
  }

  matmul(out: Float32Array, x: Float32Array, w: Float32Array, m: number, n: number, k: number, bias?: Float32Array | null): void {
    checkMatmul(out, x, w, m, n, k, bias);
    if (m === 0 || n === 0) return;
    if (k === 0) {
      // An empty inner dimension: the product is just the bias.
      out.fill(0, 0, m * n);
      if (bias) for (let i = 0; i < m; i++) out.set(bias.subarray(0, n), i * n);
      return;
    }
    this.#apply();
    this.addon.matmul(out, x, w, m, n, k, bias ?? null);
  }

  /** The gemv's sums for each row (kernels.h), the weights read once for all rows (native/addon.cc MatmulRows). */
  matmulRows(out: Float32Array, x: Float32Array, w: Float32Array, m: number, n: number, k: number, bias?: Float32Array | null): void {
    if (m === 1 || k === 0) return this.matmul(out, x, w, m, n, k, bias);
    checkMatmul(out, x, w, m, n, k, bias);
    if (m === 0 || n === 0) return;
    if (!this.addon.matmulRows) {
      for (let r = 0; r < m; r++) this.matmul(out.subarray(r * n, (r + 1) * n), x.subarray(r * k, (r + 1) * k), w, 1, n, k, bias);
      return;
    }
    this.#apply();
    this.addon.matmulRows(out, x, w, m, n, k, bias ?? null);
  }

  matmulBf16(out: Float32Array, x: Float32Array, w: Uint16Array, m: number, n: number, k: number, bias?: Float32Array | null): void {
    checkMatmulBf16(out, x, w, m, n, k, bias);
    if (m === 0 || n === 0) return;
    if (k === 0) {
      out.fill(0, 0, m * n);
      if (bias) for (let i = 0; i < m; i++) out.set(bias.subarray(0, n), i * n);
      return;
    }
    this.#apply();
    this.addon.matmulBf16(out, x, w, m, n, k, bias ?? null);
  }

  /** Products on ggml blocks (native/quant.c): integer dot products for decode, dequantized panels into the GEMM for prefill. */
  matmulQuant(out: Float32Array, x: Float32Array, w: Uint8Array, ggmlType: number, m: number, n: number, k: number, bias?: Float32Array | null): void {
    const rowBytes = checkMatmulQuant(out, x, w, ggmlType, m, n, k, bias);
    if (m === 0 || n === 0) return;
    this.#apply();
    this.addon.matmulQuant(out, x, w, ggmlType, rowBytes, m, n, k, bias ?? null);
  }

  rmsnorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, dim: number, eps: number): void {
    checkRmsnorm(out, x, weight, rows, dim, eps);
    this.#apply();
    this.addon.rmsnorm(out, x, weight, rows, dim, eps);
  }

  rope(x: Float32Array, rows: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
    checkRope(x, rows, heads, headDim, cos, sin);
    this.#apply();
    this.addon.rope(x, rows, heads, headDim, cos, sin);
  }

  siluMul(gate: Float32Array, up: Float32Array, n: number): void {
    checkSiluMul(gate, up, n);
    this.#apply();
    this.addon.siluMul(gate, up, n);
  }

  add(x: Float32Array, y: Float32Array, n: number): void {
    checkAdd(x, y, n);
    this.#apply();
    this.addon.add(x, y, n);
  }

  attention(a: AttentionArgs): void {
    checkAttention(a);
    if (a.rows === 0 || a.numHeads === 0 || a.headDim === 0) return;
    this.#apply();
    this.addon.attention(a.out, a.q, a.rows, a.numHeads, a.numKvHeads, a.headDim, a.keys, a.values, a.lengths, a.scale);
  }

  /** KV cache pages in slabs that give their memory back to the OS when evicted (src/cache/slab-memory.ts). */
  get pageMemory(): PageMemory | undefined {
    const a = this.addon;
    if (!a.kvSlab || !a.kvRelease || !a.kvOsPage) return undefined;
    return (slabs ??= new SlabMemory(a as SlabSource));
  }

  #addr = new Float64Array(256);

  /**
   * The slab addresses of the pages attention reads (per head, in order), when every page lies
   * in this addon's slabs: one typed array instead of a property read per page in the addon.
   */
  #addresses(a: PagedAttentionArgs): Float64Array | null {
    const E = a.cache.pool.pageEntries, slabs = this.pageMemory;
    let n = 0;
    for (let g = 0; g < a.numKvHeads; g++) n += Math.ceil(a.cache.lengths[g] / E);
    if (this.#addr.length < n) this.#addr = new Float64Array(2 * n);
    for (let g = 0, k = 0; g < a.numKvHeads; g++) {
      const pages = a.cache.pages[g];
      for (let p = 0, np = Math.ceil(a.cache.lengths[g] / E); p < np; p++, k++) {
        const page = pages[p];
        if (page.address < 0 || !slabs || page.memory !== slabs) return null;
        this.#addr[k] = page.address;
      }
    }
    return this.#addr;
  }

  /** Attention read in place from the cache's pages in their element type (native/kv_attn.c). */
  attentionPaged(a: PagedAttentionArgs): void {
    const f = checkPagedAttention(a);
    this.#apply();
    const E = a.cache.pool.pageEntries;
    this.addon.attentionPaged(
      a.out, a.q, a.rows, a.numHeads, a.numKvHeads, a.headDim, KV_DTYPES.indexOf(f.dtype), f.block, f.blockBytes, f.rowBytes,
      E, E * f.rowBytes, a.cache.pages, a.cache.lengths, a.queryPositions, a.window ?? 0, a.scale, this.#addresses(a), keyLayouts(a),
      a.columnSums ?? null, a.columnStride ?? 0,
    );
  }

  pressAttention(a: PressAttentionArgs): void {
    checkPressAttention(a);
    this.#apply();
    this.addon.pressAttention(a.out, a.q, a.qStride, a.heads, a.keys, a.n, a.headDim, a.rows, a.lo, a.hi, a.pad, a.padLogit, a.scale, a.rowWeight, a.mode === 'sum' ? 0 : 1);
  }

  gram64(out: Float64Array, x: Float64Array, n: number, d: number): void {
    checkGram64(out, x, n, d);
    this.#apply();
    this.addon.gram64(out, x, n, d);
  }

  eaLogits64(
    z: Float64Array, keys: Float32Array, s0: number, m: number, d: number, G: number,
    mus: Float64Array, quad: Float64Array | null, stride: number,
  ): void {
    checkEaLogits64(z, keys, s0, m, d, G, mus, quad, stride);
    if (m === 0 || G === 0) return;
    this.#apply();
    this.addon.eaLogits64(z, keys, s0, m, d, G, mus, quad, stride);
  }

  eaQueryMoments64(
    mean: Float64Array, cov: Float64Array | null, q: Float32Array, qStride: number, start: number, n: number, H: number, d: number,
    cos: Float64Array, sin: Float64Array,
  ): void {
    checkEaQueryMoments64(mean, cov, q, qStride, start, n, H, d, cos, sin);
    if (n === 0 || H === 0) return;
    this.#apply();
    this.addon.eaQueryMoments64(mean, cov, q, qStride, start, n, H, d, cos, sin);
  }

  eaScores64(out: Float64Array, z: Float64Array, stride: number, s0: number, m: number, G: number, values: Float32Array | readonly Float32Array[], d: number, useVnorm: boolean, epsilon: number): number {
    checkEaScores64(out, z, stride, s0, m, G, values, d, epsilon);
    if (m === 0) return -Infinity;
    return this.addon.eaScores64(out, z, stride, s0, m, G, values, d, useVnorm, epsilon);
  }

  windowSoftmaxSums(
    acc: Float64Array, q: Float32Array, qStride: number, h0: number, G: number, d: number, first: number, w: number,
    keys: Float32Array, T: number, keyPositions: Int32Array, rowPositions: Int32Array, scale: number, weights: Float64Array | null,
  ): void {
    checkWindowSoftmaxSums(acc, q, qStride, h0, G, d, first, w, keys, T, keyPositions, rowPositions, weights);
    if (w === 0 || G === 0 || T === w) return;
    this.#apply();
    this.addon.windowSoftmaxSums(acc, q, qStride, h0, G, d, first, w, keys, T, keyPositions, rowPositions, scale, weights);
  }

  valueNormsL1(out: Float64Array, values: Float32Array, block: Float32Array, T: number, D: number, hd: number, divisor: number, rows: Int32Array | null = null): void {
    checkValueNormsL1(out, values, block, T, D, hd, divisor, rows);
    if (T === 0) return;
    this.#apply();
    this.addon.valueNormsL1(out, values, block, T, D, hd, divisor, rows);
  }

  /** Seconds for each of `threads` threads to run `iterations` of the FMA peak probe. */
  fmaProbe(iterations: number, threads: number): number {
    checkCount('fmaProbe', 'iterations', iterations);
    return this.addon.fmaProbe(iterations, clampThreads(threads));
  }

  /** As fmaProbe for the vdpbf16ps probe; null where the CPU has no bf16 dot product. */
  bf16Probe(iterations: number, threads: number): number | null {
    checkCount('bf16Probe', 'iterations', iterations);
    return this.addon.bf16Probe(iterations, clampThreads(threads));
  }
}

/**
 * Per KV head, the layout of channel-pruned keys as the kernel reads it — [dim, block, blockBytes,
 * rowBytes, ...kept channels] — or null; undefined when no head is pruned (checked by
 * checkPagedAttention).
 */
function keyLayouts(a: PagedAttentionArgs): (Int32Array | null)[] | undefined {
  const kc = a.cache.keyChannels;
  if (!kc?.some((c) => c)) return undefined;
  return Array.from({ length: a.numKvHeads }, (_, g) => {
    const ch = kc[g], p = a.cache.pages[g][0];
    if (!ch || !p) return null;
    const kf = p.keyFmt;
    return Int32Array.from([kf.headDim, kf.block, kf.blockBytes, kf.rowBytes, ...ch]);
  });
}

export function clampThreads(n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`threads must be a positive integer, got ${n}`);
  return Math.min(n, maxThreads());
}
