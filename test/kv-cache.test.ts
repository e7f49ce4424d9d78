import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { AttentionArgs, Backend, PagedAttentionArgs } from '../src/backend/backend.js';
import { createBackend } from '../src/backend/index.js';
import { JsBackend } from '../src/backend/js/kernels.js';
import { pagedAttention } from '../src/backend/js/paged-attention.js';
import { autoKvDtype, decodeRow, encodeRow, F16_TO_F32, f16Bits, KV_DTYPES, kvFormat, resolveKvDtype, type KvDtype } from '../src/cache/format.js';
import { KVCache, KvPage } from '../src/cache/kv-cache.js';
import type { LayerContext } from '../src/model/layer-context.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import { Model } from '../src/model/model.js';
import { generate } from '../src/pipeline/generate.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { DecodingPress } from '../src/presses/decoding.js';
import { KnormPress } from '../src/presses/knorm.js';
import { fastBackends } from './helpers/backends.js';
import { rng } from './helpers/random.js';

const model = await loadModel();
const c = model.config;
const story = readFileSync(join(packageRoot(), 'examples/story.txt'), 'utf8');
const prompt = model.tokenizer!.encode(story, { bos: true }).slice(0, 120);

/** Keeps the last n entries of every head at the prefill. */
const keepLast = (n: number) => ({
  compress(ctx: LayerContext) {
    if (!ctx.isPrefill) return null;
    return Array.from(ctx.cache.lengths, (len) => Int32Array.from({ length: Math.min(n, len) }, (_, i) => len - Math.min(n, len) + i));
  },
});

function snapshot(cache: KVCache) {
  return {
    next: cache.nextPosition,
    lengths: cache.lengths(),
    keys: cache.layers.map((l) => Array.from({ length: l.numKvHeads }, (_, g) => l.headKeys(g).slice())),
    positions: cache.layers.map((l) => Array.from({ length: l.numKvHeads }, (_, g) => l.headPositions(g).slice())),
  };
}

test('forward is exception-safe: a press throwing at layer 2 leaves the cache exactly as before the pass', () => {
  for (const kvDtype of ['f32', 'q8_0'] as const) {
    const m = new Model(c, model.weights, { kvDtype, tokenizer: model.tokenizer });
    const cache = m.newCache();
    m.forward(prompt.slice(0, 50), cache, { logits: 'none' });
    const before = snapshot(cache);
    const thrower = {
      compress(ctx: LayerContext) {
        // Layers 0 and 1 keep half (returned and applied directly), layer 2 fails.
        if (ctx.layer === 1) ctx.cache.keep(Array.from(ctx.cache.lengths, (n) => Int32Array.from({ length: n >> 1 }, (_, i) => 2 * i)));
        if (ctx.layer === 2) throw new Error('press failed');
        return Array.from(ctx.cache.lengths, (n) => Int32Array.from({ length: n - 1 }, (_, i) => i + 1));
      },
    };
    assert.throws(() => m.forward(prompt.slice(50, 54), cache, { press: thrower }), /press failed/);
    assert.deepEqual(snapshot(cache), before, `${kvDtype}: the cache is as it was`);
    // And a later pass gives what it gives on a cache that never saw the failure.
    const fresh = m.newCache();
    m.forward(prompt.slice(0, 50), fresh, { logits: 'none' });
    assert.deepEqual(m.forward(prompt.slice(50, 54), cache).slice(), m.forward(prompt.slice(50, 54), fresh).slice());
  }
});

test('a decoding press given to Pipeline.compress does not wear the compressed context down', () => {
  const pipe = new Pipeline(model);
  const press = new DecodingPress(new KnormPress(), { compressionInterval: 4, targetSize: 40 });
  const ctx = pipe.compress(story.slice(0, 1500), { press });
  const lengths = ctx.cache.lengths(), bytes = ctx.cache.bytes();
  const a = ctx.answer('Who lost his ball?', { maxNewTokens: 12 });
  assert.deepEqual(ctx.cache.lengths(), lengths);
  const b = ctx.answer('Who lost his ball?', { maxNewTokens: 12 });
  assert.deepEqual(ctx.cache.lengths(), lengths);
  assert.equal(ctx.cache.bytes(), bytes);
  assert.deepEqual(b.ids, a.ids, 'the same question gets the same answer');
});

test('LayerContext gets exactly the rows of the pass', () => {
  const cache = model.newCache();
  const seen: [number, number, number][] = [];
  const spy = { compress(ctx: LayerContext) { seen.push([ctx.rows, ctx.hidden.length, ctx.queries.length]); return null; } };
  model.forward(prompt.slice(0, 50), cache, { logits: 'none', press: spy });
  model.forward([prompt[50]], cache, { press: spy });
  const D = c.hiddenSize, Q = c.numHeads * c.headDim;
  assert.deepEqual(seen[0], [50, 50 * D, 50 * Q]);
  assert.deepEqual(seen.at(-1), [1, D, Q]);
});

test('src/model has no import cycle', () => {
  const dir = join(packageRoot(), 'src', 'model');
  const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));
  const deps = new Map(files.map((f) => [f, [...readFileSync(join(dir, f), 'utf8').matchAll(/from '\.\/([\w-]+)\.js'/g)].map((m) => `${m[1]}.ts`)]));
  const visit = (f: string, path: string[]): void => {
    if (path.includes(f)) assert.fail(`import cycle: ${[...path, f].join(' → ')}`);
    for (const d of deps.get(f) ?? []) visit(d, [...path, f]);
  };
  for (const f of files) visit(f, []);
});

test('memory stays freed: compress, then generate — allocatedBytes ≤ bytes + positions + one page per (layer, KV head)', () => {
  const heads = c.numLayers * c.numKvHeads;
  for (const dtype of KV_DTYPES) {
    const cache = model.newCache({ dtype });
    const r = generate(model, prompt, { cache, maxNewTokens: 40, press: keepLast(20), temperature: 0 });
    const entries = cache.lengths().flat().reduce((a, b) => a + b, 0);
    assert.equal(entries, heads * (20 + r.tokens.length - 1));
    assert.ok(cache.allocatedBytes() <= cache.bytes() + 4 * entries + heads * cache.pool.pageBytes, `${dtype}: ${cache.allocatedBytes()} allocated for ${cache.bytes()} bytes`);
    const full = generate(model, prompt, { cache: model.newCache({ dtype }), maxNewTokens: 40, temperature: 0 });
    assert.ok(cache.allocatedBytes() < full.cache.allocatedBytes() / 2, `${dtype}: the compressed run holds less than half`);
  }
});

test('bytes per entry of each type (f16 half of f32; q8_0 34 and q4_0 18 bytes per 32 numbers)', () => {
  const per = (d: KvDtype, hd: number) => kvFormat(d, hd).rowBytes;
  assert.deepEqual(KV_DTYPES.map((d) => per(d, 64)), [256, 128, 128, 68, 36]);
  // stories260K: head_dim 8 is not a multiple of 32, so one block per row.
  assert.deepEqual(KV_DTYPES.map((d) => per(d, 8)), [32, 16, 16, 10, 6]);
  assert.equal(autoKvDtype('f32'), 'f32');
  assert.equal(autoKvDtype('bf16'), 'bf16');
  assert.equal(autoKvDtype('quantized'), 'f16');
  assert.throws(() => resolveKvDtype('q5_k', 'f32'), /unknown KV cache type "q5_k"/);
});

test('row encodings stay within the bound of their format', () => {
  const r = rng(3);
  for (const hd of [8, 64, 96]) {
    const x = new Float32Array(hd);
    for (let trial = 0; trial < 200; trial++) {
      const mag = 10 ** (r() * 6 - 3);
      for (let d = 0; d < hd; d++) x[d] = (r() - 0.5) * mag * (d % 7 === 0 ? 5 : 1);
      for (const dtype of KV_DTYPES) {
        const f = kvFormat(dtype, hd), page = new KvPage(f, 1), y = new Float32Array(hd);
        encodeRow(f, x, 0, page, 0);
        decodeRow(f, page, 0, y, 0);
        for (let b0 = 0; b0 < hd; b0 += f.block || hd) {
          const n = f.block || hd;
          let amax = 0, m = 0;
          for (let d = b0; d < b0 + n; d++) if (Math.abs(x[d]) > amax) { amax = Math.abs(x[d]); m = x[d]; }
          for (let d = b0; d < b0 + n; d++) {
            const err = Math.abs(y[d] - x[d]);
            let bound: number;
            if (dtype === 'f32') bound = 0;
            else if (dtype === 'f16') bound = Math.max(Math.abs(x[d]) * 2 ** -11, 2 ** -25);
            else if (dtype === 'bf16') bound = Math.abs(x[d]) * 2 ** -8;
            else {
              // q8_0: scale = the smallest f16 ≥ max|x|/127, codes −127…127. q4_0: scale = f16(m/−8),
              // codes −8…7. Either way the stored number is the code nearest to x/scale, so the
              // error is x's distance to the nearest representable number of the block.
              let scale: number, lo: number, hi: number;
              if (dtype === 'q8_0') {
                let h = f16Bits(amax / 127);
                if (F16_TO_F32[h] < amax / 127) h++;
                [scale, lo, hi] = [F16_TO_F32[h], -127, 127];
              } else {
                [scale, lo, hi] = [F16_TO_F32[f16Bits(m / -8)], -8, 7];
              }
              bound = Infinity;
              for (let q = lo; q <= hi; q++) bound = Math.min(bound, Math.abs(x[d] - q * scale));
              bound += Math.abs(scale) * 1e-6;
            }
            assert.ok(err <= bound, `${dtype} hd ${hd}: |${y[d]} − ${x[d]}| = ${err} > ${bound}`);
          }
        }
      }
    }
  }
});

/** f64 attention over explicitly decoded rows: the exact result for what the cache stores. */
function reference(q: Float32Array, keys: Float32Array[], values: Float32Array[], qPos: Int32Array, kPos: Int32Array[], H: number, G: number, hd: number, window?: number): Float64Array {
  const rows = qPos.length, out = new Float64Array(rows * H * hd), group = H / G;
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / group), K = keys[g], V = values[g], P = kPos[g];
    for (let i = 0; i < rows; i++) {
      const vis: number[] = [];
      for (let t = 0; t < P.length; t++) if (P[t] <= qPos[i] && (window === undefined || P[t] > qPos[i] - window)) vis.push(t);
      const s = vis.map((t) => {
        let z = 0;
        for (let d = 0; d < hd; d++) z += q[i * H * hd + h * hd + d] * K[t * hd + d];
        return z / Math.sqrt(hd);
      });
      const mx = Math.max(...s), e = s.map((z) => Math.exp(z - mx)), sum = e.reduce((a, b) => a + b, 0);
      vis.forEach((t, j) => {
        for (let d = 0; d < hd; d++) out[i * H * hd + h * hd + d] += (e[j] / sum) * V[t * hd + d];
      });
    }
  }
  return out;
}

function filled(dtype: KvDtype, lengths: number[], hd: number, seed: number, pageEntries = 16): { cache: KVCache; rows: number; q: Float32Array; qPos: Int32Array } {
  const r = rng(seed), G = lengths.length, cache = new KVCache(1, G, hd, { dtype, pageEntries });
  const rows = 3, layer = cache.layers[0], longest = Math.max(...lengths);
  // Per head: its own prefix length, then the same `rows` new entries at the next positions.
  for (let t = 0; t < longest; t++) {
    const k = Float32Array.from({ length: G * hd }, () => (r() - 0.5) * 3), v = Float32Array.from({ length: G * hd }, () => r() - 0.5);
    layer.append(k, v, [t], 1);
  }
  // Head-varying lengths: drop the first entries of the shorter heads.
  layer.keep(lengths.map((n) => Int32Array.from({ length: n }, (_, i) => longest - n + i)));
  const H = 2 * G, q = Float32Array.from({ length: rows * H * hd }, () => (r() - 0.5) * 3);
  return { cache, rows, q, qPos: Int32Array.from({ length: rows }, (_, i) => longest - rows + i) };
}

test('paged attention in every type equals the f64 attention over the stored (decoded) entries, with and without a window', () => {
  const hd = 32, G = 2, H = 4;
  for (const dtype of KV_DTYPES) {
    for (const window of [undefined, 5, 40]) {
      const { cache, rows, q, qPos } = filled(dtype, [37, 20], hd, 11);
      const l = cache.layers[0];
      const keys = [0, 1].map((g) => l.headKeys(g).slice()), values = [0, 1].map((g) => l.headValues(g).slice());
      const kPos = [0, 1].map((g) => l.headPositions(g).slice());
      const want = reference(q, keys, values, qPos, kPos, H, G, hd, window);
      const kernels: [string, (a: PagedAttentionArgs) => void][] = [['ts', pagedAttention]];
      for (const be of fastBackends) if (be.attentionPaged) kernels.push([be.name, (a) => be.attentionPaged!(a)]);
      for (const [name, run] of kernels) {
        const out = new Float32Array(rows * H * hd);
        run({ out, q, rows, numHeads: H, numKvHeads: G, headDim: hd, cache: l, queryPositions: qPos, window, scale: 1 / Math.sqrt(hd), scratch: new Float32Array(64) });
        for (let i = 0; i < out.length; i++) assert.ok(Math.abs(out[i] - want[i]) < 1e-5, `${name} ${dtype} window ${window} [${i}]: ${out[i]} vs ${want[i]}`);
      }
    }
  }
});

test('attention over an f16/bf16 cache stays within the format\'s rounding of the f32 result', () => {
  const hd = 32, G = 2, H = 4;
  const base = filled('f32', [37, 37], hd, 5);
  const l32 = base.cache.layers[0];
  const exact = reference(base.q, [0, 1].map((g) => l32.headKeys(g).slice()), [0, 1].map((g) => l32.headValues(g).slice()), base.qPos, [0, 1].map((g) => l32.headPositions(g).slice()), H, G, hd);
  for (const [dtype, u] of [['f16', 2 ** -11], ['bf16', 2 ** -8]] as const) {
    const { cache, rows, q, qPos } = filled(dtype, [37, 37], hd, 5);
    const out = new Float32Array(rows * H * hd);
    pagedAttention({ out, q, rows, numHeads: H, numKvHeads: G, headDim: hd, cache: cache.layers[0], queryPositions: qPos, scale: 1 / Math.sqrt(hd), scratch: new Float32Array(64) });
    // Keys rounded by u relative change every logit by ≤ u·Σ|q·k|/√d (here ≤ 3·u·max|logit| terms),
    // so each probability by a factor within e^{±2δ}; values by u relative. Bound on |out − exact|:
    // (e^{2δ} − 1 + u)·max|v|, δ = u·max_t Σ_d |q_d k_d| / √d.
    let delta = 0;
    for (let i = 0; i < rows * H; i++) for (let t = 0; t < 37; t++) {
      let s = 0;
      const g = Math.floor((i % H) / 2), K = l32.headKeys(g);
      for (let d = 0; d < hd; d++) s += Math.abs(q[i * hd + d] * K[t * hd + d]);
      delta = Math.max(delta, (u * s) / Math.sqrt(hd));
    }
    const bound = (Math.exp(2 * delta) - 1 + u) * 0.5 + 1e-6;
    for (let i = 0; i < out.length; i++) assert.ok(Math.abs(out[i] - exact[i]) <= bound, `${dtype} [${i}]: ${out[i]} vs ${exact[i]} (bound ${bound})`);
  }
});

test('every backend runs the forward pass on a paged cache of every type like the TypeScript reference', () => {
  const ref = new JsBackend();
  for (const name of ['native', 'wasm'] as const) {
    let be;
    try {
      be = createBackend({ prefer: name });
    } catch {
      continue;
    }
    if (be.name !== name) continue;
    const run = (backend: Backend, kvDtype: KvDtype) => new Model(c, model.weights, { backend, kvDtype }).forward(prompt.slice(0, 90), new Model(c, model.weights, { backend, kvDtype }).newCache(), { logits: 'all' });
    const maxDiff = (x: Float32Array, y: Float32Array) => x.reduce((w, v, i) => Math.max(w, Math.abs(v - y[i])), 0);
    const f32 = run(ref, 'f32');
    for (const kvDtype of KV_DTYPES) {
      const want = run(ref, kvDtype), got = run(be, kvDtype);
      // The backends' f32 sums differ in the last bits, which can flip a stored 16-bit or 8-bit
      // rounding: allow what the type's own rounding does to the logits, at least 1e-3.
      const tol = Math.max(1e-3, 2 * maxDiff(want, f32));
      assert.ok(maxDiff(got, want) <= tol, `${name} ${kvDtype}: max |Δlogit| ${maxDiff(got, want)} > ${tol}`);
    }
  }
});

test('clone is copy-on-write: shares pages, and writes on either side stay on that side', () => {
  const cache = model.newCache({ dtype: 'f16' });
  model.forward(prompt.slice(0, 100), cache, { logits: 'none' });
  const held = () => cache.layers.reduce((s, l) => s + l.allocatedBytes(), 0);
  const pagesBefore = held();
  const copy = cache.clone();
  const shared = cache.layers[0].pages[0].filter((p, i) => p === copy.layers[0].pages[0][i]).length;
  assert.equal(shared, cache.layers[0].pages[0].length, 'no page copied by clone()');
  const want = snapshot(cache);
  generate(model, [400, 401], { cache: copy, maxNewTokens: 30 });
  copy.keep(copy.layers.map((l) => Array.from(l.lengths, (n) => Int32Array.from({ length: n >> 1 }, (_, i) => 2 * i))));
  assert.deepEqual(snapshot(cache), want, 'the original is untouched');
  assert.equal(held(), pagesBefore);
  copy.dispose();
  assert.deepEqual(snapshot(cache), want);
});

test('AttentionArgs contiguous kernels still agree with the paged reference (gather path)', () => {
  const hd = 16, G = 2, H = 4;
  const { cache, rows, q, qPos } = filled('f32', [30, 30], hd, 9);
  const l = cache.layers[0], out = new Float32Array(rows * H * hd), out2 = new Float32Array(rows * H * hd);
  pagedAttention({ out, q, rows, numHeads: H, numKvHeads: G, headDim: hd, cache: l, queryPositions: qPos, scale: 0.25, scratch: new Float32Array(64) });
  const args: AttentionArgs = { out: out2, q, rows, numHeads: H, numKvHeads: G, headDim: hd, keys: [0, 1].map((g) => l.headKeys(g).slice()), values: [0, 1].map((g) => l.headValues(g).slice()), lengths: l.lengths, scale: 0.25, scratch: new Float32Array(64) };
  new JsBackend().attention(args);
  for (let i = 0; i < out.length; i++) assert.ok(Math.abs(out[i] - out2[i]) < 1e-6);
});

test('f32Pages: a float32 head read in place, page by page, equals what was appended; null where rows are not plain float32', () => {
  const hd = 4, G = 2, E = 5, cache = new KVCache(1, G, hd, { dtype: 'f32', pageEntries: E }), layer = cache.layers[0];
  const key = (t: number, g: number, i: number) => 100 * t + 10 * g + i, value = (t: number, g: number, i: number) => -key(t, g, i) - 0.5;
  for (let t = 0; t < 13; t++) {
    const k = Float32Array.from({ length: G * hd }, (_, j) => key(t, Math.floor(j / hd), j % hd));
    const v = Float32Array.from({ length: G * hd }, (_, j) => value(t, Math.floor(j / hd), j % hd));
    layer.append(k, v, [t], 1);
  }
  // Head 1 keeps the entries of positions 4 … 12 (9 entries, two pages).
  layer.keep([Int32Array.from({ length: 13 }, (_, i) => i), Int32Array.from({ length: 9 }, (_, i) => 4 + i)]);
  for (const [g, first, n] of [[0, 0, 13], [1, 4, 9]] as const) {
    for (const [kind, want] of [['keys', key], ['values', value]] as const) {
      const pages = layer.f32Pages(g, kind)!;
      assert.equal(pages.length, Math.ceil(n / E), `head ${g} ${kind}: pages`);
      for (const p of pages) assert.equal(p.length, E * hd);
      for (let t = 0; t < n; t++) {
        for (let i = 0; i < hd; i++) assert.equal(pages[Math.floor(t / E)][(t % E) * hd + i], want(first + t, g, i), `head ${g} ${kind} entry ${t}[${i}]`);
      }
    }
  }
  layer.pruneKeyChannels(0, [1, 3]);
  assert.equal(layer.f32Pages(0, 'keys'), null, 'pruned keys are not plain rows');
  assert.notEqual(layer.f32Pages(0, 'values'), null);
  const f16 = new KVCache(1, 1, hd, { dtype: 'f16', pageEntries: E });
  f16.layers[0].append(new Float32Array(hd), new Float32Array(hd), [0], 1);
  assert.equal(f16.layers[0].f32Pages(0, 'values'), null);
});
