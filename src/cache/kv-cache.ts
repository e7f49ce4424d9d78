/**
 * The KV cache: per layer, per KV head, contiguous post-RoPE keys and values with their own
 * length and the original position of every entry. Heads are independent, so head-adaptive
 * presses keep different numbers of entries per head and `keep` really frees their memory.
 * Entries always stay in ascending position order.
 */
export class LayerCache {
  /** Per KV head: [capacity][headDim] post-RoPE keys. */
  keys: Float32Array[];
  /** Per KV head: [capacity][headDim] values. */
  values: Float32Array[];
  /** Per KV head: [capacity] original position of each entry. */
  positions: Int32Array[];
  /** Per KV head: number of valid entries. */
  readonly lengths: Int32Array;

  constructor(readonly numKvHeads: number, readonly headDim: number, capacity = 0) {
    this.keys = Array.from({ length: numKvHeads }, () => new Float32Array(capacity * headDim));
    this.values = Array.from({ length: numKvHeads }, () => new Float32Array(capacity * headDim));
    this.positions = Array.from({ length: numKvHeads }, () => new Int32Array(capacity));
    this.lengths = new Int32Array(numKvHeads);
  }

  capacity(head: number): number {
    return this.positions[head].length;
  }

  /** Grows every head to hold at least `extra` more entries (doubling, so appends amortise). */
  reserve(extra: number): void {
    for (let g = 0; g < this.numKvHeads; g++) {
      const need = this.lengths[g] + extra;
      if (need <= this.capacity(g)) continue;
      this.resize(g, Math.max(need, 2 * this.capacity(g)));
    }
  }

  /**
   * Appends `rows` tokens. k and v are laid out [rows][numKvHeads·headDim] as the projections
   * produce them; positions[r] is the position of row r.
   */
  append(k: Float32Array, v: Float32Array, positions: ArrayLike<number>, rows: number): void {
    this.reserve(rows);
    const hd = this.headDim, stride = this.numKvHeads * hd;
    for (let g = 0; g < this.numKvHeads; g++) {
      const K = this.keys[g], V = this.values[g], P = this.positions[g];
      let n = this.lengths[g];
      for (let r = 0; r < rows; r++, n++) {
        const src = r * stride + g * hd;
        K.set(k.subarray(src, src + hd), n * hd);
        V.set(v.subarray(src, src + hd), n * hd);
        P[n] = positions[r];
      }
      this.lengths[g] = n;
    }
  }

  /**
   * Keeps, for each KV head g, the entries at `indices[g]` (indices into the head's current
   * entries, any order, no duplicates) in ascending order, and releases the memory of the rest.
   */
  keep(indices: readonly ArrayLike<number>[]): void {
    if (indices.length !== this.numKvHeads) throw new Error(`keep: got indices for ${indices.length} heads, the layer has ${this.numKvHeads}`);
    for (let g = 0; g < this.numKvHeads; g++) {
      const len = this.lengths[g];
      const sorted = Int32Array.from(indices[g]).sort();
      for (let i = 0; i < sorted.length; i++) {
        const t = sorted[i];
        if (!(t >= 0 && t < len) || (i > 0 && sorted[i - 1] === t)) throw new Error(`keep: head ${g} index ${t} is out of range [0, ${len}) or repeated`);
      }
      const hd = this.headDim, n = sorted.length;
      const K = new Float32Array(n * hd), V = new Float32Array(n * hd), P = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const t = sorted[i];
        K.set(this.keys[g].subarray(t * hd, (t + 1) * hd), i * hd);
        V.set(this.values[g].subarray(t * hd, (t + 1) * hd), i * hd);
        P[i] = this.positions[g][t];
      }
      this.keys[g] = K;
      this.values[g] = V;
      this.positions[g] = P;
      this.lengths[g] = n;
    }
  }

  /** Drops every entry whose position is ≥ `position` (entries are position-sorted). */
  truncate(position: number): void {
    for (let g = 0; g < this.numKvHeads; g++) {
      let n = this.lengths[g];
      while (n > 0 && this.positions[g][n - 1] >= position) n--;
      this.lengths[g] = n;
    }
  }

  /** Keys of head g as a [length][headDim] view (no copy). */
  headKeys(g: number): Float32Array {
    return this.keys[g].subarray(0, this.lengths[g] * this.headDim);
  }

  headValues(g: number): Float32Array {
    return this.values[g].subarray(0, this.lengths[g] * this.headDim);
  }

  headPositions(g: number): Int32Array {
    return this.positions[g].subarray(0, this.lengths[g]);
  }

  /** Bytes of the valid keys and values (f32). */
  bytes(): number {
    let n = 0;
    for (let g = 0; g < this.numKvHeads; g++) n += this.lengths[g];
    return n * this.headDim * 2 * 4;
  }

  /** Bytes actually allocated, including spare capacity and positions. */
  allocatedBytes(): number {
    let n = 0;
    for (let g = 0; g < this.numKvHeads; g++) n += this.keys[g].byteLength + this.values[g].byteLength + this.positions[g].byteLength;
    return n;
  }

  clone(): LayerCache {
    const c = new LayerCache(this.numKvHeads, this.headDim, 0);
    for (let g = 0; g < this.numKvHeads; g++) {
      const n = this.lengths[g];
      c.keys[g] = this.keys[g].slice(0, n * this.headDim);
      c.values[g] = this.values[g].slice(0, n * this.headDim);
      c.positions[g] = this.positions[g].slice(0, n);
      c.lengths[g] = n;
    }
    return c;
  }

  private resize(g: number, capacity: number): void {
    const hd = this.headDim, n = this.lengths[g];
    const K = new Float32Array(capacity * hd), V = new Float32Array(capacity * hd), P = new Int32Array(capacity);
    K.set(this.keys[g].subarray(0, n * hd));
    V.set(this.values[g].subarray(0, n * hd));
    P.set(this.positions[g].subarray(0, n));
    this.keys[g] = K;
    this.values[g] = V;
    this.positions[g] = P;
  }
}

/** The whole model's cache, plus the position the next token will take. */
export class KVCache {
  readonly layers: LayerCache[];
  /**
   * Position of the next token: the number of tokens seen, not the number kept — positions are
   * never renumbered by eviction (KeyRerotation is the press that re-rotates and resets it).
   */
  nextPosition = 0;

  constructor(numLayers: number, numKvHeads: number, headDim: number, capacity = 0) {
    this.layers = Array.from({ length: numLayers }, () => new LayerCache(numKvHeads, headDim, capacity));
  }

  /** Reserves room for `extra` more tokens in every layer and head (call before a token loop). */
  reserve(extra: number): void {
    for (const l of this.layers) l.reserve(extra);
  }

  /** Applies per-layer, per-head keep indices (see LayerCache.keep). */
  keep(perLayer: readonly (readonly ArrayLike<number>[])[]): void {
    perLayer.forEach((idx, l) => this.layers[l].keep(idx));
  }

  /** Forgets every token at position ≥ `position` and continues from there. */
  truncate(position: number): void {
    if (!Number.isInteger(position) || position < 0 || position > this.nextPosition) throw new Error(`truncate: position ${position} is outside [0, ${this.nextPosition}]`);
    for (const l of this.layers) l.truncate(position);
    this.nextPosition = position;
  }

  /** Bytes of the valid keys and values over all layers and heads. */
  bytes(): number {
    return this.layers.reduce((s, l) => s + l.bytes(), 0);
  }

  allocatedBytes(): number {
    return this.layers.reduce((s, l) => s + l.allocatedBytes(), 0);
  }

  /** Entries kept per layer and KV head: [layers][kvHeads]. */
  lengths(): number[][] {
    return this.layers.map((l) => Array.from(l.lengths));
  }

  clone(): KVCache {
    const c = new KVCache(0, 0, 0);
    (c.layers as LayerCache[]).push(...this.layers.map((l) => l.clone()));
    c.nextPosition = this.nextPosition;
    return c;
  }
}
