/**
 * Weight memory after load: writes a random llama2.c checkpoint of a shape (f32, cached in the
 * temp directory), loads it in a fresh process as f32 or converted to bf16 (`--weights`), and
 * prints the RSS growth over the load against the bytes the matrices take in that format.
 * `node dist/bench/weight-memory.js --shape small --weights bf16` prints one JSON line. With
 * `--gguf PATH` it loads that GGUF as stored (quantized blocks kept) and sets the growth against
 * the file's tensor bytes.
 */
import { closeSync, existsSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ModelConfig } from '../src/model/config.js';
import { GgufFile } from '../src/model/loaders/gguf.js';
import { loadModel } from '../src/model/load.js';
import { SHAPES, shapeConfig, type ShapeName } from '../src/model/random.js';
import { weightBytes, type Weight } from '../src/model/weights.js';

/** Writes a legacy llama2.c checkpoint of `c` (tied when c.tieWordEmbeddings) with uniform random values. */
export function writeLlama2c(path: string, c: ModelConfig, seed = 1): void {
  const D = c.hiddenSize, F = c.intermediateSize, L = c.numLayers, V = c.vocabSize, hs = c.headDim;
  const kv = c.numKvHeads * hs, seq = c.maxPositionEmbeddings;
  let s = seed >>> 0 || 1;
  const rand = (n: number) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
      out[i] = ((s >>> 0) / 4294967296 * 2 - 1) * 0.0346;
    }
    return out;
  };
  const ones = (n: number) => new Float32Array(n).fill(1);
  const part = `${path}.${process.pid}.part`;
  const fd = openSync(part, 'w');
  try {
    const head = Buffer.alloc(28);
    [D, F, L, c.numHeads, c.numKvHeads, c.tieWordEmbeddings ? V : -V, seq].forEach((v, i) => head.writeInt32LE(v, 4 * i));
    writeSync(fd, head);
    const put = (a: Float32Array) => writeSync(fd, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    // One layer's slice at a time, in run.c's order: the file is never held in memory.
    const stacked = (n: number, make: (n: number) => Float32Array) => { for (let l = 0; l < L; l++) put(make(n)); };
    put(rand(V * D));
    stacked(D, ones);
    stacked(D * c.numHeads * hs, rand);
    stacked(kv * D, rand);
    stacked(kv * D, rand);
    stacked(c.numHeads * hs * D, rand);
    stacked(D, ones);
    stacked(F * D, rand);
    stacked(D * F, rand);
    stacked(F * D, rand);
    put(ones(D));
    put(new Float32Array(seq * hs)); // the legacy cos/sin tables
    if (!c.tieWordEmbeddings) put(rand(V * D));
  } finally {
    closeSync(fd);
  }
  renameSync(part, path);
}

/** Bytes of every distinct matrix of a loaded model (tied embeddings counted once). */
export function matrixBytesOf(w: { embedding: Weight; lmHead: Weight; layers: { wq: Weight; wk: Weight; wv: Weight; wo: Weight; wGate: Weight; wUp: Weight; wDown: Weight }[] }): number {
  const all = new Set<Weight>([w.embedding, w.lmHead]);
  for (const l of w.layers) for (const m of [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown]) all.add(m);
  let bytes = 0;
  for (const m of all) bytes += weightBytes(m);
  return bytes;
}

export interface WeightMemory {
  shape: ShapeName;
  weights: 'f32' | 'bf16' | 'gguf';
  /** Bytes of the checkpoint's matrices held in `weights` (f32 file bytes, halved for bf16; a GGUF's tensor bytes, norms included). */
  expectedBytes: number;
  /** Bytes the loaded matrices take. */
  allocatedBytes: number;
  /** RSS after load (garbage collected) less RSS before. */
  rssGrowthBytes: number;
}

async function main(): Promise<void> {
  const arg = (name: string, fallback: string) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : fallback;
  };
  const shape = arg('--shape', 'small') as ShapeName, weights = arg('--weights', 'f32') as 'f32' | 'bf16';
  const gguf = process.argv.includes('--gguf') ? arg('--gguf', '') : null;
  const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
  if (gguf) {
    // The backend (addon, OpenMP) is loaded first: its pages are not the model's.
    const { createBackend } = await import('../src/backend/index.js');
    const backend = createBackend({ threads: 1 });
    const f = GgufFile.open(gguf);
    let tensorBytes = 0;
    for (const t of f.tensors.values()) tensorBytes += t.bytes;
    f.close();
    gc();
    const before = process.memoryUsage().rss;
    const model = await loadModel(gguf, { backend });
    gc();
    const after = process.memoryUsage().rss;
    const out: WeightMemory = { shape, weights: 'gguf', expectedBytes: tensorBytes, allocatedBytes: matrixBytesOf(model.weights), rssGrowthBytes: after - before };
    process.stdout.write(JSON.stringify(out) + '\n');
    return;
  }
  const c = shapeConfig(shape, 256);
  const dir = join(tmpdir(), 'kvpress-weight-memory');
  const path = join(dir, `random-${shape}.bin`);
  if (!existsSync(path)) {
    mkdirSync(dir, { recursive: true });
    writeLlama2c(path, c);
  }
  gc();
  const before = process.memoryUsage().rss;
  const model = await loadModel(path, { weights });
  gc();
  const after = process.memoryUsage().rss;
  const s = SHAPES[shape], q = s.numHeads * s.headDim, kv = s.numKvHeads * s.headDim;
  const values = s.vocabSize * s.hiddenSize + s.numLayers * (2 * s.hiddenSize * q + 2 * s.hiddenSize * kv + 3 * s.hiddenSize * s.intermediateSize);
  const out: WeightMemory = { shape, weights, expectedBytes: values * (weights === 'f32' ? 4 : 2), allocatedBytes: matrixBytesOf(model.weights), rssGrowthBytes: after - before };
  process.stdout.write(JSON.stringify(out) + '\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
