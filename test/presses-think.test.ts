import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { PagedAttentionArgs } from '../src/backend/backend.js';
import { createBackend } from '../src/backend/index.js';
import { JsBackend } from '../src/backend/js/kernels.js';
import { pagedAttention } from '../src/backend/js/paged-attention.js';
import { KV_DTYPES, type KvDtype } from '../src/cache/format.js';
import { KVCache } from '../src/cache/kv-cache.js';
import { pressScores } from '../src/cli/commands/scores.js';
import { loadModel } from '../src/model/load.js';
import { Model } from '../src/model/model.js';
import { createPress, prefill, ThinKPress } from '../src/presses/index.js';
import { fastBackends } from './helpers/backends.js';
import { rng } from './helpers/random.js';

const model = await loadModel();

/** Float64 causal GQA attention over full-width keys whose pruned channels are 0 (kvpress's ThinK). */
function reference(q: Float32Array, keys: Float64Array[], values: Float64Array[], rows: number, H: number, hd: number): Float64Array {
  const G = keys.length, group = H / G, out = new Float64Array(rows * H * hd);
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / group), T = keys[g].length / hd;
    for (let i = 0; i < rows; i++) {
      const visible = T - rows + i + 1, z: number[] = [];
      for (let t = 0; t < visible; t++) {
        let s = 0;
        for (let d = 0; d < hd; d++) s += q[i * H * hd + h * hd + d] * keys[g][t * hd + d];
        z.push(s / Math.sqrt(hd));
      }
      const mx = Math.max(...z), e = z.map((x) => Math.exp(x - mx)), sum = e.reduce((a, b) => a + b, 0);
      for (let t = 0; t < visible; t++) for (let d = 0; d < hd; d++) out[i * H * hd + h * hd + d] += (e[t] / sum) * values[g][t * hd + d];
    }
  }
  return out;
}

/**
 * A one-layer cache of random entries with some key channels pruned per head (head 0 keeps all),
 * then `rows` entries appended after the pruning, as a question would be; returns the full-width
 * keys with the pruned channels zeroed, kept independently of the cache.
 */
function prunedCache(dtype: KvDtype, hd: number, kept: (number[] | null)[], seed: number) {
  const r = rng(seed), G = kept.length, T = 41, rows = 3, cache = new KVCache(1, G, hd, { dtype, pageEntries: 16 }), l = cache.layers[0];
  const keys = kept.map(() => new Float64Array(T * hd)), values = kept.map(() => new Float64Array(T * hd));
  const put = (t0: number, n: number) => {
    const k = new Float32Array(n * G * hd), v = new Float32Array(n * G * hd);
    for (let i = 0; i < k.length; i++) { k[i] = r(1.5); v[i] = r(0.5); }
    l.append(k, v, Int32Array.from({ length: n }, (_, i) => t0 + i), n);
    for (let i = 0; i < n; i++) for (let g = 0; g < G; g++) for (let d = 0; d < hd; d++) {
      keys[g][(t0 + i) * hd + d] = kept[g] && !kept[g]!.includes(d) ? 0 : k[i * G * hd + g * hd + d];
      values[g][(t0 + i) * hd + d] = v[i * G * hd + g * hd + d];
    }
  };
  put(0, T - rows);
  kept.forEach((ch, g) => ch && l.pruneKeyChannels(g, ch));
  put(T - rows, rows);
  return { cache, l, keys, values, rows, q: Float32Array.from({ length: rows * 2 * G * hd }, () => r(1.5)) };
}

test('ThinK-pruned keys: every paged kernel equals float64 attention with the pruned channels zeroed', () => {
  for (const [hd, kept] of [
    [32, [null, [0, 3, 4, 9, 10, 11, 17, 20, 21, 22, 23, 25, 26, 28, 30, 31], [1, 2, 5, 8, 13]]],
    [8, [null, [2, 3, 6, 7], [5]]],
  ] as [number, (number[] | null)[]][]) {
    for (const dtype of KV_DTYPES) {
      const { l, keys, values, rows, q } = prunedCache(dtype, hd, kept, 7 + hd);
      const H = 2 * kept.length;
      // The reference reads the keys as the cache stores them (16-bit and quantized types round).
      const stored = kept.map((_, g) => Float64Array.from(l.headKeys(g)));
      const storedV = kept.map((_, g) => Float64Array.from(l.headValues(g)));
      stored.forEach((k, g) => kept[g] && k.forEach((x, i) => kept[g]!.includes(i % hd) || assert.equal(x, 0, `${dtype} h${g}: pruned channel ${i % hd} reads back ${x}`)));
      const want = reference(q, dtype === 'f32' ? keys : stored, dtype === 'f32' ? values : storedV, rows, H, hd);
      const kernels: [string, (a: PagedAttentionArgs) => void][] = [['ts', pagedAttention]];
      for (const be of fastBackends) if (be.attentionPaged) kernels.push([be.name, (a) => be.attentionPaged!(a)]);
      for (const [name, run] of kernels) {
        const out = new Float32Array(rows * H * hd);
        run({ out, q, rows, numHeads: H, numKvHeads: kept.length, headDim: hd, cache: l, queryPositions: Int32Array.from({ length: rows }, (_, i) => 38 + i), scale: 1 / Math.sqrt(hd), scratch: new Float32Array(64) });
        for (let i = 0; i < out.length; i++) assert.ok(Math.abs(out[i] - want[i]) < 2e-5, `${name} ${dtype} hd ${hd} [${i}]: ${out[i]} vs ${want[i]}`);
      }
    }
  }
});

test('ThinK shrinks the allocated key bytes of every pruned head, and a failed pass restores them', () => {
  const tokens = model.tokenizer!.encode('Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her dog Max.', { bos: true });
  const plain = prefill(model, tokens, { logits: 'none' }).cache;
  for (const [ratio, keptDim] of [[0.5, 4], [0.75, 2], [0.625, 4]] as const) {
    const { cache } = prefill(model, tokens, { press: new ThinKPress({ keyChannelCompressionRatio: ratio }), logits: 'none' });
    const T = tokens.length, E = cache.pageEntries, pages = Math.ceil(T / E), L = model.config.numLayers, G = model.config.numKvHeads;
    const hd = model.config.headDim, f32 = 4;
    // Per entry: keyDim floats of key (kept channels, rounded up to even) + headDim of value; per page also 4-byte positions.
    assert.equal(cache.bytes(), L * G * T * f32 * (keptDim + hd), `ratio ${ratio}: bytes`);
    assert.equal(plain.bytes(), L * G * T * f32 * 2 * hd);
    assert.equal(cache.allocatedBytes(), L * G * pages * E * (f32 * (keptDim + hd) + 4), `ratio ${ratio}: allocated bytes`);
    assert.ok(cache.allocatedBytes() < plain.allocatedBytes());
    for (const l of cache.layers) for (const ch of l.keyChannels) assert.equal(ch!.length, hd - Math.floor(hd * ratio));
  }
  // A pass that fails after ThinK pruned a layer leaves the cache as it was.
  const cache = model.newCache();
  model.forward(tokens.slice(0, 10), cache, { logits: 'none' });
  const held = () => cache.layers.reduce((n, l) => n + l.allocatedBytes(), 0), before = held();
  const failing = {
    compress: (ctx: Parameters<ThinKPress['compress']>[0]) => {
      if (ctx.layer === 3) throw new Error('boom');
      for (let g = 0; g < ctx.cache.numKvHeads; g++) ctx.cache.pruneKeyChannels(g, [0, 2, 5, 7]);
      return null;
    },
  };
  assert.throws(() => model.forward(tokens.slice(10, 14), cache, { press: failing, logits: 'none' }), /boom/);
  assert.equal(held(), before);
  for (const l of cache.layers) assert.deepEqual(l.keyChannels, [null, null, null, null]);
});

test('generation on a ThinK cache: every backend agrees with the TypeScript kernels, and pruning changes the logits', () => {
  const tokens = model.tokenizer!.encode('Tom and his dog went to the park. The dog saw a big red ball and', { bos: true });
  const run = (m: Model, think: boolean) => {
    const cache = m.newCache();
    m.forward(tokens, cache, { press: think ? new ThinKPress({ keyChannelCompressionRatio: 0.5 }) : null, logits: 'none' });
    const out: number[] = [];
    let next = 261;
    for (let s = 0; s < 4; s++) {
      const logits = m.forward([next], cache, {});
      out.push(...logits.subarray(0, 64));
      next = logits.indexOf(Math.max(...logits));
    }
    return out;
  };
  const ref = run(new Model(model.config, model.weights, { backend: new JsBackend() }), true);
  const full = run(new Model(model.config, model.weights, { backend: new JsBackend() }), false);
  assert.ok(ref.some((x, i) => Math.abs(x - full[i]) > 1e-3), 'pruning half the key channels left the logits unchanged');
  for (const be of fastBackends) {
    const got = run(new Model(model.config, model.weights, { backend: be }), true);
    got.forEach((x, i) => assert.ok(Math.abs(x - ref[i]) < 1e-3, `${be.name} logit ${i}: ${x} vs ${ref[i]}`));
  }
});

test('think in the registry and `kvpress scores`: the ratio is the channel ratio, channels are reported', () => {
  const press = createPress('think', 0.5);
  assert.equal(press.compressionRatio, 0.25);
  assert.throws(() => createPress('think', 0.5, { keyChannelCompressionRatio: 0.25 }), /give one/);
  const tokens = model.tokenizer!.encode('Once upon a time', { bos: true });
  const { layers, keptBytes } = pressScores(model, createPress('think', 0, { keyChannelCompressionRatio: 0.75 }), tokens);
  for (const l of layers) {
    assert.equal(l.scores, null);
    assert.equal(l.channels!.length, model.config.numKvHeads);
    for (const ch of l.channels!) assert.equal(ch.length, 2);
    for (const k of l.kept) assert.deepEqual(k, [0, 1, 2, 3, 4]);
  }
  assert.equal(keptBytes, model.config.numLayers * model.config.numKvHeads * tokens.length * 4 * (2 + 8));
  assert.equal(pressScores(model, createPress('knorm', 0.5), tokens).layers[0].channels, undefined);
});
