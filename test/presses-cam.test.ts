import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { KVCache } from '../src/cache/kv-cache.js';
import type { Compressor, LayerContext } from '../src/model/layer-context.js';
import { loadModel } from '../src/model/load.js';
import { CAMPress, createPress, KnormPress, PressError } from '../src/presses/index.js';
import { mulberry32 } from '../src/presses/random.js';

// CAMPress against a CaM written here from its definition: float64 attention from the pass's
// queries and the cached keys, Knorm scores averaged over heads, the same draw order.

const model = await loadModel();
const c = model.config, d = c.headDim, G = c.numHeads / c.numKvHeads;
const prompt = model.tokenizer!.encode('Once upon a time, there was a little girl named Lily. She loved to play outside.', { bos: true });
const opts = { targetSize: 12, compressionInterval: 3, mergeBudget: 4, seed: 7 };

/** Reference CaM: same schedule (a compression every compressionInterval decoding passes). */
class ReferenceCam implements Compressor {
  readonly A: Float64Array[][] = [];
  private readonly steps: number[] = [];
  private readonly rng = mulberry32(opts.seed);
  merges = 0;

  compress(ctx: LayerContext): Int32Array[] | null {
    if (ctx.isPrefill) return null;
    const l = ctx.layer, H = c.numKvHeads;
    const A = (this.A[l] ??= Array.from({ length: H }, () => new Float64Array(0)));
    for (let g = 0; g < H; g++) {
      const a = new Float64Array(ctx.cache.lengths[g]);
      a.set(A[g]);
      A[g] = a;
      const K = ctx.cache.headKeys(g).slice(), P = ctx.cache.headPositions(g).slice();
      for (let h = g * G; h < (g + 1) * G; h++) {
        for (let r = 0; r < ctx.rows; r++) {
          const q = ctx.queries.subarray(r * c.numHeads * d + h * d, r * c.numHeads * d + (h + 1) * d);
          const logit = Array.from(P, (p, t) => (p <= ctx.positions[r] ? q.reduce((s, x, i) => s + x * K[t * d + i], 0) / Math.sqrt(d) : -Infinity));
          const m = Math.max(...logit), e = logit.map((z) => Math.exp(z - m)), sum = e.reduce((x, y) => x + y, 0);
          e.forEach((x, t) => { a[t] += x / sum / G; });
        }
      }
    }
    this.steps[l] = (this.steps[l] ?? 0) + 1;
    const T = ctx.cache.lengths[0];
    if (this.steps[l] < opts.compressionInterval) return null;
    const k = this.steps[l];
    this.steps[l] = 0;
    if (T <= opts.targetSize) return null;
    // Knorm (−‖k‖) averaged over heads; keep the targetSize best (ties: lower position).
    const mean = new Float64Array(T);
    for (let g = 0; g < H; g++) {
      const K = ctx.cache.headKeys(g);
      for (let t = 0; t < T; t++) mean[t] -= Math.hypot(...K.subarray(t * d, (t + 1) * d)) / H;
    }
    const byScore = (ids: number[]) => ids.sort((x, y) => mean[y] - mean[x] || x - y);
    const all = [...Array(T).keys()];
    const keep = byScore(all.slice()).slice(0, opts.targetSize).sort((x, y) => x - y);
    const cands = byScore(all.filter((t) => !keep.includes(t))).slice(0, k).sort((x, y) => x - y);
    for (let g = 0; g < H; g++) {
      const V = ctx.cache.headValues(g).slice(), a = A[g], out = V.slice();
      for (const e of cands) {
        const W = keep.filter((t) => t > e).slice(0, opts.mergeBudget);
        if (!W.length) continue;
        const mw = W.reduce((s, w) => s + a[w], 0) / W.length, p = Math.min(1, a[e] / mw);
        for (const w of W) {
          if (this.rng() < p) {
            for (let i = 0; i < d; i++) out[w * d + i] += V[e * d + i] / W.length;
            this.merges++;
          }
        }
      }
      for (const t of keep) ctx.cache.setValue(g, t, out.subarray(t * d, (t + 1) * d));
      A[g] = Float64Array.from(keep, (t) => a[t]);
    }
    return Array.from({ length: H }, () => Int32Array.from(keep));
  }
}

function decode(press: Compressor, steps: number): KVCache {
  const cache = model.newCache();
  let logits = model.forward(prompt, cache, { logits: 'last' });
  for (let i = 0; i < steps; i++) {
    let best = 0;
    for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
    logits = model.forward([best], cache, { logits: 'last', press });
  }
  return cache;
}

test('cam_knorm: eviction, merged values and cumulative attention as the reference CaM', () => {
  const press = new CAMPress(new KnormPress(), opts), ref = new ReferenceCam();
  press.reset();
  const steps = 10;
  const a = decode(press, steps), b = decode(ref, steps);
  assert.ok(ref.merges > 0, 'the reference merged nothing: the test would not test merging');
  for (let l = 0; l < c.numLayers; l++) {
    for (let g = 0; g < c.numKvHeads; g++) {
      assert.deepEqual(Array.from(a.layers[l].headPositions(g)), Array.from(b.layers[l].headPositions(g)), `L${l} h${g} positions`);
      const va = a.layers[l].headValues(g).slice(), vb = b.layers[l].headValues(g);
      va.forEach((x, i) => assert.ok(Math.abs(x - vb[i]) <= 1e-4 * (1 + Math.abs(vb[i])), `L${l} h${g} value[${i}] ${x} vs ${vb[i]}`));
      const ca = press.cumulativeAttention(l)![g], cb = ref.A[l][g];
      assert.equal(ca.length, cb.length);
      ca.forEach((x, t) => assert.ok(Math.abs(x - cb[t]) <= 1e-5 * (1 + cb[t]), `L${l} h${g} A[${t}] ${x} vs ${cb[t]}`));
    }
    // Within [targetSize, targetSize + compressionInterval − 1] once it has grown past targetSize.
    const n = a.layers[l].lengths[0];
    assert.ok(n >= opts.targetSize && n < opts.targetSize + opts.compressionInterval, `L${l}: ${n} entries`);
  }
});

test('cam_<scorer> is a decoding wrapper that takes no ratio', () => {
  const p = createPress('cam_knorm', 0, { targetSize: 64, mergeBudget: 8 });
  assert.equal(p.phase, 'decoding');
  assert.equal(p.name, 'cam_knorm');
  assert.throws(() => createPress('cam_knorm', 0.5), PressError);
  assert.throws(() => createPress('cam_knorm', 0, { mergeBudget: 0 }), /mergeBudget must be an integer ≥ 1/);
});
