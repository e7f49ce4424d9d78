import { decodeRow, encodeRow, kvFormat, type KvDtype, type KvFormat, type RowViews } from './format.js';

/**
 * Entries per page unless asked otherwise. Measured (bench/kernels.ts `kv pages`): decode
 * attention over 64-entry pages is within noise of 256-entry ones, while a page is the
 * granularity of what a compressed head may waste — a short head (stories260K keeps 10–60
 * entries) then holds at most one partly used page of 64.
 */
export const DEFAULT_PAGE_ENTRIES = 64;
/** Idle pages the pool keeps for reuse (one answer truncated, the next one appended); the rest are released. */
export const DEFAULT_MAX_IDLE_PAGES = 16;

/**
 * Where a pool's pages live. By default each page is an ArrayBuffer of its own; a backend whose
 * kernels read another memory (the WebAssembly backend: its linear memory) hands the pool its
 * own regions, so that its kernels read the pages in place.
 */
export interface PageMemory {
  /** A region of `bytes` bytes: the buffer it lies in, its byte offset there, and its address for the kernels. */
  alloc(bytes: number): PageRegion;
  /** Gives back a region that alloc returned (its views must no longer be used). */
  free(address: number, bytes: number): void;
  /**
   * Optional: encodes `rows` rows (row r at src[so + r·srcStride]) into dst bytes
   * [at + r·fmt.rowBytes, …), giving the bytes of encodeRow. The native addon does it about 10×
   * faster than encodeRow, which matters in a prefill (every key and value is written once).
   */
  encodeRows?(fmt: KvFormat, src: Float32Array, so: number, srcStride: number, rows: number, dst: Uint8Array, at: number): void;
}

export interface PageRegion {
  buffer: ArrayBufferLike;
  byteOffset: number;
  address: number;
}

/** Pages of a PageMemory that a cache dropped without dispose() go back when collected. */
const unreachable = new FinalizationRegistry<{ memory: PageMemory; address: number; bytes: number }>((r) => r.memory.free(r.address, r.bytes));

/**
 * One page: `entries` keys then `entries` values of one KV head, in the cache's element type,
 * then the entries' positions (Int32). Keys are `keyFmt` rows: headDim numbers, or only the kept
 * channels of a head whose key channels a press pruned (see LayerCache.pruneKeyChannels). Pages are shared between clones (copy-on-write): `refs`
 * counts the heads holding it and `used` is the highest slot any of them ever wrote plus one, so
 * a holder may append in place past `used` but must copy the page before rewriting a lower slot.
 */
export class KvPage implements RowViews {
  readonly u8: Uint8Array;
  readonly u16: Uint16Array;
  readonly i8: Int8Array;
  /** The key and value rows as f32 (meaningful for the f32 type only). */
  readonly f32: Float32Array;
  readonly pos: Int32Array;
  /** Byte offset of the values (the keys start at 0). */
  readonly vOff: number;
  /** Address of the page in its PageMemory, −1 for a page that is an ArrayBuffer of its own. */
  readonly address: number;
  /** The PageMemory the page lies in (null: an ArrayBuffer of its own). */
  readonly memory: PageMemory | null;
  refs = 1;
  used = 0;

  constructor(readonly fmt: KvFormat, readonly entries: number, region?: PageRegion, memory: PageMemory | null = null, readonly keyFmt: KvFormat = fmt) {
    const kv = entries * (keyFmt.rowBytes + fmt.rowBytes);
    const buf = region?.buffer ?? new ArrayBuffer(kv + 4 * entries), at = region?.byteOffset ?? 0;
    this.address = region?.address ?? -1;
    this.memory = region ? memory : null;
    this.u8 = new Uint8Array(buf, at, kv);
    this.u16 = new Uint16Array(buf, at, kv >>> 1);
    this.i8 = new Int8Array(buf, at, kv);
    this.f32 = new Float32Array(buf, at, kv >>> 2);
    this.pos = new Int32Array(buf, at + kv, entries);
    this.vOff = entries * keyFmt.rowBytes;
  }

  get byteLength(): number {
    return this.u8.byteLength + this.pos.byteLength;
  }
}

export interface CacheOptions {
  /** Element type of keys and values (default f32). */
  dtype?: KvDtype;
  /** Entries per page (default DEFAULT_PAGE_ENTRIES). */
  pageEntries?: number;
  /** Idle pages the pool keeps (default DEFAULT_MAX_IDLE_PAGES). */
  maxIdlePages?: number;
  /** Where pages live (default: an ArrayBuffer each); Model.newCache passes its backend's. */
  memory?: PageMemory | null;
}

/**
 * The pages of one cache and of its clones: hands out pages, takes back the ones no head holds
 * any more, keeps at most `maxIdle` of them for reuse and lets the rest go (so the memory really
 * returns to the system). Also holds the per-head transient buffers of the accessors.
 */
export class PagePool {
  readonly fmt: KvFormat;
  readonly pageBytes: number;
  private readonly idle: KvPage[] = [];
  private scratch = { keys: new Float32Array(0), values: new Float32Array(0), positions: new Int32Array(0) };
  /** Format of the keys of this pool's pages: fmt, or fewer numbers for channel-pruned heads. */
  readonly keyFmt: KvFormat;
  /** Pools of pages with narrower keys (heads with pruned key channels), by stored key width. */
  private readonly narrower = new Map<number, PagePool>();

  constructor(headDim: number, readonly dtype: KvDtype, readonly pageEntries: number, readonly maxIdle: number, readonly memory: PageMemory | null = null, keyDim = headDim) {
    if (!Number.isInteger(pageEntries) || pageEntries < 1 || pageEntries > 1 << 16) throw new Error(`KV cache: pageEntries must be an integer in [1, 65536], got ${pageEntries}`);
    if (!Number.isInteger(maxIdle) || maxIdle < 0) throw new Error(`KV cache: maxIdlePages must be an integer ≥ 0, got ${maxIdle}`);
    this.fmt = kvFormat(dtype, headDim);
    this.keyFmt = keyDim === headDim ? this.fmt : kvFormat(dtype, keyDim);
    this.pageBytes = pageEntries * (this.keyFmt.rowBytes + this.fmt.rowBytes) + 4 * pageEntries;
  }

  /**
   * The pool of pages whose keys hold `keyDim` numbers (values keep headDim), shared by every
   * layer and clone of the cache; this pool itself for headDim.
   */
  keyPool(keyDim: number): PagePool {
    if (keyDim === this.keyFmt.headDim) return this;
    let p = this.narrower.get(keyDim);
    if (!p) this.narrower.set(keyDim, (p = new PagePool(this.fmt.headDim, this.dtype, this.pageEntries, this.maxIdle, this.memory, keyDim)));
    return p;
  }

  take(): KvPage {
    const p = this.idle.pop() ?? this.newPage();
    p.refs = 1;
    p.used = 0;
    return p;
  }

  /** One holder lets go of `p`; the last one returns it to the pool. */
  release(p: KvPage): void {
    if (p.keyFmt.headDim !== this.keyFmt.headDim) return this.keyPool(p.keyFmt.headDim).release(p);
    if (--p.refs > 0) return;
    if (this.idle.length < this.maxIdle) this.idle.push(p);
    else this.drop(p);
  }

  private newPage(): KvPage {
    if (!this.memory) return new KvPage(this.fmt, this.pageEntries, undefined, null, this.keyFmt);
    const p = new KvPage(this.fmt, this.pageEntries, this.memory.alloc(this.pageBytes), this.memory, this.keyFmt);
    unreachable.register(p, { memory: this.memory, address: p.address, bytes: this.pageBytes }, p);
    return p;
  }

  /** Lets a page go for good (a PageMemory gets its region back now, not at collection). */
  private drop(p: KvPage): void {
    if (!this.memory) return;
    unreachable.unregister(p);
    this.memory.free(p.address, this.pageBytes);
  }

  get idleBytes(): number {
    let n = this.idle.length * this.pageBytes;
    for (const p of this.narrower.values()) n += p.idleBytes;
    return n;
  }

  /** Drops idle pages beyond `keep`. */
  trim(keep = 0): void {
    while (this.idle.length > keep) this.drop(this.idle.pop()!);
    for (const p of this.narrower.values()) p.trim(keep);
  }

  /** A reusable float buffer of n numbers for the accessors (see LayerCache.headKeys). */
  floats(kind: 'keys' | 'values', n: number): Float32Array {
    if (this.scratch[kind].length < n) this.scratch[kind] = new Float32Array(Math.max(n, 2 * this.scratch[kind].length));
    return this.scratch[kind].subarray(0, n);
  }

  ints(n: number): Int32Array {
    if (this.scratch.positions.length < n) this.scratch.positions = new Int32Array(Math.max(n, 2 * this.scratch.positions.length));
    return this.scratch.positions.subarray(0, n);
  }
}

/**
 * One layer of the KV cache: per KV head, its entries (post-RoPE key, value, original position)
 * in pages from the cache's pool, entry t in slot t % pageEntries of page ⌊t / pageEntries⌋.
 * Heads are independent, so head-adaptive presses keep different numbers of entries per head and
 * `keep` really frees their memory. Entries always stay in ascending position order.
 */
export class LayerCache {
  /** Per KV head: its pages, in entry order. Read by the attention kernels in place. */
  readonly pages: KvPage[][];
  /** Per KV head: number of valid entries. */
  readonly lengths: Int32Array;
  /**
   * Per KV head: the key channels its pages store, ascending, or null for all headDim (see
   * pruneKeyChannels). Read by the attention kernels, which dot the query's kept channels only.
   */
  readonly keyChannels: (Int32Array | null)[];
  /** Per KV head, while a forward pass runs: the head as it was before its first rewrite. */
  private saved: ({ pages: KvPage[]; length: number; channels: Int32Array | null } | null)[] | null = null;
  private marks: Int32Array | null = null;
  /** One key's kept channels, gathered for encoding or decoded before scattering. */
  private keyRow = new Float32Array(0);

  constructor(readonly pool: PagePool, readonly numKvHeads: number) {
    this.pages = Array.from({ length: numKvHeads }, () => []);
    this.lengths = new Int32Array(numKvHeads);
    this.keyChannels = Array.from({ length: numKvHeads }, () => null);
  }

  /** The pool of head g's pages: the cache's, or the one of its narrower keys. */
  keyPool(g: number): PagePool {
    const ch = this.keyChannels[g];
    return ch ? this.pool.keyPool(storedKeyDim(ch.length)) : this.pool;
  }

  get headDim(): number {
    return this.pool.fmt.headDim;
  }

  get dtype(): KvDtype {
    return this.pool.dtype;
  }

  get pageEntries(): number {
    return this.pool.pageEntries;
  }

  /**
   * Appends `rows` tokens. k and v are laid out [rows][numKvHeads·headDim] as the projections
   * produce them; positions[r] is the position of row r. Takes pages one at a time.
   */
  append(k: Float32Array, v: Float32Array, positions: ArrayLike<number>, rows: number): void {
    const hd = this.headDim, stride = this.numKvHeads * hd, E = this.pageEntries, f = this.pool.fmt;
    // A run of rows into one page goes to the page memory's encoder in one call; a decode step's
    // single row is cheaper in TypeScript than a call into the addon.
    const memory = this.pool.memory, runs = rows >= 4 && f.dtype !== 'f32' && memory?.encodeRows ? memory : null;
    for (let g = 0; g < this.numKvHeads; g++) {
      let n = this.lengths[g];
      const ch = this.keyChannels[g];
      for (let r = 0; r < rows; ) {
        const slot = n % E;
        const page = slot === 0 && n / E === this.pages[g].length ? this.newPage(g) : this.writable(g, Math.floor(n / E), slot);
        if (runs && !ch) {
          const run = Math.min(rows - r, E - slot), at = slot * f.rowBytes;
          runs.encodeRows!(f, k, r * stride + g * hd, stride, run, page.u8, at);
          runs.encodeRows!(f, v, r * stride + g * hd, stride, run, page.u8, page.vOff + at);
          for (let i = 0; i < run; i++) page.pos[slot + i] = positions[r + i];
          if (slot + run > page.used) page.used = slot + run;
          r += run;
          n += run;
          continue;
        }
        if (ch) encodeRow(page.keyFmt, this.gatherKey(ch, k, r * stride + g * hd), 0, page, slot * page.keyFmt.rowBytes);
        else encodeRow(f, k, r * stride + g * hd, page, slot * f.rowBytes);
        encodeRow(f, v, r * stride + g * hd, page, page.vOff + slot * f.rowBytes);
        page.pos[slot] = positions[r];
        if (slot >= page.used) page.used = slot + 1;
        r++;
        n++;
      }
      this.lengths[g] = n;
    }
  }

  /** Throws unless `indices` are valid keep indices for this layer (see keep). */
  checkKeep(indices: readonly ArrayLike<number>[]): Int32Array[] {
    if (indices.length !== this.numKvHeads) throw new Error(`keep: got indices for ${indices.length} heads, the layer has ${this.numKvHeads}`);
    return indices.map((idx, g) => {
      const len = this.lengths[g], n = idx?.length;
      if (!Number.isSafeInteger(n)) throw new Error(`keep: head ${g}: expected an array of entry indices, got ${String(idx)}`);
      // Checked before the Int32Array conversion, which would turn NaN or 0.5 into 0 and wrap 1e10.
      const sorted = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const t = idx[i];
        if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t >= len) throw new Error(`keep: head ${g} index ${JSON.stringify(t) ?? String(t)} is not an integer in [0, ${len})`);
        sorted[i] = t;
      }
      sorted.sort();
      for (let i = 1; i < n; i++) if (sorted[i - 1] === sorted[i]) throw new Error(`keep: head ${g} index ${sorted[i]} is repeated`);
      return sorted;
    });
  }

  /**
   * Keeps, for each KV head g, the entries at `indices[g]` (indices into the head's current
   * entries, any order, no duplicates) in ascending order: compacts them inside the head's own
   * pages and returns the emptied pages to the pool.
   */
  keep(indices: readonly ArrayLike<number>[]): void {
    const sorted = this.checkKeep(indices);
    const E = this.pageEntries;
    for (let g = 0; g < this.numKvHeads; g++) {
      const idx = sorted[g], n = idx.length;
      this.save(g);
      for (let i = 0; i < n; i++) {
        const t = idx[i];
        if (t === i) continue;
        const src = this.pages[g][Math.floor(t / E)], ss = t % E;
        const dst = this.writable(g, Math.floor(i / E), i % E), ds = i % E;
        copyRow(src, ss, dst, ds);
      }
      this.shrink(g, n);
    }
  }

  /** Drops every entry whose position is ≥ `position` (entries are position-sorted). */
  truncate(position: number): void {
    const E = this.pageEntries;
    for (let g = 0; g < this.numKvHeads; g++) {
      let n = this.lengths[g];
      while (n > 0 && this.pages[g][Math.floor((n - 1) / E)].pos[(n - 1) % E] >= position) n--;
      this.shrink(g, n);
    }
  }

  /**
   * Rewrites entry t of head g: its key (re-encoded in the cache's element type, so one more
   * rounding for the 16-bit and quantized types) and its position. KeyRerotation uses it.
   */
  setEntry(g: number, t: number, key: Float32Array, position: number): void {
    if (!(t >= 0 && t < this.lengths[g])) throw new Error(`setEntry: head ${g} index ${t} out of range [0, ${this.lengths[g]})`);
    const E = this.pageEntries, ch = this.keyChannels[g];
    if (ch) {
      for (let d = 0, j = 0; d < this.headDim; d++) {
        if (j < ch.length && ch[j] === d) j++;
        else if (key[d] !== 0) throw new Error(`setEntry: head ${g} stores only key channels ${Array.from(ch).join(',')}, the new key has ${key[d]} in channel ${d}`);
      }
    }
    this.save(g);
    const page = this.writable(g, Math.floor(t / E), t % E);
    if (ch) encodeRow(page.keyFmt, this.gatherKey(ch, key, 0), 0, page, (t % E) * page.keyFmt.rowBytes);
    else encodeRow(this.pool.fmt, key, 0, page, (t % E) * this.pool.fmt.rowBytes);
    page.pos[t % E] = position;
  }

  /**
   * Rewrites the value of entry t of head g (re-encoded in the cache's element type). MergingPress
   * uses it to fold evicted values into the kept ones.
   */
  setValue(g: number, t: number, value: Float32Array): void {
    if (!(t >= 0 && t < this.lengths[g])) throw new Error(`setValue: head ${g} index ${t} out of range [0, ${this.lengths[g]})`);
    const E = this.pageEntries;
    this.save(g);
    const page = this.writable(g, Math.floor(t / E), t % E);
    encodeRow(this.pool.fmt, value, 0, page, page.vOff + (t % E) * this.pool.fmt.rowBytes);
  }

  /**
   * Keys of head g as [length][headDim] float32. A per-head transient, not the cache: decoded into
   * a buffer of the pool that the next headKeys call (any head, any layer, any clone) overwrites;
   * writing into it changes nothing in the cache.
   */
  headKeys(g: number): Float32Array {
    return this.decode(g, 'keys');
  }

  /** Values of head g as [length][headDim] float32: a per-head transient, as headKeys. */
  headValues(g: number): Float32Array {
    return this.decode(g, 'values');
  }

  /**
   * Head g's keys or values where they lie, for a float32 cache: a view of each page holding its
   * entries, [pageEntries][headDim] (the last page's rows past the length are not entries). Null
   * for other element types and for keys whose channels were pruned (read them with headKeys).
   * The views are the cache itself: valid until it changes, and not to be written.
   */
  f32Pages(g: number, kind: 'keys' | 'values'): Float32Array[] | null {
    if (this.pool.fmt.dtype !== 'f32' || (kind === 'keys' && this.keyChannels[g])) return null;
    const E = this.pageEntries, n = E * this.headDim, out: Float32Array[] = [];
    for (let p = 0; p * E < this.lengths[g]; p++) {
      const page = this.pages[g][p], at = kind === 'values' ? page.vOff >>> 2 : 0;
      out.push(page.f32.subarray(at, at + n));
    }
    return out;
  }

  /** Positions of head g's entries, [length]: a per-head transient, as headKeys. */
  headPositions(g: number): Int32Array {
    const n = this.lengths[g], E = this.pageEntries, out = this.pool.ints(n);
    for (let p = 0, t = 0; t < n; p++, t += E) out.set(this.pages[g][p].pos.subarray(0, Math.min(E, n - t)), t);
    return out;
  }

  /** Position of entry t of head g. */
  position(g: number, t: number): number {
    return this.pages[g][Math.floor(t / this.pageEntries)].pos[t % this.pageEntries];
  }

  /** Bytes of the valid keys and values in the cache's element type. */
  bytes(): number {
    let n = 0;
    for (let g = 0; g < this.numKvHeads; g++) n += this.lengths[g] * (this.keyPool(g).keyFmt.rowBytes + this.pool.fmt.rowBytes);
    return n;
  }

  /** Bytes of the pages this layer holds (keys, values and positions of every slot, valid or not). */
  allocatedBytes(): number {
    let n = 0;
    for (let g = 0; g < this.numKvHeads; g++) n += this.pages[g].length * this.keyPool(g).pageBytes;
    return n;
  }

  /**
   * Keeps only the key channels `channels` of head g (ascending distinct indices into headDim,
   * ThinK's kept channels): the head's keys move to pages that store just those numbers (rounded
   * up to an even count, the pad stored as 0) and its old pages are released, so its key bytes
   * really shrink. The pruned channels read back as 0 (headKeys), the attention kernels dot only
   * the kept ones, and keys appended later store the same channels. Quantized keys are quantized
   * again over the kept channels (one more rounding). Undone by rollback like any rewrite.
   */
  pruneKeyChannels(g: number, channels: ArrayLike<number>): void {
    const hd = this.headDim, old = this.keyChannels[g], n = this.lengths[g], E = this.pageEntries;
    if (!(g >= 0 && g < this.numKvHeads && Number.isInteger(g))) throw new Error(`pruneKeyChannels: head ${g} is not in [0, ${this.numKvHeads})`);
    const ch = Int32Array.from(channels);
    if (ch.length === 0) throw new Error(`pruneKeyChannels: head ${g} must keep at least one channel`);
    for (let j = 0; j < ch.length; j++) {
      if (!(Number.isInteger(channels[j]) && ch[j] >= 0 && ch[j] < hd) || (j > 0 && ch[j] <= ch[j - 1])) throw new Error(`pruneKeyChannels: head ${g} channels must be ascending distinct integers in [0, ${hd}), got ${Array.from(channels).join(',')}`);
      if (old && !old.includes(ch[j])) throw new Error(`pruneKeyChannels: head ${g} channel ${ch[j]} was pruned already`);
    }
    if (ch.length === (old?.length ?? hd)) return;
    const keys = Float32Array.from(this.decode(g, 'keys'));
    this.save(g);
    const before = this.pages[g];
    this.keyChannels[g] = ch;
    const pool = this.keyPool(g), kf = pool.keyFmt, vrb = this.pool.fmt.rowBytes, fresh: KvPage[] = [];
    for (let t = 0; t < n; t++) {
      const src = before[Math.floor(t / E)], slot = t % E;
      if (slot === 0) fresh.push(pool.take());
      const dst = fresh[fresh.length - 1];
      encodeRow(kf, this.gatherKey(ch, keys, t * hd), 0, dst, slot * kf.rowBytes);
      dst.u8.set(src.u8.subarray(src.vOff + slot * vrb, src.vOff + (slot + 1) * vrb), dst.vOff + slot * vrb);
      dst.pos[slot] = src.pos[slot];
      dst.used = slot + 1;
    }
    this.pages[g] = fresh;
    for (const p of before) this.pool.release(p);
  }

  /** A copy sharing every page (copy-on-write): O(pages), no entry is copied. */
  clone(): LayerCache {
    const c = new LayerCache(this.pool, this.numKvHeads);
    for (let g = 0; g < this.numKvHeads; g++) {
      for (const p of this.pages[g]) p.refs++;
      c.pages[g].push(...this.pages[g]);
      c.lengths[g] = this.lengths[g];
      c.keyChannels[g] = this.keyChannels[g];
    }
    return c;
  }

  /**
   * A new layer holding copies of the entries `rows` (ascending indices) of every head, on a
   * pool of its own (so its accessors' transients do not overwrite this layer's).
   */
  subset(rows: Int32Array): LayerCache {
    const pool = new PagePool(this.headDim, this.dtype, this.pageEntries, 0, this.pool.memory);
    const c = new LayerCache(pool, this.numKvHeads), E = this.pageEntries;
    for (let g = 0; g < this.numKvHeads; g++) {
      c.keyChannels[g] = this.keyChannels[g];
      for (let i = 0; i < rows.length; i++) {
        const t = rows[i];
        if (!(t >= 0 && t < this.lengths[g])) throw new Error(`subset: head ${g} index ${t} out of range [0, ${this.lengths[g]})`);
        const dst = i % E === 0 ? c.newPage(g) : c.pages[g][c.pages[g].length - 1];
        copyRow(this.pages[g][Math.floor(t / E)], t % E, dst, i % E);
        dst.used = (i % E) + 1;
      }
      c.lengths[g] = rows.length;
    }
    return c;
  }

  /** Starts a pass: remembers each head's length; rewrites save the head first (see rollback). */
  begin(): void {
    this.marks = Int32Array.from(this.lengths);
    this.saved = Array.from({ length: this.numKvHeads }, () => null);
  }

  /** Ends a pass that succeeded: lets go of the saved heads. */
  commit(): void {
    let narrowed = false;
    this.saved?.forEach((s, g) => {
      if (!s) return;
      for (const p of s.pages) this.pool.release(p);
      narrowed ||= s.channels !== this.keyChannels[g];
    });
    this.saved = this.marks = null;
    // Pruned key channels are a compression: the wide pages they leave are not kept idle.
    if (narrowed) this.pool.trim();
  }

  /** Ends a pass that failed: every head back to what begin() saw. */
  rollback(): void {
    if (!this.saved || !this.marks) return;
    for (let g = 0; g < this.numKvHeads; g++) {
      const s = this.saved[g];
      if (s) {
        // Saved at the first rewrite, which may come after this pass's appends: cut those too.
        for (const p of this.pages[g]) this.pool.release(p);
        this.pages[g] = s.pages;
        this.lengths[g] = s.length;
        this.keyChannels[g] = s.channels;
      }
      this.shrink(g, Math.min(this.lengths[g], this.marks[g]));
    }
    this.saved = this.marks = null;
  }

  /** Releases every page. */
  clear(): void {
    for (let g = 0; g < this.numKvHeads; g++) this.shrink(g, 0);
  }

  /** Decodes head g's keys to f32 into dst ([length][headDim]). */
  readKeys(g: number, dst: Float32Array): void {
    this.decodeInto(g, 'keys', dst);
  }

  readValues(g: number, dst: Float32Array): void {
    this.decodeInto(g, 'values', dst);
  }

  private decode(g: number, kind: 'keys' | 'values'): Float32Array {
    const out = this.pool.floats(kind, this.lengths[g] * this.headDim);
    this.decodeInto(g, kind, out);
    return out;
  }

  private decodeInto(g: number, kind: 'keys' | 'values', out: Float32Array): void {
    const n = this.lengths[g], hd = this.headDim, E = this.pageEntries, f = this.pool.fmt, ch = this.keyChannels[g];
    if (kind === 'keys' && ch) {
      const kf = this.keyPool(g).keyFmt, row = this.keyBuffer(kf.headDim);
      out.fill(0, 0, n * hd);
      for (let t = 0; t < n; t++) {
        decodeRow(kf, this.pages[g][Math.floor(t / E)], (t % E) * kf.rowBytes, row, 0);
        for (let j = 0; j < ch.length; j++) out[t * hd + ch[j]] = row[j];
      }
      return;
    }
    const pages = this.f32Pages(g, kind);
    if (pages) {
      // A page's keys (or values) are consecutive rows: one copy per page rather than per entry.
      pages.forEach((v, p) => out.set(v.subarray(0, Math.min(E, n - p * E) * hd), p * E * hd));
      return;
    }
    for (let t = 0; t < n; t++) {
      const p = this.pages[g][Math.floor(t / E)], at = (t % E) * f.rowBytes + (kind === 'values' ? p.vOff : 0);
      decodeRow(f, p, at, out, t * hd);
    }
  }

  /** The kept channels `ch` of the key at src[so …), into the row buffer (pad 0). */
  private gatherKey(ch: Int32Array, src: Float32Array, so: number): Float32Array {
    const row = this.keyBuffer(storedKeyDim(ch.length));
    for (let j = 0; j < ch.length; j++) row[j] = src[so + ch[j]];
    row.fill(0, ch.length);
    return row;
  }

  private keyBuffer(n: number): Float32Array {
    if (this.keyRow.length !== n) this.keyRow = new Float32Array(n);
    return this.keyRow;
  }

  private newPage(g: number): KvPage {
    const p = this.keyPool(g).take();
    this.pages[g].push(p);
    return p;
  }

  /** Page i of head g, made private first when slot `slot` may be seen by another holder. */
  private writable(g: number, i: number, slot: number): KvPage {
    const p = this.pages[g][i];
    if (p.refs === 1 || slot >= p.used) return p;
    const q = this.keyPool(g).take();
    q.u8.set(p.u8);
    q.pos.set(p.pos);
    q.used = p.used;
    this.pool.release(p);
    this.pages[g][i] = q;
    return q;
  }

  /** Keeps head g's first n entries and lets go of the pages past them. */
  private shrink(g: number, n: number): void {
    const need = Math.ceil(n / this.pageEntries), pages = this.pages[g];
    while (pages.length > need) this.pool.release(pages.pop()!);
    this.lengths[g] = n;
  }

  /** Before the first rewrite of head g in a pass, holds on to its pages so rollback can restore them. */
  private save(g: number): void {
    if (!this.saved || this.saved[g]) return;
    for (const p of this.pages[g]) p.refs++;
    this.saved[g] = { pages: [...this.pages[g]], length: this.lengths[g], channels: this.keyChannels[g] };
  }
}

/** Copies an entry between two pages of the same formats. */
function copyRow(src: KvPage, ss: number, dst: KvPage, ds: number): void {
  const kb = src.keyFmt.rowBytes, vb = src.fmt.rowBytes;
  dst.u8.set(src.u8.subarray(ss * kb, (ss + 1) * kb), ds * kb);
  dst.u8.set(src.u8.subarray(src.vOff + ss * vb, src.vOff + (ss + 1) * vb), dst.vOff + ds * vb);
  dst.pos[ds] = src.pos[ss];
}

/** Numbers a key row of `kept` channels stores: rounded up to even (the formats' row unit). */
export function storedKeyDim(kept: number): number {
  return kept + (kept & 1);
}

/** The whole model's cache, plus the position the next token will take. */
export class KVCache {
  readonly layers: LayerCache[];
  readonly pool: PagePool;
  /**
   * Position of the next token: the number of tokens seen, not the number kept — positions are
   * never renumbered by eviction (KeyRerotation is the press that re-rotates and resets it).
   */
  nextPosition = 0;
  private mark = -1;

  constructor(numLayers: number, numKvHeads: number, headDim: number, opts: CacheOptions | PagePool = {}) {
    this.pool = opts instanceof PagePool ? opts : new PagePool(headDim, opts.dtype ?? 'f32', opts.pageEntries ?? DEFAULT_PAGE_ENTRIES, opts.maxIdlePages ?? DEFAULT_MAX_IDLE_PAGES, opts.memory ?? null);
    this.layers = Array.from({ length: numLayers }, () => new LayerCache(this.pool, numKvHeads));
  }

  get dtype(): KvDtype {
    return this.pool.dtype;
  }

  get pageEntries(): number {
    return this.pool.pageEntries;
  }

  /** Applies per-layer, per-head keep indices (see LayerCache.keep), then releases idle pages. */
  keep(perLayer: readonly (readonly ArrayLike<number>[])[]): void {
    perLayer.forEach((idx, l) => this.layers[l].checkKeep(idx));
    perLayer.forEach((idx, l) => this.layers[l].keep(idx));
    this.pool.trim();
  }

  /** Forgets every token at position ≥ `position` and continues from there. */
  truncate(position: number): void {
    if (!Number.isInteger(position) || position < 0 || position > this.nextPosition) throw new Error(`truncate: position ${position} is outside [0, ${this.nextPosition}]`);
    for (const l of this.layers) l.truncate(position);
    this.nextPosition = position;
  }

  /** Bytes of the valid keys and values over all layers and heads, in the cache's element type. */
  bytes(): number {
    return this.layers.reduce((s, l) => s + l.bytes(), 0);
  }

  /**
   * Bytes actually allocated: every page the layers hold (keys, values and the 4-byte positions
   * of every slot, valid or not) plus the idle pages of the pool. Pages shared with a clone count
   * in both.
   */
  allocatedBytes(): number {
    return this.layers.reduce((s, l) => s + l.allocatedBytes(), 0) + this.pool.idleBytes;
  }

  /** Entries kept per layer and KV head: [layers][kvHeads]. */
  lengths(): number[][] {
    return this.layers.map((l) => Array.from(l.lengths));
  }

  /** A copy sharing every page copy-on-write (answers from one compressed context share it). */
  clone(): KVCache {
    const c = new KVCache(0, 0, this.pool.fmt.headDim, this.pool);
    c.layers.push(...this.layers.map((l) => l.clone()));
    c.nextPosition = this.nextPosition;
    return c;
  }

  /** Releases every page this cache holds (a clone keeps the pages it shares); up to maxIdlePages stay in the pool for reuse. */
  dispose(): void {
    for (const l of this.layers) l.clear();
  }

  /** Starts a forward pass (see rollback). */
  begin(): void {
    this.mark = this.nextPosition;
    for (const l of this.layers) l.begin();
  }

  commit(): void {
    for (const l of this.layers) l.commit();
    this.mark = -1;
  }

  /** Puts every layer and nextPosition back to what begin() saw. */
  rollback(): void {
    for (const l of this.layers) l.rollback();
    if (this.mark >= 0) this.nextPosition = this.mark;
    this.mark = -1;
  }
}
