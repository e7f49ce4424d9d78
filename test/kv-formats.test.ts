/**
 * Paged attention of every backend (TypeScript, native, WebAssembly) in every KV type, against
 * float64 attention over the original f32 keys and values, within a bound derived from each
 * format's rounding alone: an element error e (f16: 2⁻¹¹·|x|, bf16: 2⁻⁸·|x|, q8_0: half its
 * block's scale, q4_0: its block's scale) moves logit t by at most δ_t = scale·Σ_d |q_d|·e(k_td),
 * so each probability by a factor within e^{±2δ}, and the output by at most
 * (e^{2·max δ} − 1)·max|v̂| + max e(v).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend, PagedAttentionArgs } from '../src/backend/backend.js';
import { createBackend } from '../src/backend/index.js';
import { pagedAttention } from '../src/backend/js/paged-attention.js';
import { KV_DTYPES, kvFormat, type KvDtype } from '../src/cache/format.js';
import { KVCache } from '../src/cache/kv-cache.js';
import { rng } from './helpers/random.js';

const backends: Backend[] = (['native', 'wasm'] as const).flatMap((prefer) => {
  try {
    const be = createBackend({ prefer, threads: 1 });
    return be.name === prefer ? [be] : [];
  } catch {
    return [];
  }
});

/** Largest error the format allows on each element of one row x (headDim numbers). */
function elementBounds(dtype: KvDtype, x: Float32Array): Float64Array {
  const hd = x.length, e = new Float64Array(hd), f = kvFormat(dtype, hd);
  if (dtype === 'f32') return e;
  if (dtype === 'f16' || dtype === 'bf16') {
    for (let d = 0; d < hd; d++) e[d] = dtype === 'f16' ? Math.max(Math.abs(x[d]) * 2 ** -11, 2 ** -25) : Math.abs(x[d]) * 2 ** -8;
    return e;
  }
  for (let b0 = 0; b0 < hd; b0 += f.block) {
    let m = 0;
    for (let d = 0; d < f.block; d++) if (Math.abs(x[b0 + d]) > Math.abs(m)) m = x[b0 + d];
    // q8_0: scale = max|x|/127 rounded up to f16, error ≤ scale/2. q4_0: |scale| = |m|/8 rounded
    // to nearest f16, error ≤ |scale|/2 except past 7.5·|scale| on the other side of m (clamped: ≤ |scale|).
    const scale = dtype === 'q8_0' ? (Math.abs(m) / 127) * (1 + 2 ** -10) : (Math.abs(m) / 8) * (1 + 2 ** -11);
    for (let d = 0; d < f.block; d++) {
      const v = x[b0 + d], clamped = dtype === 'q4_0' && Math.sign(v) !== Math.sign(m) && Math.abs(v) > 7.5 * scale * (1 - 2 ** -10);
      e[b0 + d] = clamped ? scale : scale / 2;
    }
  }
  return e;
}

interface Case { hd: number; E: number; lengths: number[]; rows: number; window?: number }

/** Checks every kernel on one case; returns the largest bound used. */
function check(c: Case, dtype: KvDtype, seed: number): number {
  let widest = 0;
  const r = rng(seed), G = c.lengths.length, H = 3 * G, hd = c.hd, longest = Math.max(...c.lengths), scale = 1 / Math.sqrt(hd);
  const K: Float32Array[][] = [], V: Float32Array[][] = [];
  for (let g = 0; g < G; g++) (K[g] = []), (V[g] = []);
  const fill = (cache: KVCache) => {
    const l = cache.layers[0];
    for (let t = 0; t < longest; t++) {
      const k = new Float32Array(G * hd), v = new Float32Array(G * hd);
      for (let g = 0; g < G; g++) {
        if (K[g].length <= t) {
          K[g].push(Float32Array.from({ length: hd }, () => r(2)));
          V[g].push(Float32Array.from({ length: hd }, () => r(0.5)));
        }
        k.set(K[g][t], g * hd);
        v.set(V[g][t], g * hd);
      }
      l.append(k, v, [t], 1);
    }
    l.keep(c.lengths.map((n) => Int32Array.from({ length: n }, (_, i) => longest - n + i)));
    return l;
  };
  // Queries small enough that the worst case over every logit (δ) leaves a bound that means something.
  const q = Float32Array.from({ length: c.rows * H * hd }, () => r(0.25));
  const qPos = Int32Array.from({ length: c.rows }, (_, i) => longest - c.rows + i);
  const kernels: [string, KVCache, (a: PagedAttentionArgs) => void][] = [['ts', new KVCache(1, G, hd, { dtype, pageEntries: c.E }), pagedAttention]];
  for (const be of backends) {
    kernels.push([be.name, new KVCache(1, G, hd, { dtype, pageEntries: c.E }), (a) => be.attentionPaged!(a)]);
    if (be.pageMemory) kernels.push([`${be.name} (pages in its memory)`, new KVCache(1, G, hd, { dtype, pageEntries: c.E, memory: be.pageMemory }), (a) => be.attentionPaged!(a)]);
  }
  for (const [name, cache, run] of kernels) {
    const l = fill(cache);
    const out = new Float32Array(c.rows * H * hd);
    run({ out, q, rows: c.rows, numHeads: H, numKvHeads: G, headDim: hd, cache: l, queryPositions: qPos, window: c.window, scale, scratch: new Float32Array(longest) });
    for (let i = 0; i < c.rows; i++) for (let h = 0; h < H; h++) {
      const g = Math.floor(h / 3), n = c.lengths[g], off = longest - n;
      const qo = (i * H + h) * hd, visible = n - c.rows + i + 1;
      const ts: number[] = [];
      for (let t = 0; t < visible; t++) if (c.window === undefined || off + t > qPos[i] - c.window) ts.push(off + t);
      let delta = 0, vmax = 0, ev = 0;
      const z = ts.map((t) => {
        let s = 0, e = 0;
        const eb = elementBounds(dtype, K[g][t]), evb = elementBounds(dtype, V[g][t]);
        for (let d = 0; d < hd; d++) {
          s += q[qo + d] * K[g][t][d];
          e += Math.abs(q[qo + d]) * eb[d];
          vmax = Math.max(vmax, Math.abs(V[g][t][d]) + evb[d]);
          ev = Math.max(ev, evb[d]);
        }
        delta = Math.max(delta, e * scale);
        return s * scale;
      });
      const m = Math.max(...z), w = z.map((x) => Math.exp(x - m)), sum = w.reduce((a, b) => a + b, 0);
      const bound = (Math.exp(2 * delta) - 1) * vmax + ev + 2e-5;
      widest = Math.max(widest, bound);
      for (let d = 0; d < hd; d++) {
        let want = 0;
        ts.forEach((t, j) => (want += (w[j] / sum) * V[g][t][d]));
        const got = out[qo + d];
        assert.ok(Math.abs(got - want) <= bound, `${name} ${dtype} hd ${hd} E ${c.E} rows ${c.rows} window ${c.window} row ${i} head ${h} [${d}]: ${got} vs ${want} (bound ${bound})`);
      }
    }
    cache.dispose();
  }
  return widest;
}

const cases: Case[] = [
  { hd: 64, E: 16, lengths: [70, 41], rows: 1 },
  { hd: 64, E: 64, lengths: [150, 97], rows: 5 },
  { hd: 64, E: 16, lengths: [70, 70], rows: 3, window: 20 },
  { hd: 32, E: 8, lengths: [33, 19], rows: 2 },
  { hd: 24, E: 16, lengths: [40, 25], rows: 4, window: 9 },
  { hd: 8, E: 4, lengths: [21, 13], rows: 1 },
  // Decode (three queries a KV head) on whole f32 rows: 64 columns and a rest, two blocks of 64,
  // runs ending off a multiple of eight keys, and a window starting inside a page.
  { hd: 96, E: 16, lengths: [45, 30], rows: 1 },
  { hd: 128, E: 32, lengths: [77, 9], rows: 1 },
  { hd: 64, E: 16, lengths: [70, 50], rows: 1, window: 23 },
  // Prefill tiles (more than four queries a KV head: the run's keys transposed, six queries by
  // sixteen keys a step): whole tiles of 32 and a ragged rest, runs of 1–16 keys, a head width
  // that is no multiple of 8, and a window.
  { hd: 64, E: 16, lengths: [100, 77], rows: 40 },
  { hd: 20, E: 8, lengths: [45, 30], rows: 12, window: 17 },
];

test('paged attention of every backend in every KV type stays within the bound of the type\'s rounding', () => {
  let seed = 1;
  for (const c of cases) for (const dtype of KV_DTYPES) check(c, dtype, seed++);
});

test('the bounds are far below the outputs (|v| ≤ 0.5): the check above is not vacuous', () => {
  // Widest bound over the hd-64 decode case, per type: f32 only float slack, then growing with
  // the format's step, q4_0 still well under the values' spread.
  const c = cases[0], widest = Object.fromEntries(KV_DTYPES.map((t) => [t, check(c, t, 99)]));
  assert.ok(widest.f32 < 1e-4 && widest.f16 < 2e-3 && widest.bf16 < 2e-2 && widest.q8_0 < 0.05 && widest.q4_0 < 0.5, JSON.stringify(widest));
  assert.ok(widest.f16 < widest.bf16 && widest.q8_0 < widest.q4_0);
});
