/**
 * A list of strings held as their UTF-8 bytes in one array: string i is
 * bytes[offsets[i] … offsets[i + 1]). A 49k-token vocabulary as JS strings costs V8 ~2 MiB of
 * heap plus whatever maps are keyed by them; packed it is two typed arrays outside the heap.
 */
export class PackedStrings {
  constructor(readonly bytes: Uint8Array, readonly offsets: Uint32Array) {
    if (offsets.length < 1 || offsets[0] !== 0 || offsets[offsets.length - 1] > bytes.length) throw new RangeError('PackedStrings: offsets do not index the bytes');
  }

  static from(strings: readonly string[]): PackedStrings {
    const enc = new TextEncoder();
    const offsets = new Uint32Array(strings.length + 1);
    let total = 0;
    for (const s of strings) total += 3 * s.length; // UTF-8 takes at most 3 bytes per UTF-16 unit
    const bytes = new Uint8Array(total);
    let at = 0;
    strings.forEach((s, i) => {
      at += enc.encodeInto(s, bytes.subarray(at)).written;
      offsets[i + 1] = at;
    });
    return new PackedStrings(bytes.slice(0, at), offsets);
  }

  get length(): number {
    return this.offsets.length - 1;
  }

  /** The UTF-8 bytes of string i (a view, not a copy). */
  bytesOf(i: number): Uint8Array {
    return this.bytes.subarray(this.offsets[i], this.offsets[i + 1]);
  }

  /** String i, decoded (invalid UTF-8 becomes U+FFFD). */
  get(i: number): string {
    return decoder.decode(this.bytesOf(i));
  }
}

const decoder = new TextDecoder();

/** FNV-1a over bytes[start, end). */
function hashBytes(bytes: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return h >>> 0;
}

/**
 * Exact lookup of a byte string among chosen strings of a PackedStrings: an open-addressing
 * table of ids (4 bytes per slot, at most half full), so no JS string or map entry per string.
 */
export class PackedIndex {
  private readonly slots: Int32Array;
  private readonly mask: number;

  /** Indexes the strings `include` accepts; of equal strings the lowest index is found. */
  constructor(private readonly strings: PackedStrings, include: (i: number) => boolean) {
    let size = 16;
    while (size < 2 * strings.length) size *= 2;
    this.slots = new Int32Array(size).fill(-1);
    this.mask = size - 1;
    // No view per string: each is garbage V8 touches fresh pages for (~5 MiB of RSS for 49k).
    const { bytes, offsets } = strings;
    for (let i = 0; i < strings.length; i++) {
      if (!include(i)) continue;
      const start = offsets[i], end = offsets[i + 1];
      let s = hashBytes(bytes, start, end) & this.mask;
      for (; this.slots[s] >= 0; s = (s + 1) & this.mask) if (this.equals(this.slots[s], bytes, start, end)) break;
      if (this.slots[s] < 0) this.slots[s] = i;
    }
  }

  /** The index of the string equal to bytes[start, end), or -1. */
  find(bytes: Uint8Array, start: number, end: number): number {
    for (let s = hashBytes(bytes, start, end) & this.mask; ; s = (s + 1) & this.mask) {
      const id = this.slots[s];
      if (id < 0 || this.equals(id, bytes, start, end)) return id;
    }
  }

  private equals(id: number, bytes: Uint8Array, start: number, end: number): boolean {
    const all = this.strings.bytes, from = this.strings.offsets[id];
    if (this.strings.offsets[id + 1] - from !== end - start) return false;
    for (let i = 0; i < end - start; i++) if (all[from + i] !== bytes[start + i]) return false;
    return true;
  }
}
