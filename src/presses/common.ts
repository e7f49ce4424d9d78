import { KVCache } from '../cache/kv-cache.js';
import { LayerContext } from '../model/layer-context.js';

/**
 * Score helpers shared by the baseline presses (kvpress's `SnapKVPress.compute_window_attention`,
 * GQA averaging, 1-D pooling) and the sub-contexts that chunk-wise wrappers hand their inner press.
 */

/** Throws a one-line error unless `x` is an integer in [min, max]. */
export function checkInt(x: number, name: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(x) || x < min || x > max) {
    throw new RangeError(`${name} must be an integer${max < Number.MAX_SAFE_INTEGER ? ` in [${min}, ${max}]` : ` ≥ ${min}`}, got ${x}`);
  }
  return x;
}

/** Query rows per matmul when attention probabilities are computed block by block. */
const ROW_BLOCK = 64;

/**
 * Causal attention probabilities of the pass's query rows `from` … rows − 1 against every cached
 * entry, query head by query head: `visit(h, row, probs, T, visible)` receives row `row` of head h
 * as probs[0 … T) (T the length of h's KV head), of which the first `visible` entries are those at
 * or before the row's position and the rest 0, in a buffer reused by the next call. Logits come
 * from the backend's float32 matmul with scale 1/√d, in blocks of 64 rows (memory O(64·T), never
 * T×T); the softmax runs in float64. Masking by position keeps it causal whatever an earlier press
 * evicted.
 */
export function forEachAttentionRow(ctx: LayerContext, from: number, visit: (h: number, row: number, probs: Float64Array, T: number, visible: number) => void): void {
  const c = ctx.config, hd = c.headDim, H = c.numHeads, group = H / c.numKvHeads, qStride = H * hd;
  const scale = 1 / Math.sqrt(hd);
  let longest = 0;
  for (const n of ctx.cache.lengths) longest = Math.max(longest, n);
  const q = new Float32Array(ROW_BLOCK * hd), logits = new Float32Array(ROW_BLOCK * longest), probs = new Float64Array(longest);
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / group), T = ctx.cache.lengths[g], P = ctx.cache.headPositions(g);
    for (let r0 = from; r0 < ctx.rows; r0 += ROW_BLOCK) {
      const m = Math.min(ROW_BLOCK, ctx.rows - r0);
      for (let i = 0; i < m; i++) q.set(ctx.queries.subarray((r0 + i) * qStride + h * hd, (r0 + i) * qStride + (h + 1) * hd), i * hd);
      ctx.backend.matmul(logits, q, ctx.cache.headKeys(g), m, T, hd);
      let visible = 0;
      for (let i = 0; i < m; i++) {
        // Entries are in ascending position order, so the visible ones are a prefix that grows with the row.
        const pos = ctx.positions[r0 + i], lo = i * T;
        while (visible < T && P[visible] <= pos) visible++;
        let max = -Infinity;
        for (let t = 0; t < visible; t++) {
          const z = logits[lo + t] * scale;
          probs[t] = z;
          if (z > max) max = z;
        }
        let sum = 0;
        for (let t = 0; t < visible; t++) sum += probs[t] = Math.exp(probs[t] - max);
        for (let t = 0; t < visible; t++) probs[t] /= sum;
        probs.fill(0, visible, T);
        visit(h, r0 + i, probs, T, visible);
      }
    }
  }
}

/**
 * Attention of the last `window` queries of the pass against every cached entry, per query head:
 * result[h] is [window][T_g − window], only the columns of the keys *outside* the window, as
 * kvpress's `SnapKVPress.compute_window_attention` returns them (the softmax covers all T_g keys).
 */
export function windowAttention(ctx: LayerContext, window: number): Float64Array[] {
  checkInt(window, 'window', 1, ctx.rows);
  const first = ctx.rows - window, G = ctx.config.numHeads / ctx.config.numKvHeads;
  const out = Array.from({ length: ctx.config.numHeads }, (_, h) => {
    const T = ctx.cache.lengths[Math.floor(h / G)];
    if (T < window) throw new RangeError(`window ${window} is longer than the ${T} cached entries of KV head ${Math.floor(h / G)}`);
    return new Float64Array(window * (T - window));
  });
  forEachAttentionRow(ctx, first, (h, row, probs, T) => out[h].set(probs.subarray(0, T - window), (row - first) * (T - window)));
  return out;
}

/** Mean over the rows of a [rows][cols] matrix. */
export function meanRows(m: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const out = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let t = 0, o = r * cols; t < cols; t++) out[t] += m[o + t];
  for (let t = 0; t < cols; t++) out[t] /= rows;
  return out;
}

/**
 * GQA folding: the score of KV head g is the mean over its query heads g·G … g·G + G − 1
 * (HF's repeat_kv order). Every query head of a group must have the same length.
 */
export function groupMean(perQueryHead: readonly ArrayLike<number>[], numKvHeads: number): Float64Array[] {
  const group = perQueryHead.length / numKvHeads;
  if (!Number.isInteger(group)) throw new Error(`groupMean: ${perQueryHead.length} query heads do not split into ${numKvHeads} KV heads`);
  const out: Float64Array[] = [];
  for (let g = 0; g < numKvHeads; g++) {
    const n = perQueryHead[g * group].length, s = new Float64Array(n);
    for (let j = 0; j < group; j++) {
      const x = perQueryHead[g * group + j];
      for (let t = 0; t < n; t++) s[t] += x[t];
    }
    for (let t = 0; t < n; t++) s[t] /= group;
    out.push(s);
  }
  return out;
}

/**
 * torch's `avg_pool1d(x, kernel, stride=1, padding=kernel//2)` with the default
 * count_include_pad: every output divides by `kernel`, zeros beyond the ends included.
 * `kernel` must be odd so the output keeps the input's length.
 */
export function avgPool1d(x: ArrayLike<number>, kernel: number): Float64Array {
  const n = x.length, half = kernel >> 1, out = new Float64Array(n);
  // Running window sum over x[t − half … t + half].
  let sum = 0;
  for (let t = 0; t < Math.min(half, n); t++) sum += x[t];
  for (let t = 0; t < n; t++) {
    if (t + half < n) sum += x[t + half];
    if (t - half - 1 >= 0) sum -= x[t - half - 1];
    out[t] = sum / kernel;
  }
  return out;
}

/** Largest finite value over every head's scores (−Infinity when there is none). */
export function globalMax(scores: readonly ArrayLike<number>[]): number {
  let m = -Infinity;
  for (const s of scores) for (let t = 0; t < s.length; t++) if (s[t] > m && s[t] < Infinity) m = s[t];
  return m;
}

/**
 * Appends `n` protected entries to every head's scores with the value max + 1, max taken over all
 * heads (kvpress pads windows and sinks this way so they always survive the top-k).
 */
export function padProtected(scores: readonly Float64Array[], n: number): Float64Array[] {
  const m = globalMax(scores);
  const v = Number.isFinite(m) ? m + 1 : 1;
  return scores.map((s) => {
    const out = new Float64Array(s.length + n);
    out.set(s);
    out.fill(v, s.length);
    return out;
  });
}

/** floor(T·(1 − ratio)), kvpress's kept count. */
export function keptCount(T: number, ratio: number): number {
  return Math.floor(T * (1 - ratio));
}

/** Throws unless every KV head of the layer holds the same number of entries; returns it. */
export function uniformLength(ctx: LayerContext, who: string): number {
  const L = ctx.cache.lengths, T = L[0];
  for (let g = 1; g < L.length; g++) {
    if (L[g] !== T) throw new Error(`${who} needs every KV head to hold the same number of entries (a head-adaptive press ran before it)`);
  }
  return T;
}

/**
 * A context over a subset of the pass: rows `rows` (ascending, distinct indices into the pass) and,
 * for every KV head, the cache entries at the same indices. Only valid when the cache holds exactly
 * this pass's tokens (a prefill), which wrappers that score pieces of a prefill check first.
 * A contiguous range is a view (no copy); otherwise keys and values are gathered, and hidden
 * states and queries only when the inner press first reads them (key/value-only scorers never do).
 */
export function subContext(ctx: LayerContext, rows: Int32Array): LayerContext {
  const c = ctx.config, D = c.hiddenSize, qd = c.numHeads * c.headDim, hd = c.headDim, n = rows.length;
  const from = n > 0 ? rows[0] : 0, contiguous = n === 0 || rows[n - 1] - from === n - 1;
  const pick = <A extends Float32Array | Int32Array>(src: A, width: number): A => {
    if (contiguous) return src.subarray(from * width, (from + n) * width) as A;
    const out = new (src.constructor as new (n: number) => A)(n * width);
    for (let i = 0; i < n; i++) out.set(src.subarray(rows[i] * width, (rows[i] + 1) * width), i * width);
    return out;
  };
  const sub = ctx.cache.subset(rows);
  const kv = new KVCache(ctx.kvCache.layers.length, c.numKvHeads, hd, sub.pool);
  kv.layers[ctx.layer] = sub;
  return new LayerContext(ctx.model, ctx.layer, kv, true, n, () => pick(ctx.hidden, D), pick(ctx.positions, 1), () => pick(ctx.queries, qd));
}

/** Throws unless the layer's cache holds exactly this pass's tokens (every head: rows entries). */
export function requirePrefillCache(ctx: LayerContext, who: string): number {
  for (const n of ctx.cache.lengths) {
    if (n !== ctx.rows) throw new Error(`${who} splits a prefill into pieces and needs the cache to hold exactly the ${ctx.rows} prompt tokens, found ${n}`);
  }
  return ctx.rows;
}

/** Ascending Int32Array [from, to). */
export function range(from: number, to: number): Int32Array {
  const r = new Int32Array(Math.max(0, to - from));
  for (let i = 0; i < r.length; i++) r[i] = from + i;
  return r;
}
