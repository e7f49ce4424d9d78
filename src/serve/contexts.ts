import { randomUUID } from 'node:crypto';
import type { CompressedContext } from '../pipeline/pipeline.js';
import { ApiError } from './errors.js';

/** A compressed context held by the server, answerable by id. */
export interface StoredContext {
  id: string;
  created: number;
  context: CompressedContext;
  press: string | null;
  compressionRatio: number | null;
  /** Context tokens prefilled (after truncation) and before truncation when it happened. */
  tokens: number;
  truncatedFrom: number | null;
  /** Entries kept, summed over layers and KV heads, and entries without compression. */
  kept: number;
  entries: number;
  bytes: number;
  bytesBefore: number;
  allocatedBytes: number;
  prefillMs: number;
  pressMs: number;
  lastUsed: number;
}

/** Ids of evicted contexts remembered, so that a late request learns why its id is gone. */
const EVICTED_MEMORY = 10_000;

/**
 * The compressed contexts, least recently used first. Past `maxBytes` of allocated KV memory the
 * least recently used ones are evicted; answers in flight keep their own copy and finish.
 */
export class ContextStore {
  private readonly byId = new Map<string, StoredContext>();
  private readonly evicted = new Map<string, string>();

  constructor(readonly maxBytes: number, private readonly onEvict: (c: StoredContext) => void = () => {}) {}

  get size(): number {
    return this.byId.size;
  }

  /** Allocated bytes over every context held. */
  get allocatedBytes(): number {
    let n = 0;
    for (const c of this.byId.values()) n += c.allocatedBytes;
    return n;
  }

  get bytesSaved(): number {
    let n = 0;
    for (const c of this.byId.values()) n += c.bytesBefore - c.bytes;
    return n;
  }

  newId(): string {
    return `ctx-${randomUUID().replace(/-/g, '').slice(0, 24)}`;
  }

  add(c: StoredContext): void {
    if (c.allocatedBytes > this.maxBytes) {
      throw new ApiError(413, `the compressed context takes ${mib(c.allocatedBytes)} MiB, more than the server's context memory (--max-context-memory ${mib(this.maxBytes)} MiB); compress it harder or shorten it`, 'kvpress.compression_ratio', 'context_too_large');
    }
    this.byId.set(c.id, c);
    let total = this.allocatedBytes;
    for (const old of this.byId.values()) {
      if (total <= this.maxBytes) break;
      if (old === c) continue;
      this.byId.delete(old.id);
      this.remember(old.id, `context ${old.id} was evicted (least recently used) to keep the server's contexts within --max-context-memory ${mib(this.maxBytes)} MiB; create it again`);
      total -= old.allocatedBytes;
      this.onEvict(old);
    }
  }

  /** The context, marked as just used; 404 when unknown, deleted or evicted. */
  get(id: string, param = 'kvpress.context_id'): StoredContext {
    const c = this.byId.get(id);
    if (!c) throw new ApiError(404, this.evicted.get(id) ?? `no context with id ${id}`, param, this.evicted.has(id) ? 'context_evicted' : 'context_not_found');
    this.byId.delete(id);
    this.byId.set(id, c);
    c.lastUsed = Date.now();
    return c;
  }

  delete(id: string): StoredContext {
    const c = this.get(id, 'id');
    this.byId.delete(id);
    this.remember(id, `context ${id} was deleted`);
    return c;
  }

  list(): StoredContext[] {
    return [...this.byId.values()];
  }

  private remember(id: string, why: string): void {
    this.evicted.set(id, why);
    if (this.evicted.size > EVICTED_MEMORY) this.evicted.delete(this.evicted.keys().next().value!);
  }
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 3 : 1);
}
