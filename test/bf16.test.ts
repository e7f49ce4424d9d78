import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../src/backend/backend.js';
import { backendInfo, createBackend } from '../src/backend/index.js';
import { bf16Bits, JsBackend, toBf16 } from '../src/backend/js/kernels.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import { Model } from '../src/model/model.js';
import { toWeightType, type Weight } from '../src/model/weights.js';
import { argmax } from '../src/pipeline/sampler.js';
import { runCli } from './helpers/cli.js';
import { randArray, rng } from './helpers/random.js';

/** The f32 a bf16 stands for, decoded here independently of the code under test. */
function bf16Value(h: number): number {
  const v = new DataView(new ArrayBuffer(4));
  v.setUint32(0, h << 16);
  return v.getFloat32(0);
}

/** A matrix as f32 (the checkpoint's own arrays, for stories260K). */
function f32(w: Weight): Float32Array {
  const a = toWeightType(w, 'f32', 0, 0);
  if (!(a instanceof Float32Array)) throw new Error('not f32');
  return a;
}

/** max |got − want| relative to max |want|. */
function relErr(got: Float32Array, want: ArrayLike<number>): number {
  let diff = 0, mag = 0;
  for (let i = 0; i < want.length; i++) {
    if (!Number.isFinite(got[i])) return Infinity;
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    mag = Math.max(mag, Math.abs(want[i]));
  }
  return mag === 0 ? diff : diff / mag;
}

test('bf16 rounding: hand-computed bit patterns', () => {
  const cases: [number, number, string][] = [
    [0x3f800000, 0x3f80, '1'],
    [0x3f807fff, 0x3f80, 'just below half an ulp: down'],
    [0x3f808000, 0x3f80, 'exactly half, even lower neighbour: down'],
    [0x3f808001, 0x3f81, 'just above half: up'],
    [0x3f818000, 0x3f82, 'exactly half, odd lower neighbour: up to even'],
    [0xbf808000, 0xbf80, 'negative tie to even: down in magnitude'],
    [0xbf818000, 0xbf82, 'negative tie to even: up in magnitude'],
    [0x40490fdb, 0x4049, 'pi → 3.140625'],
    [0x00000000, 0x0000, '+0'],
    [0x80000000, 0x8000, '−0'],
    [0x00018000, 0x0002, 'subnormal tie to even'],
    [0x7f800000, 0x7f80, '+Inf'],
    [0xff800000, 0xff80, '−Inf'],
    [0x7f7fffff, 0x7f80, 'largest f32 overflows to +Inf'],
    [0x7f7f7fff, 0x7f7f, 'largest bf16 stays finite'],
    [0x7fc00000, 0x7fc0, 'quiet NaN'],
    [0x7f800001, 0x7fc0, 'NaN whose payload is only in the dropped bits stays NaN'],
    [0xffc00001, 0xffc0, 'negative NaN'],
  ];
  for (const [f32, want, what] of cases) {
    assert.equal(bf16Bits(f32), want, `${what}: 0x${f32.toString(16)} → 0x${bf16Bits(f32).toString(16)}, want 0x${want.toString(16)}`);
  }
  // toBf16 reads a view's own elements, not the start of its buffer.
  const buf = new Float32Array([7, 1, 1.00390625, Math.PI, -Infinity, NaN]);
  const h = toBf16(buf.subarray(1));
  assert.deepEqual([...h.subarray(0, 4)], [0x3f80, 0x3f80, 0x4049, 0xff80]);
  assert.ok(Number.isNaN(bf16Value(h[4])));
});

/** (m, n, k): n and k off multiples of 16 and of 4, m = 1 (decode) and m > 1. */
const SHAPES: [number, number, number][] = [
  [1, 1, 1], [1, 5, 0], [1, 7, 5], [1, 33, 17], [1, 37, 65], [1, 130, 577], [1, 203, 100], [2, 3, 1], [3, 5, 7],
  [4, 67, 33], [7, 13, 29], [3, 130, 191], [1, 2000, 577],
  // Decode rows from 3 KB (k ≥ 1536 bf16) go through the 4-row passes, shorter ones one at a time.
  [1, 45, 1535], [1, 70, 1536], [2, 19, 1601], [3, 9, 2050],
];

test('JS bf16 matmul equals a float64 product over the widened weights', () => {
  const js = new JsBackend();
  let seed = 1;
  for (const [m, n, k] of SHAPES) {
    const r = rng(seed++);
    const x = randArray(r, m * k), w = toBf16(randArray(r, n * k)), bias = randArray(r, n);
    for (const b of [null, bias]) {
      const want = new Float64Array(m * n);
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let p = 0; p < k; p++) s += x[i * k + p] * bf16Value(w[j * k + p]);
          want[i * n + j] = s + (b ? b[j] : 0);
        }
      }
      const got = new Float32Array(m * n).fill(NaN);
      js.matmulBf16(got, x, w, m, n, k, b);
      const e = relErr(got, want);
      assert.ok(e <= 1e-6, `${m}×${n}×${k} bias=${!!b}: relative error ${e}`);
    }
  }
});

const info = backendInfo({ prefer: 'auto' });
const fast: Backend[] = [];
for (const name of ['native', 'wasm'] as const) if (info.backends[name].available) fast.push(createBackend({ prefer: name, threads: 1 }));

test('the native and wasm backends have matmulBf16', () => {
  assert.ok(fast.length > 0, 'no fast backend available');
  for (const b of fast) assert.equal(typeof b.matmulBf16, 'function', b.name);
  // Rerun in a child with KVPRESS_NATIVE_ISA set (below): check the build it was capped to runs.
  const isa = process.env.KVPRESS_NATIVE_ISA;
  if (isa && info.backends.native.available) assert.match(info.backends.native.detail, new RegExp(`^${isa} kernels`));
});

/** `threads`, or the cores there are when fewer (the split is then not exercised here). */
function setThreadsCapped(b: Backend, threads: number): void {
  b.setThreads(Math.min(threads, availableParallelism()));
}

/**
 * The error a bf16 product may make against the exact Σ_p x_p·w_p + b (w exactly bf16): the
 * input rounded to bf16 (the native GEMM does: ≤ 2^-8 relative, bf16's unit roundoff, per
 * product) plus f32 sums of k + 1 terms (≤ (k+1)·2^-24 of Σ|terms|, to first order).
 */
function bf16Bound(sumAbs: number, k: number): number {
  return 2 ** -8 * sumAbs + (k + 2) * 2 ** -24 * (1 + 2 ** -8) * sumAbs + 1e-30;
}

/** The float64 products of x by the exact bf16 weights: Σ_p x·w and Σ_p |x·w| per output. */
function exactBf16Product(x: Float32Array, w: Uint16Array, m: number, n: number, k: number): { sum: Float64Array; abs: Float64Array } {
  const v = new DataView(new ArrayBuffer(4)), wide = new Float64Array(w.length);
  for (let i = 0; i < w.length; i++) {
    v.setUint32(0, w[i] << 16);
    wide[i] = v.getFloat32(0);
  }
  const sum = new Float64Array(m * n), abs = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0, a = 0;
      for (let p = 0; p < k; p++) {
        const t = x[i * k + p] * wide[j * k + p];
        s += t;
        a += Math.abs(t);
      }
      sum[i * n + j] = s;
      abs[i * n + j] = a;
    }
  }
  return { sum, abs };
}

/** Checks got against the exact product (+ bias) within bf16Bound. */
function checkBf16Product(what: string, got: Float32Array, exact: { sum: Float64Array; abs: Float64Array }, m: number, n: number, k: number, bias: Float32Array | null): void {
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      const s = exact.sum[i * n + j] + (bias ? bias[j] : 0), abs = exact.abs[i * n + j] + (bias ? Math.abs(bias[j]) : 0);
      const err = Math.abs(got[i * n + j] - s);
      if (!(err <= bf16Bound(abs, k))) assert.fail(`${what}: out[${i}][${j}] = ${got[i * n + j]}, exact ${s}, error ${err} > bound ${bf16Bound(abs, k)}`);
    }
  }
}

for (const b of fast) {
  test(`${b.name} bf16 matmul is within bf16's rounding of the exact product on odd shapes, same bits on 1 and 2 threads`, () => {
    let seed = 100;
    for (const [m, n, k] of [...SHAPES, [6, 33, 17], [13, 70, 300], [64, 172, 64], [100, 40, 1100]] as [number, number, number][]) {
      const r = rng(seed++);
      const x = randArray(r, m * k), w = toBf16(randArray(r, n * k)), bias = randArray(r, n);
      const exact = exactBf16Product(x, w, m, n, k);
      for (const bb of [null, bias]) {
        const outs: Float32Array[] = [];
        for (const threads of [1, 2]) {
          setThreadsCapped(b, threads);
          const got = new Float32Array(m * n).fill(NaN);
          b.matmulBf16!(got, x, w, m, n, k, bb);
          checkBf16Product(`${b.name} ${m}×${n}×${k} bias=${!!bb} threads=${b.threads}`, got, exact, m, n, k, bb);
          outs.push(got);
        }
        assert.deepEqual(outs[1], outs[0], `${b.name} ${m}×${n}×${k}: bits depend on the thread count`);
      }
    }
    b.setThreads(1);
  });

  test(`${b.name} bf16 matmul rejects bad arguments in one line`, () => {
    const out = new Float32Array(4), x = new Float32Array(4);
    assert.throws(() => b.matmulBf16!(out, x, new Float32Array(16) as unknown as Uint16Array, 1, 4, 4), /matmulBf16: w must be a Uint16Array/);
    assert.throws(() => b.matmulBf16!(out, x, new Uint16Array(15), 1, 4, 4), /matmulBf16: w has 15 values, needs 16/);
    assert.throws(() => b.matmulBf16!(out, x, new Uint16Array(16), 2, 4, 4), /matmulBf16: out has 4 floats, needs 8/);
  });
}

if (!process.env.KVPRESS_NATIVE_ISA && info.backends.native.available) {
  for (const isa of process.arch === 'x64' ? ['avx2', 'base'] : ['base']) {
    test(`native ${isa} bf16 kernels match the reference`, () => {
      const env: NodeJS.ProcessEnv = { ...process.env, KVPRESS_NATIVE_ISA: isa, KVPRESS_BACKEND: '' };
      delete env.NODE_TEST_CONTEXT;
      const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], { env, encoding: 'utf8' });
      assert.equal(r.status, 0, `${isa}:\n${r.stdout.split('\n').filter((l) => /not ok|error|Error/.test(l)).join('\n')}`);
    });
  }
}

/** Measured on stories260K: see test/bf16-accuracy.test.ts for the figures and their bounds. */
const LOGIT_TOLERANCE = 0.25;
const AGREED_TOKENS = 64;

for (const b of [new JsBackend(), ...fast]) {
  test(`stories260K on ${b.name}: bf16 weights stay within ${LOGIT_TOLERANCE} of f32 for ${AGREED_TOKENS} greedy tokens`, async () => {
    const f32 = await loadModel(undefined, { backend: b });
    const bf16 = await loadModel(undefined, { backend: b, weights: 'bf16' });
    assert.equal(f32.weightsType, 'f32');
    assert.equal(bf16.weightsType, 'bf16');
    const prompt = f32.tokenizer!.encode('Once upon a time', { bos: true });
    const ca = f32.newCache(), cb = bf16.newCache();
    const pa = f32.forward(prompt, ca), pb = bf16.forward(prompt, cb);
    let ta = argmax(pa), tb = argmax(pb), maxDiff = 0;
    for (let j = 0; j < pa.length; j++) maxDiff = Math.max(maxDiff, Math.abs(pa[j] - pb[j]));
    for (let i = 0; i < AGREED_TOKENS; i++) {
      assert.equal(tb, ta, `greedy token ${i} differs`);
      const la = f32.forward([ta], ca), lb = bf16.forward([tb], cb);
      for (let j = 0; j < la.length; j++) maxDiff = Math.max(maxDiff, Math.abs(la[j] - lb[j]));
      ta = argmax(la);
      tb = argmax(lb);
    }
    // Above 0: the passes did read the bf16 weights.
    assert.ok(maxDiff > 0 && maxDiff <= LOGIT_TOLERANCE, `max |Δlogit| ${maxDiff}`);
  });
}

test('bf16 decode equals f32 decode over weights rounded to bf16 beforehand', async () => {
  // Round to nearest even independently: the nearer of the two bf16 neighbours, ties to the
  // even one (weights are finite).
  const round = (a: Float32Array): Float32Array => {
    const bits = new Uint32Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
    const out = new Float32Array(a.length);
    for (let i = 0; i < a.length; i++) {
      const lo = bits[i] >>> 16, vlo = bf16Value(lo), vhi = bf16Value(lo + 1);
      const dlo = Math.abs(a[i] - vlo), dhi = Math.abs(vhi - a[i]);
      out[i] = dlo < dhi || (dlo === dhi && (lo & 1) === 0) ? vlo : vhi;
    }
    return out;
  };
  const m = await loadModel();
  const w = m.weights;
  const rounded = {
    ...w,
    embedding: round(f32(w.embedding)),
    lmHead: round(f32(w.lmHead)),
    layers: w.layers.map((l) => ({ ...l, wq: round(f32(l.wq)), wk: round(f32(l.wk)), wv: round(f32(l.wv)), wo: round(f32(l.wo)), wGate: round(f32(l.wGate)), wUp: round(f32(l.wUp)), wDown: round(f32(l.wDown)) })),
  };
  for (const b of [new JsBackend(), ...fast]) {
    const half = new Model(m.config, w, { backend: b, weights: 'bf16' });
    const ref = new Model(m.config, rounded, { backend: b });
    // One token per pass from the start, so that every pass of `half` reads its bf16 weights.
    const ch = half.newCache(), cr = ref.newCache();
    for (const t of [1, 300, 17, 42, 8, 111, 500, 3]) {
      const e = relErr(half.forward([t], ch), ref.forward([t], cr));
      // The TypeScript kernels sum both the same way; the others in another order.
      assert.ok(b.name === 'js' ? e === 0 : e <= 1e-4, `${b.name} token ${t}: relative error ${e}`);
    }
  }
});

test('weights: a bad value is a one-line error', async () => {
  const m = await loadModel();
  assert.throws(() => new Model(m.config, m.weights, { weights: 'f16' as 'bf16' }), /^Error: model: weights must be 'f32', 'bf16', 'q8_0' or 'q4_k', got "f16"$/);
  assert.throws(() => new Model(m.config, m.weights, { decodeWeights: 'f16' as 'bf16' }), /^Error: model: weights must be 'f32', 'bf16', 'q8_0' or 'q4_k', got "f16"$/);
});

test('bf16 weights are held once: every matrix bf16, tied embeddings one array, no f32 copy', async () => {
  const m = await loadModel(undefined, { weights: 'bf16' });
  const w = m.weights;
  assert.equal(m.weightsType, 'bf16');
  assert.equal(w.lmHead, w.embedding);
  for (const l of w.layers) for (const a of [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown]) assert.ok(!(a instanceof Float32Array) && a.data instanceof Uint16Array);
  // The deprecated option name does the same.
  assert.equal((await loadModel(undefined, { decodeWeights: 'bf16' })).weightsType, 'bf16');
});

test('a backend without matmulBf16 computes from bf16 weights a block of rows at a time, as the reference does', async () => {
  const m = await loadModel();
  const js = new JsBackend();
  const plain: Backend = {
    name: 'plain', description: 'no bf16', threads: 1, setThreads: () => {},
    matmul: js.matmul.bind(js), rmsnorm: js.rmsnorm.bind(js), rope: js.rope.bind(js), siluMul: js.siluMul.bind(js), attention: js.attention.bind(js),
  };
  const a = new Model(m.config, m.weights, { backend: plain, weights: 'bf16' });
  const b = new Model(m.config, m.weights, { backend: js, weights: 'bf16' });
  const ca = a.newCache(), cb = b.newCache();
  assert.deepEqual(a.forward([1, 9, 77], ca, { logits: 'all' }), b.forward([1, 9, 77], cb, { logits: 'all' }));
  for (const t of [1, 9, 77]) assert.deepEqual(a.forward([t], ca), b.forward([t], cb));
});

test('kvpress bench --weights: "weights" and "gemm" in --json; --decode-weights is an alias with a notice', async () => {
  const r = await runCli(['bench', '--shape', 'stories260K', '--prompt-tokens', '4', '--gen-tokens', '4', '--weights', 'bf16', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { weights: string; gemm: string; decodeTokensPerSecond: number; weightBytes: number };
  assert.equal(j.weights, 'bf16');
  assert.equal(typeof j.gemm, 'string');
  assert.ok(j.gemm.length > 0);
  assert.ok(j.decodeTokensPerSecond > 0);
  const old = await runCli(['bench', '--shape', 'stories260K', '--prompt-tokens', '4', '--gen-tokens', '4', '--decode-weights', 'bf16', '--json']);
  assert.equal(old.code, 0, old.stderr);
  assert.equal((JSON.parse(old.stdout) as { weights: string }).weights, 'bf16');
  assert.match(old.stderr, /^kvpress: --decode-weights is now --weights/);
  assert.equal(old.stderr.trim().split('\n').length, 1);
  const f32 = JSON.parse((await runCli(['bench', '--shape', 'stories260K', '--prompt-tokens', '4', '--gen-tokens', '4', '--json'])).stdout) as { weights: string; weightBytes: number };
  assert.equal(f32.weights, 'f32');
  // Matrices halve; the f32 norms stay.
  assert.ok(j.weightBytes < 0.55 * f32.weightBytes, `${j.weightBytes} vs ${f32.weightBytes}`);
  const bad = await runCli(['bench', '--shape', 'stories260K', '--weights', 'f16']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--weights must be f32, bf16, q8_0 or q4_k, got "f16"/);
  const both = await runCli(['bench', '--shape', 'stories260K', '--weights', 'bf16', '--decode-weights', 'bf16']);
  assert.equal(both.code, 2);
});

test('kvpress generate --weights bf16 generates greedily as f32 does', async () => {
  const args = ['generate', '--prompt', 'Once upon a time', '--max-new-tokens', '24', '--json'];
  const a = await runCli(args), b = await runCli([...args, '--weights', 'bf16']);
  assert.equal(b.code, 0, b.stderr);
  assert.deepEqual((JSON.parse(b.stdout) as { tokens: number[] }).tokens, (JSON.parse(a.stdout) as { tokens: number[] }).tokens);
  const ctx = await runCli(['generate', '--context-file', `${packageRoot()}/examples/story.txt`, '--question', 'Who lost his ball?', '--max-new-tokens', '8', '--decode-weights', 'bf16', '--json']);
  assert.equal(ctx.code, 0, ctx.stderr);
  assert.equal((JSON.parse(ctx.stdout) as { answers: string[] }).answers.length, 1);
  const bad = await runCli([...args, '--weights', 'fp8']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--weights must be f32, bf16, q8_0 or q4_k, got "fp8"/);
});
