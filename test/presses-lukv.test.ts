import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadModel, packageRoot } from '../src/model/load.js';
import { calibrateLukvBudgets, createPress, KnormPress, LUKVPress, prefill, PressError, readLukvBudgets, writeLukvBudgets, type LukvBudgets } from '../src/presses/index.js';
import { headCounts } from '../src/presses/lukv.js';
import { runCli } from './helpers/cli.js';

const model = await loadModel();
const c = model.config, L = c.numLayers, H = c.numKvHeads;
const ids = model.tokenizer!.encode(readFileSync(join(packageRoot(), 'examples/story.txt'), 'utf8').slice(0, 200), { bos: true });

test('largest-remainder head counts: the rounded total, each within one of its share, in [1, T]', () => {
  assert.deepEqual(headCounts([0.25, 0.5, 0.6, 0.75], 40), [30, 20, 16, 10]);
  // Shares 7.5, 7.5, 2.7, 2.3 → floors 7, 7, 2, 2 (18); total round(20) = 20: the two largest remainders (.7, then .5 of head 0) get one.
  assert.deepEqual(headCounts([0.25, 0.25, 0.73, 0.77], 10), [8, 7, 3, 2]);
  assert.deepEqual(headCounts([1, 1, 0, 0], 10), [1, 1, 10, 10]);
});

test('lukv_knorm: every head keeps its own budget of the best Knorm entries, sinks and window first', () => {
  const T = ids.length;
  // Row 49 (ratio 0.5): head h of layer l prunes (h + 1)/5 − l/50 of its entries.
  const curves: LukvBudgets = {
    model: 'test', numLayers: L, numKvHeads: H, samples: 1, tokens: T,
    pruneRatios: Array.from({ length: 99 }, (_, i) => Array.from({ length: L }, (_, l) => Array.from({ length: H }, (_, h) => (i === 49 ? (h + 1) / 5 - l / 50 : 0.5)))),
  };
  const press = new LUKVPress(new KnormPress(), 0.5, { curves, sink: 2, window: 3 });
  const seen: Float64Array[][] = [];
  press.observer = { onScores: (l, s) => { seen[l] = s.map((x) => Float64Array.from(x)); } };
  const { cache } = prefill(model, ids, { press, logits: 'none' });
  for (let l = 0; l < L; l++) {
    const prune = curves.pruneRatios[49][l], want = prune.map((p) => T * (1 - p));
    const total = Math.round(want.reduce((a, b) => a + b, 0));
    const counts = cache.layers[l].lengths;
    assert.equal(Array.from(counts).reduce((a, b) => a + b, 0), total, `L${l} total`);
    for (let h = 0; h < H; h++) {
      assert.ok(Math.abs(counts[h] - want[h]) < 1, `L${l} h${h}: ${counts[h]} for a share of ${want[h]}`);
      const s = seen[l][h], pos = new Set(cache.layers[l].headPositions(h));
      const rank = (t: number) => (t < 2 || t >= T - 3 ? Infinity : s[t]);
      const byRank = [...Array(T).keys()].sort((a, b) => rank(b) - rank(a) || a - b).slice(0, counts[h]);
      assert.deepEqual([...pos].sort((a, b) => a - b), byRank.sort((a, b) => a - b), `L${l} h${h}`);
    }
  }
});

test('calibrated curves: each row is the pooled top-k of observed attention (derived here from attentionProbs)', () => {
  const sample = ids.slice(0, 48), T = sample.length;
  const b = calibrateLukvBudgets(model, [sample]);
  assert.equal(b.pruneRatios.length, 99);
  // Observed attention per entry from the layer context's own float32 attention.
  const mass = new Float64Array(L * H * T), G = c.numHeads / H;
  model.forward(sample, model.newCache(), {
    logits: 'none',
    press: { compress: (ctx) => { ctx.attentionProbs().forEach((p, h) => { for (let r = 0; r < T; r++) for (let t = 0; t < T; t++) mass[(ctx.layer * H + Math.floor(h / G)) * T + t] += p[r * T + t] / (T * G); }); return null; } },
  });
  for (const ratio of [0.25, 0.5, 0.9]) {
    const n = Math.floor((1 - ratio) * L * H * T);
    const top = [...mass.keys()].sort((a, b) => mass[b] - mass[a] || a - b).slice(0, n);
    const kept = new Array(L * H).fill(0);
    for (const i of top) kept[Math.floor(i / T)]++;
    const row = b.pruneRatios[Math.round(ratio * 100) - 1];
    let total = 0;
    for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) {
      const k = Math.round((1 - row[l][h]) * T);
      total += k;
      // float32 vs float64 attention may swap a near-tie across heads: one entry either way.
      assert.ok(Math.abs(k - kept[l * H + h]) <= 1, `ratio ${ratio} L${l} h${h}: ${k} vs ${kept[l * H + h]}`);
    }
    assert.equal(total, n, `ratio ${ratio}: total kept`);
  }
});

test('budget files: written, read back, refused when malformed or for another shape; CLI flag', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lukv-'));
  try {
    const b = calibrateLukvBudgets(model, [ids.slice(0, 32)]);
    const f = join(dir, 'b.json');
    writeLukvBudgets(f, b);
    assert.deepEqual(readLukvBudgets(f).pruneRatios, b.pruneRatios);
    const p = createPress('lukv_knorm', 0.5, { budgets: f });
    assert.ok(prefill(model, ids, { press: p, logits: 'none' }).cache.lengths().flat().every((n) => n >= 1));
    assert.throws(() => createPress('lukv_knorm', 0.5), /needs budget curves/);
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ ...b, pruneRatios: [[[2]]] }));
    assert.throws(() => createPress('lukv_knorm', 0.5, { budgets: join(dir, 'bad.json') }), /number\[99\]\[numLayers\]\[numKvHeads\]/);
    const other = new LUKVPress(new KnormPress(), 0.5, { curves: { ...b, numKvHeads: 2, pruneRatios: b.pruneRatios.map((r) => r.map((l) => l.slice(0, 2))) } });
    assert.throws(() => prefill(model, ids, { press: other }), PressError);
    const r = await runCli(['calibrate', '--input', join(packageRoot(), 'examples/story.txt'), '--lukv-budgets', '--seq-len', '64', '--max-samples', '2', '--output', join(dir, 'c.json')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readLukvBudgets(join(dir, 'c.json')).samples, 2);
    const bad = await runCli(['calibrate', '--input', join(packageRoot(), 'examples/story.txt'), '--lukv-budgets', '--output', join(dir, 'c.safetensors')]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--lukv-budgets writes JSON/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
