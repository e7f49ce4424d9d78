import { KVCache, type KvPage, type PagePool } from '../cache/kv-cache.js';

/**
 * A stored context's cache as an answer sees it: the same layers (read only — an answer only
 * clones it), and every clone handed to `onClone`, so that the server knows the caches its answers
 * write to. Costs nothing: no page is copied or referenced twice.
 */
export class WatchedCache extends KVCache {
  constructor(private readonly base: KVCache, private readonly onClone: (clone: KVCache) => void) {
    super(0, 0, base.pool.fmt.headDim, base.pool);
    this.layers.push(...base.layers);
    this.nextPosition = base.nextPosition;
  }

  override clone(): KVCache {
    const c = this.base.clone();
    this.onClone(c);
    return c;
  }
}

/**
 * KV memory really allocated by a set of caches: every distinct page they hold (a page shared
 * copy-on-write by a context and its answers counts once) plus the idle pages of their pools.
 */
export function heldBytes(caches: Iterable<KVCache>): number {
  const pages = new Set<KvPage>();
  const pools = new Set<PagePool>();
  for (const c of caches) {
    pools.add(c.pool);
    for (const l of c.layers) for (const head of l.pages) for (const p of head) pages.add(p);
  }
  let n = 0;
  for (const p of pages) n += p.byteLength;
  for (const pool of pools) n += pool.idleBytes;
  return n;
}
