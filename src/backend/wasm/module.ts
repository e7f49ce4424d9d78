/**
 * What the main thread and the worker threads share about the WebAssembly kernels: the
 * module's exports, the layout of the control block, and how one thread runs its part of a
 * split kernel.
 */

/** What native/wasm.c exports (pointers are byte addresses in the shared memory). */
export interface Exports {
  __heap_base: WebAssembly.Global;
  __stack_pointer: WebAssembly.Global;
  rmsnorm(out: number, x: number, w: number, rows: number, dim: number, eps: number): void;
  rope(x: number, rows: number, heads: number, headDim: number, cos: number, sin: number): void;
  silu_mul(gate: number, up: number, n: number): void;
  tile_rows(): number;
  key_block(): number;
  matmul(out: number, x: number, w: number, m: number, n: number, k: number, bias: number, panel: number, edge: number, j0: number, j1: number): void;
  matmul_bf16(out: number, x: number, w: number, m: number, n: number, k: number, bias: number, j0: number, j1: number): void;
  attention_pack(rows: number, nh: number, nkv: number, hd: number, keys: number, lengths: number, kt: number, ktOff: number): void;
  attention_tiles(
    out: number, q: number, rows: number, nh: number, nkv: number, hd: number, keys: number, values: number,
    lengths: number, scale: number, kt: number, ktOff: number, s: number, sld: number, it0: number, it1: number,
  ): void;
  kv_attention(
    out: number, q: number, rows: number, nh: number, nkv: number, hd: number, dtype: number, block: number, blockBytes: number,
    rowBytes: number, pageEntries: number, valuesOffset: number, pages: number, lengths: number, qpos: number, window: number,
    scale: number, s: number, sld: number, buf: number, it0: number, it1: number, layouts: number, cols: number,
  ): void;
  kv_tile_queries(): number;
  kv_run_entries(): number;
}

/** Int32 slots of the control block (a SharedArrayBuffer). */
export const GEN = 0; // bumped by the main thread to start a task
export const DONE = 1; // workers that finished the current task
export const READY = 2; // workers that booted
export const FAILED = 3; // set by a worker whose part threw
export const TASK = 4;
export const PARTS = 5;
/** Byte offset and length of the Float64 task arguments in the control block. */
export const ARGS_AT = 64;
export const ARGS_LEN = 24;
export const CONTROL_BYTES = ARGS_AT + 8 * ARGS_LEN;

export const TASK_MATMUL = 1;
export const TASK_ATTENTION = 2;
export const TASK_MATMUL_BF16 = 3;
export const TASK_KV_ATTENTION = 4;

/** Bytes of stack each worker's instance gets (the kernels use a few hundred). */
export const WORKER_STACK = 64 * 1024;

/**
 * Runs part `part` of `parts` of a task. Matmul: args = out, x, w, m, n, k, bias, scratch,
 * scratchStride, keyBlock: contiguous KB-aligned ranges of weight rows. Matmul with bf16
 * weights: args = out, x, w, m, n, k, bias: contiguous 16-row-aligned ranges. Attention: args = out,
 * q, rows, nh, nkv, hd, keys, values, lengths, scale, kt, ktOff, scratch, scratchStride, sld,
 * items: every parts-th tile, so that cheap early tiles and costly late ones mix. Paged attention:
 * the arguments of kv_attention up to scale, then scratch, scratchStride (bytes per part: scores
 * then the widening buffer), sld, bufOffset (bytes from a part's scratch to its buffer), items,
 * layouts (0, or the address of the KV heads' channel-pruned key layouts), cols (0, or the address
 * of parts × [nkv][sld] float64 column sums, one block per part).
 */
export function runPart(ex: Exports, task: number, a: Float64Array, part: number, parts: number): void {
  if (task === TASK_MATMUL) {
    const [out, x, w, m, n, k, bias, scratch, stride, kb] = a;
    const panels = Math.ceil(n / kb);
    const j0 = Math.min(n, Math.floor((panels * part) / parts) * kb);
    const j1 = Math.min(n, Math.floor((panels * (part + 1)) / parts) * kb);
    const panel = scratch + part * stride;
    if (j1 > j0) ex.matmul(out, x, w, m, n, k, bias, panel, panel + 4 * k * kb, j0, j1);
  } else if (task === TASK_MATMUL_BF16) {
    const [out, x, w, m, n, k, bias] = a;
    const blocks = Math.ceil(n / 16);
    const j0 = Math.min(n, Math.floor((blocks * part) / parts) * 16);
    const j1 = Math.min(n, Math.floor((blocks * (part + 1)) / parts) * 16);
    if (j1 > j0) ex.matmul_bf16(out, x, w, m, n, k, bias, j0, j1);
  } else if (task === TASK_ATTENTION) {
    const [out, q, rows, nh, nkv, hd, keys, values, lengths, scale, kt, ktOff, scratch, stride, sld, items] = a;
    const s = scratch + part * stride;
    for (let it = part; it < items; it += parts) ex.attention_tiles(out, q, rows, nh, nkv, hd, keys, values, lengths, scale, kt, ktOff, s, sld, it, it + 1);
  } else if (task === TASK_KV_ATTENTION) {
    const [out, q, rows, nh, nkv, hd, dtype, block, blockBytes, rowBytes, E, vOff, pages, lengths, qpos, window, scale, scratch, stride, sld, bufOff, items, layouts, cols] = a;
    const s = scratch + part * stride, c = cols ? cols + part * nkv * sld * 8 : 0;
    for (let it = part; it < items; it += parts) {
      ex.kv_attention(out, q, rows, nh, nkv, hd, dtype, block, blockBytes, rowBytes, E, vOff, pages, lengths, qpos, window, scale, s, sld, s + bufOff, it, it + 1, layouts, c);
    }
  } else {
    throw new Error(`wasm backend: unknown task ${task}`);
  }
}
