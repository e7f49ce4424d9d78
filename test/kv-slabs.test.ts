import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createBackend } from '../src/backend/index.js';
import { KVCache } from '../src/cache/kv-cache.js';
import { SlabMemory, type SlabSource } from '../src/cache/slab-memory.js';

/** A SlabSource over plain ArrayBuffers that records what is handed back. */
function fakeSource(os = 4096) {
  const released: [number, number][] = [];
  let slabs = 0;
  const src: SlabSource = {
    kvSlab: (bytes) => ({ buffer: new ArrayBuffer(bytes), id: slabs++ }),
    kvRelease: (_slab, offset, bytes) => void released.push([offset, offset + bytes]),
    kvOsPage: () => os,
  };
  return { src, released };
}

test('SlabMemory hands back the OS pages of a freed page, and those it shares with free neighbours only', () => {
  const { src, released } = fakeSource();
  const mem = new SlabMemory(src), bytes = 10_000; // 2.44 OS pages: boundaries fall inside OS pages
  const r = [0, 1, 2, 3].map(() => mem.alloc(bytes));
  assert.deepEqual(r.map((x) => x.byteOffset), [0, 10_000, 20_000, 30_000], 'slots packed from the front');
  assert.ok(r.every((x) => x.buffer === r[0].buffer));
  mem.free(r[1].address, bytes);
  // Neighbours 0 and 2 in use: only the OS pages wholly inside [10000, 20000).
  assert.deepEqual(released.pop(), [12_288, 16_384]);
  mem.free(r[2].address, bytes);
  // Slot 1 is free now: the OS page across 20000 goes too; slot 3 in use keeps [28672, …).
  assert.deepEqual(released.pop(), [16_384, 28_672]);
  mem.free(r[0].address, bytes);
  assert.deepEqual(released.pop(), [0, 12_288]);
  // Reuse: the lowest free slot first.
  assert.equal(mem.alloc(bytes).byteOffset, 0);
  assert.throws(() => mem.free(r[1].address + 1, bytes), /no page/);
});

test('native backend: evicting entries makes the process RSS fall (pages live in slabs given back to the OS)', (t) => {
  let be;
  try {
    be = createBackend({ prefer: 'native', threads: 1 });
  } catch {
    return t.skip('no native addon');
  }
  if (!be.pageMemory) return t.skip('no page memory on this platform');
  const G = 8, hd = 128, n = 8192; // 8 heads × 8192 entries × 1 KiB (f32 k+v) = 64 MiB
  const cache = new KVCache(1, G, hd, { dtype: 'f32', memory: be.pageMemory });
  const k = new Float32Array(G * hd).fill(0.5);
  const pos = [0];
  for (let i = 0; i < n; i++) (pos[0] = i), cache.layers[0].append(k, k, pos, 1);
  (globalThis as { gc?: () => void }).gc?.();
  const before = process.memoryUsage().rss, full = cache.bytes();
  cache.keep([Array.from({ length: G }, () => Int32Array.from({ length: n / 8 }, (_, i) => i))]);
  const evicted = full - cache.bytes(), after = process.memoryUsage().rss;
  assert.ok(before - after >= 0.7 * evicted, `RSS fell by ${((before - after) / 2 ** 20).toFixed(1)} MiB for ${(evicted / 2 ** 20).toFixed(1)} MiB evicted`);
  cache.dispose();
});
