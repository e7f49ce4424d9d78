import { LayerContext, type ModelParts } from '../model/layer-context.js';
import { checkRatio, requirePress, type KeepIndices, type Press, type PressPhase, type ScoreObserver } from './press.js';

export interface DecodingOptions {
  /** Decoding forward passes between two compressions (default 512). */
  compressionInterval?: number;
  /** Entries per KV head left after a compression (default 2048). */
  targetSize?: number;
  /** Forward passes whose hidden states are kept for scoring, 0 = only the current one (default 256). */
  hiddenStatesBufferSize?: number;
}

/**
 * Compression during generation (kvpress `DecodingPress`, spec §2.7). It does nothing during a
 * prefill. Every decoding forward pass (one generated token, or a multi-token question) appends
 * its attention-input hidden states, positions and post-RoPE queries to a per-layer buffer and
 * counts one step; after `compressionInterval` steps — or at once when a pass brings at least
 * `targetSize` tokens — the base press scores the whole cache with the buffered states as its
 * rows and keeps `targetSize` entries per KV head; the counter resets and the buffer is cleared.
 * After each step the buffer keeps only its last `hiddenStatesBufferSize` passes, so a compression
 * sees those and the current one (as in the library: append, compress, then trim). The cache
 * therefore stays within [targetSize, targetSize + compressionInterval − 1] once it has grown
 * past targetSize.
 *
 * The base press is any press that acts on a prefill context through its compressionRatio (a
 * ScorerPress, AdaKV…): it receives a context whose rows are the buffered tokens — the newest
 * entries of every head, as a prefill's rows are — and the ratio that leaves targetSize entries
 * per head (in total over the heads, for head-adaptive presses whose heads hold different counts).
 * The buffered rows are the decoding passes' own float32 hidden states and queries; the entries
 * the base press scores are the cache's as stored (the prompt's and every generated token's), read
 * one KV head at a time as in a prefill, never through a float32 copy of the cache.
 *
 * Differences from the Python library: the state is per instance and reset by a prefill (or
 * `reset()`), as there is no context manager to exit; the ratio is solved exactly instead of by a
 * 20-step bisection. Replayed against kvpress's own decoding traces (test/golden-decoding.test.ts):
 * the same compressions at the same steps with the same kept sets up to ties. With AdaKV inside,
 * kvpress only masks, and its attention patch writes "fake" keys into the masked slots that its
 * next compression scores again (Expected Attention ranks those huge keys high and unmasks them);
 * here AdaKV evicts, so the runs agree up to the second compression and differ after it.
 */
export class DecodingPress implements Press {
  readonly phase: PressPhase = 'decoding';
  readonly name: string;
  readonly compressionInterval: number;
  readonly targetSize: number;
  readonly hiddenStatesBufferSize: number;
  private readonly state = new Map<number, LayerState>();

  constructor(readonly basePress: Press, options: DecodingOptions = {}) {
    requirePress(basePress, 'DecodingPress');
    this.name = `decoding_${basePress.name}`;
    this.compressionInterval = positiveInt(options.compressionInterval ?? 512, 'compressionInterval');
    this.targetSize = positiveInt(options.targetSize ?? 2048, 'targetSize');
    const b = options.hiddenStatesBufferSize ?? 256;
    if (!Number.isInteger(b) || b < 0) throw new RangeError(`hiddenStatesBufferSize must be an integer ≥ 0, got ${b}`);
    this.hiddenStatesBufferSize = b;
  }

  /** A decoding press removes nothing from the prompt: its budget is targetSize. */
  get compressionRatio(): number {
    return 0;
  }

  set compressionRatio(r: number) {
    if (checkRatio(r) !== 0) throw new RangeError(`${this.name} compresses to targetSize during decoding and takes no compression ratio (got ${r})`);
  }

  /** Scores of the decoding-time compressions go to the base press's observer. */
  get observer(): ScoreObserver | null {
    return this.basePress.observer ?? null;
  }

  set observer(o: ScoreObserver | null) {
    this.basePress.observer = o;
  }

  validate(model: ModelParts): void {
    this.basePress.validate?.(model);
  }

  reset(): void {
    this.state.clear();
    this.basePress.reset?.();
  }

  compress(ctx: LayerContext): KeepIndices | null {
    if (ctx.isPrefill) {
      // A new sequence: forget what the previous one buffered.
      this.state.delete(ctx.layer);
      this.onPrefill(ctx);
      return null;
    }
    let s = this.state.get(ctx.layer);
    if (!s) this.state.set(ctx.layer, (s = new LayerState(ctx)));
    this.onDecode(ctx);
    s.buffer.push(ctx);
    s.steps++;
    const target = this.targetFor(ctx);
    let keep: KeepIndices | null = null;
    if (s.steps >= this.compressionInterval || ctx.rows >= target) {
      keep = this.compressBuffered(ctx, s.buffer, target);
      s.steps = 0;
      s.buffer.clear();
    }
    s.buffer.keepLast(this.hiddenStatesBufferSize);
    return keep;
  }

  /** Entries per KV head to keep at a compression of this layer. */
  protected targetFor(_ctx: LayerContext): number {
    return this.targetSize;
  }

  protected onPrefill(_ctx: LayerContext): void {}

  protected onDecode(_ctx: LayerContext): void {}

  private compressBuffered(ctx: LayerContext, buffer: RowBuffer, target: number): KeepIndices | null {
    const ratio = ratioForTotal(ctx.cache.lengths, target * ctx.cache.lengths.length);
    if (ratio === 0) return null;
    const n = buffer.rows;
    const sub = new LayerContext(ctx.model, ctx.layer, ctx.kvCache, true, n, buffer.hiddenView(), buffer.positionsView(), buffer.queriesView());
    const base = this.basePress, previous = base.compressionRatio;
    base.compressionRatio = ratio;
    try {
      return base.compress(sub);
    } finally {
      base.compressionRatio = previous;
    }
  }
}

/**
 * kvpress `CompressionRatioDecodingPress`: like DecodingPress, but each compression keeps
 * max(1, floor(seen·(1 − targetCompressionRatio))) entries per head, `seen` the tokens this layer
 * has processed (the prefill's, when the press saw it, otherwise counted from the position of
 * the first decoding pass, as the library does).
 */
export class CompressionRatioDecodingPress extends DecodingPress {
  readonly targetCompressionRatio: number;
  private readonly seen = new Map<number, number>();

  constructor(basePress: Press, targetCompressionRatio = 0.5, options: Omit<DecodingOptions, 'targetSize'> = {}) {
    super(basePress, { ...options, targetSize: 1 });
    this.targetCompressionRatio = checkRatio(targetCompressionRatio, 'targetCompressionRatio');
  }

  override reset(): void {
    super.reset();
    this.seen.clear();
  }

  protected override onPrefill(ctx: LayerContext): void {
    this.seen.set(ctx.layer, ctx.rows);
  }

  protected override onDecode(ctx: LayerContext): void {
    const before = this.seen.get(ctx.layer) ?? ctx.positions[0];
    this.seen.set(ctx.layer, before + ctx.rows);
  }

  protected override targetFor(ctx: LayerContext): number {
    return Math.max(1, Math.floor((this.seen.get(ctx.layer) ?? 0) * (1 - this.targetCompressionRatio)));
  }
}

/**
 * kvpress `PrefillDecodingPress`: one press for the prefill, another (a DecodingPress) for the
 * decoding passes; either may be null. Its compressionRatio is the prefill press's.
 */
export class PrefillDecodingPress implements Press {
  readonly phase: PressPhase = 'both';
  readonly name: string;

  constructor(readonly prefillingPress: Press | null, readonly decodingPress: DecodingPress | null) {
    this.name = `prefill_decoding_${(prefillingPress ?? decodingPress?.basePress)?.name ?? 'none'}`;
  }

  get compressionRatio(): number {
    return this.prefillingPress?.compressionRatio ?? 0;
  }

  set compressionRatio(r: number) {
    if (this.prefillingPress) this.prefillingPress.compressionRatio = r;
    else checkRatio(r);
  }

  /** The prefill's scores are the ones observed (`kvpress scores`). */
  get observer(): ScoreObserver | null {
    return this.prefillingPress?.observer ?? null;
  }

  set observer(o: ScoreObserver | null) {
    if (this.prefillingPress) this.prefillingPress.observer = o;
  }

  validate(model: ModelParts): void {
    this.prefillingPress?.validate?.(model);
    this.decodingPress?.validate(model);
  }

  reset(): void {
    this.prefillingPress?.reset?.();
    this.decodingPress?.reset();
  }

  compress(ctx: LayerContext): KeepIndices | null {
    if (ctx.isPrefill) {
      this.decodingPress?.compress(ctx);
      return this.prefillingPress?.compress(ctx) ?? null;
    }
    return this.decodingPress?.compress(ctx) ?? null;
  }
}

/**
 * The compression ratio r that keeps `total` entries over the heads when each head of length
 * L_g keeps floor(L_g·(1 − r)) — the count ScorerPress and AdaKV derive from a ratio. 0 when the
 * heads hold no more than `total`. With equal lengths this is exactly `total / heads` per head.
 * The returned r lies strictly inside the interval of ratios giving that count, so the presses'
 * own float evaluation of floor(L·(1 − r)) lands on it.
 */
export function ratioForTotal(lengths: ArrayLike<number>, total: number): number {
  const kept = (r: number) => {
    let n = 0;
    for (let g = 0; g < lengths.length; g++) n += Math.floor(lengths[g] * (1 - r));
    return n;
  };
  if (kept(0) <= total) return 0;
  // Smallest r with kept(r) ≤ total, then the end of the interval where kept stays at that count.
  let lo = 0, hi = 1;
  for (let i = 0; i < 64; i++) {
    const mid = (lo + hi) / 2;
    if (kept(mid) <= total) hi = mid; else lo = mid;
  }
  const count = kept(hi);
  let a = hi, b = 1;
  for (let i = 0; i < 64; i++) {
    const mid = (a + b) / 2;
    if (kept(mid) === count) a = mid; else b = mid;
  }
  return (hi + a) / 2;
}

function positiveInt(x: number, name: string): number {
  if (!Number.isInteger(x) || x < 1) throw new RangeError(`${name} must be an integer ≥ 1, got ${x}`);
  return x;
}

/** One layer's decoding state: steps since the last compression and the buffered passes. */
class LayerState {
  steps = 0;
  readonly buffer: RowBuffer;

  constructor(ctx: LayerContext) {
    this.buffer = new RowBuffer(ctx.config.hiddenSize, ctx.config.numHeads * ctx.config.headDim);
  }
}

/**
 * The buffered rows of the last passes, contiguous: hidden states, positions and post-RoPE
 * queries. Passes are dropped from the front by moving a start offset; the storage is compacted
 * only when it must grow, so appending a token costs amortised O(row size) and no allocation.
 */
class RowBuffer {
  private hidden = new Float32Array(0);
  private queries = new Float32Array(0);
  private positions = new Int32Array(0);
  private start = 0;
  private end = 0;
  /** Rows of each buffered pass, oldest first. */
  private readonly passes: number[] = [];

  constructor(private readonly D: number, private readonly Q: number) {}

  get rows(): number {
    return this.end - this.start;
  }

  push(ctx: LayerContext): void {
    const n = ctx.rows, D = this.D, Q = this.Q;
    this.ensure(n);
    this.hidden.set(ctx.hidden.subarray(0, n * D), this.end * D);
    this.queries.set(ctx.queries.subarray(0, n * Q), this.end * Q);
    this.positions.set(ctx.positions.subarray(0, n), this.end);
    this.end += n;
    this.passes.push(n);
  }

  keepLast(passes: number): void {
    while (this.passes.length > passes) this.start += this.passes.shift()!;
    if (this.start === this.end) this.start = this.end = 0;
  }

  clear(): void {
    this.passes.length = 0;
    this.start = this.end = 0;
  }

  hiddenView(): Float32Array {
    return this.hidden.subarray(this.start * this.D, this.end * this.D);
  }

  queriesView(): Float32Array {
    return this.queries.subarray(this.start * this.Q, this.end * this.Q);
  }

  positionsView(): Int32Array {
    return this.positions.subarray(this.start, this.end);
  }

  private ensure(extra: number): void {
    const cap = this.positions.length;
    if (this.end + extra <= cap) return;
    const live = this.end - this.start, D = this.D, Q = this.Q;
    if (live + extra <= cap && this.start > 0) {
      this.hidden.copyWithin(0, this.start * D, this.end * D);
      this.queries.copyWithin(0, this.start * Q, this.end * Q);
      this.positions.copyWithin(0, this.start, this.end);
    } else {
      const size = Math.max(2 * cap, live + extra, 16);
      const h = new Float32Array(size * D), q = new Float32Array(size * Q), p = new Int32Array(size);
      h.set(this.hiddenView());
      q.set(this.queriesView());
      p.set(this.positionsView());
      this.hidden = h;
      this.queries = q;
      this.positions = p;
    }
    this.end = live;
    this.start = 0;
  }
}
