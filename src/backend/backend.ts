import type { KvPage, PageMemory, PagePool } from '../cache/kv-cache.js';
import type { Linalg64 } from './linalg64.js';

/**
 * The numeric kernels the engine needs, behind one interface so that a fast backend
 * (native N-API, WebAssembly) drops in beside the TypeScript reference.
 *
 * Every array is a caller-owned `Float32Array`, row-major; kernels never allocate per call
 * (scratch space is passed in) so that the token loop stays allocation-free.
 */
export interface Backend {
  /** Short identifier: "js", "native", "wasm". */
  readonly name: string;
  /** One line on what runs and why this backend was chosen (shown by `kvpress info`). */
  readonly description: string;
  /** Threads the kernels may use (1 for the TypeScript reference). */
  readonly threads: number;
  setThreads(n: number): void;

  /** out[m×n] = x[m×k] · w[n×k]ᵀ (+ bias[n] on every row). `w` is a PyTorch Linear weight. */
  matmul(out: Float32Array, x: Float32Array, w: Float32Array, m: number, n: number, k: number, bias?: Float32Array | null): void;

  /**
   * out[m×n] = x[m×k] · w[n×k]ᵀ (+ bias[n] on every row), each row of out bit-equal to what
   * `matmul` gives that row of x alone (m = 1), for the decode steps of several sequences at once
   * (BatchDecoder): the weights are read once for all rows instead of once a row. Optional:
   * without it such steps call `matmul` a row at a time.
   */
  matmulRows?(out: Float32Array, x: Float32Array, w: Float32Array, m: number, n: number, k: number, bias?: Float32Array | null): void;

  /**
   * out[m×n] = x[m×k] · w[n×k]ᵀ (+ bias[n] on every row) with `w` given as bf16 bits (the upper
   * 16 bits of each f32), widened exactly to f32; x, the sums and out stay f32. Optional: the
   * decode steps of a model with `decodeWeights: 'bf16'` use it where the backend has it and
   * fall back to `matmul` on the f32 weights where it does not.
   */
  matmulBf16?(out: Float32Array, x: Float32Array, w: Uint16Array, m: number, n: number, k: number, bias?: Float32Array | null): void;

  /**
   * out[m×n] = x[m×k] · w[n×k]ᵀ (+ bias) with `w` rows of ggml blocks of type `ggmlType`
   * (src/model/quant/formats.ts; each row k / blockElements blocks), multiplied on the blocks:
   * decode steps quantize x to 8-bit blocks and sum in integers, prefill dequantizes panels of
   * rows for the GEMM. Optional: without it `linear()` dequantizes a panel of rows at a time.
   */
  matmulQuant?(out: Float32Array, x: Float32Array, w: Uint8Array, ggmlType: number, m: number, n: number, k: number, bias?: Float32Array | null): void;

  /** out[r] = weight ⊙ x[r] / sqrt(mean(x[r]²) + eps) for `rows` rows of `dim`; out may be x. */
  rmsnorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, dim: number, eps: number): void;

  /**
   * In-place RoPE, Hugging Face half-split convention, on x laid out [rows][heads][headDim]:
   * for j < headDim/2, (x[j], x[j+half]) ← (x[j]·c − x[j+half]·s, x[j+half]·c + x[j]·s)
   * with c = cos[r·half + j], s = sin[r·half + j] (tables [rows][headDim/2]).
   */
  rope(x: Float32Array, rows: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void;

  /** gate[i] ← silu(gate[i]) · up[i] for i < n. */
  siluMul(gate: Float32Array, up: Float32Array, n: number): void;

  /** x[i] ← x[i] + y[i] for i < n (the residual adds). Optional: the forward pass adds in JS where a backend lacks it. */
  add?(x: Float32Array, y: Float32Array, n: number): void;

  /** Causal grouped-query attention of new query rows over a per-KV-head cache. */
  attention(args: AttentionArgs): void;

  /**
   * The same attention read in place from the cache's pages, in the cache's element type.
   * Optional: where a backend lacks it, the forward pass gathers each head's entries (decoded to
   * f32) into a workspace and calls `attention`.
   */
  attentionPaged?(args: PagedAttentionArgs): void;

  /**
   * Where the pages of this backend's caches should live for attentionPaged to read them in
   * place (Model.newCache passes it on). Optional: absent, pages are ArrayBuffers of their own.
   */
  readonly pageMemory?: PageMemory;

  /**
   * out[d×d] = xᵀx for x [n][d], float64 and fully symmetric. Optional: Expected Attention's
   * query covariance uses it where the backend has it, its own float64 loop where not.
   */
  gram64?(out: Float64Array, x: Float64Array, n: number, d: number): void;

  /** The leverage presses' float64 helpers (linalg64.ts). Optional: src/presses/linalg64.ts runs them in TypeScript. */
  readonly linalg64?: Linalg64;

  /**
   * Expected Attention's float64 logits of the m keys of one KV head from entry s0 (keys
   * [entries][d], float32) for the G query heads of its group: for t < m,
   * z[k·stride + t] = Σ_i key_i·(mus[k·d + i] + Σ_{j≥i} quad[k·d·d + i·d + j]·key_j), with `quad`
   * upper triangles (lower triangles ignored) or null for the linear part alone. Optional, as gram64.
   */
  eaLogits64?(
    z: Float64Array, keys: Float32Array, s0: number, m: number, d: number, G: number,
    mus: Float64Array, quad: Float64Array | null, stride: number,
  ): void;

  /**
   * Expected Attention's pre-RoPE query moments: for each of the H query heads, rows
   * start … start + n − 1 of the post-RoPE queries q ([rows][qStride], head h at h·d) rotated back
   * by cos/sin ([n][d/2], half-split pairs), their mean into mean[h·d …] and, unless cov is null,
   * their population covariance (float64, full symmetric) into cov[h·d·d …]. Optional, as gram64.
   */
  eaQueryMoments64?(
    mean: Float64Array, cov: Float64Array | null, q: Float32Array, qStride: number, start: number, n: number, H: number, d: number,
    cos: Float64Array, sin: Float64Array,
  ): void;

  /**
   * Expected Attention's float64 log-scores of one KV head from the logits z [G][stride] of its m
   * non-sink keys (entries s0 … s0 + m − 1; values [entries][d], or the head's pages: pages[p]
   * holds entries p·E … p·E + E − 1 as [E][d], every page of the same length E·d): log-softmax per
   * query head, log-mean-exp over the G heads, then, with useVnorm, log(p + epsilon) + log‖v‖₂,
   * into out[s0 …]. Returns the largest score written. Optional, as gram64 (expected-attention.ts
   * runs the same operations in TypeScript where it is absent).
   */
  eaScores64?(
    out: Float64Array, z: Float64Array, stride: number, s0: number, m: number, G: number,
    values: Float32Array | readonly Float32Array[], d: number, useVnorm: boolean, epsilon: number,
  ): number;

  /**
   * For query heads h0 … h0 + G − 1 of one KV head: the causal softmax attention (float64) of
   * pass rows first … first + w − 1 of q against the T keys [T][d], scaled by `scale`, a row seeing
   * the keys whose position (keyPositions) is ≤ its own (rowPositions, [w]); summed over the rows,
   * each times weights[r] (null: 1), into acc[k·(T − w) + t] for t < T − w. Logits from the same
   * float32 GEMM as matmul. Optional: snapkv.ts computes it row by row where it is absent.
   */
  windowSoftmaxSums?(
    acc: Float64Array, q: Float32Array, qStride: number, h0: number, G: number, d: number, first: number, w: number,
    keys: Float32Array, T: number, keyPositions: Int32Array, rowPositions: Int32Array, scale: number, weights: Float64Array | null,
  ): void;

  /**
   * out[t] += ‖block·v_t‖₁ / divisor for t < T, v_t the value row rows[t] of values [·][hd] (rows
   * null: row t) and block [D][hd]; the products are float32 dot products over hd, the norms summed
   * in float64. Optional: critical.ts uses matmul where absent.
   */
  valueNormsL1?(out: Float64Array, values: Float32Array, block: Float32Array, T: number, D: number, hd: number, divisor: number, rows?: Int32Array | null): void;

  /**
   * The attention each key receives, for the presses that score entries by it (observed
   * attention, NonCausalAttn, KVzip): per query head, the column sums or maxima of a row-softmax
   * over one KV head's keys, rows × keys never held at once. Optional: src/presses/
   * attention-columns.ts computes the same from `matmul` where a backend lacks it.
   */
  pressAttention?(a: PressAttentionArgs): void;
}

/**
 * Row r of query head i is q[r·qStride + heads[i] …] (headDim floats); it sees the keys
 * [lo[r], hi[r]) of `keys` ([n][headDim]) with logits scale·q·k, plus pad[r] keys outside the
 * cache whose logit is padLogit, in one softmax; its probabilities × rowWeight[r] are summed
 * (mode 'sum') or maxed ('max') per key into out[i·n + t], on top of what out holds.
 */
export interface PressAttentionArgs {
  out: Float64Array;
  q: Float32Array;
  qStride: number;
  heads: Int32Array;
  keys: Float32Array;
  n: number;
  headDim: number;
  rows: number;
  lo: Int32Array;
  hi: Int32Array;
  pad: Int32Array | null;
  padLogit: number;
  scale: number;
  rowWeight: Float32Array | null;
  mode: 'sum' | 'max';
}

/**
 * Attention over a cache whose KV heads have independent lengths (heads evicted by a press
 * keep different numbers of entries).
 *
 * The `rows` new tokens are the last `rows` entries of every KV head, so new query i (0-based)
 * of a head with `lengths[g]` entries sees entries [0, lengths[g] − rows + i]. Query head h
 * reads KV head floor(h / (numHeads / numKvHeads)).
 */
export interface AttentionArgs {
  /** [rows][numHeads·headDim] output. */
  out: Float32Array;
  /** [rows][numHeads·headDim] post-RoPE queries. */
  q: Float32Array;
  rows: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Per KV head: [capacity][headDim] post-RoPE keys; only the first lengths[g] rows are valid. */
  keys: Float32Array[];
  /** Per KV head: [capacity][headDim] values. */
  values: Float32Array[];
  /** Per KV head: number of valid entries (including the `rows` new ones). */
  lengths: Int32Array;
  /** Logit scale, 1/sqrt(headDim) for every supported architecture. */
  scale: number;
  /** At least max(lengths) floats of scratch space. */
  scratch: Float32Array;
}

/** What a paged attention kernel reads of one layer's cache (a LayerCache is one). */
export interface PagedKv {
  /** Format (element type, row bytes) and entries per page. */
  readonly pool: Pick<PagePool, 'fmt' | 'pageEntries'>;
  /** Per KV head: its pages; entry t is slot t % pageEntries of page ⌊t / pageEntries⌋. */
  readonly pages: readonly (readonly KvPage[])[];
  /** Per KV head: number of valid entries (including the `rows` new ones, last). */
  readonly lengths: Int32Array;
  /**
   * Per KV head: the key channels its pages store (ascending; the pages' keyFmt), or null for all
   * headDim. Absent: every head stores all channels.
   */
  readonly keyChannels?: readonly (Int32Array | null)[];
}

/** AttentionArgs over a paged cache (same causal rule), with an optional sliding window. */
export interface PagedAttentionArgs {
  /** [rows][numHeads·headDim] output. */
  out: Float32Array;
  /** [rows][numHeads·headDim] post-RoPE queries. */
  q: Float32Array;
  rows: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  cache: PagedKv;
  /** [rows] positions of the query rows (ascending). */
  queryPositions: Int32Array;
  /**
   * Sliding window (Gemma-3's local layers): a query at position p sees only the entries at
   * positions > p − window. Undefined: every earlier entry.
   */
  window?: number;
  scale: number;
  /** At least max(lengths) floats of scratch space. */
  scratch: Float32Array;
  /**
   * Optional column sums, [numKvHeads][columnStride] float64 (columnStride ≥ every head's
   * length): each query row's softmax probability of entry t, for every query head of KV head g,
   * is added to columnSums[g·columnStride + t] (on top of what it holds) — the attention each
   * entry received in this pass, for presses that rank by it (observed attention). Every
   * attentionPaged honours it; the attention output does not change.
   */
  columnSums?: Float64Array | null;
  columnStride?: number;
}
