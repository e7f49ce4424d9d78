import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadModel } from '../src/model/load.js';
import { createPress, prefill } from '../src/presses/index.js';
import { FastKVzipPress, gateLoss, readGates, trainGates, writeGates, type GateLayer, type Gates } from '../src/presses/fast-kvzip.js';
import { collectSurrogateData, type SurrogateData } from '../src/presses/kvzip-surrogate.js';
import { runCli } from './helpers/cli.js';

const PROMPT = 'Tom and his dog went to the park. The dog saw a big red ball and ran after it.';

function lcg(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5;
}

function randomGates(D: number, H: number, K: number, L: number, seed: number, dim = 4, numBase = 3): Gates {
  const r = lcg(seed), v = (n: number) => Float32Array.from({ length: n }, r);
  const layers = Array.from({ length: L }, (): GateLayer => ({
    wq: v(H * dim * D), bq: v(H * dim), qNorm: Float32Array.from({ length: dim }, () => 1 + r()), wk: v(K * dim * D),
    kNorm: Float32Array.from({ length: dim }, () => 1 + r()), base: v(K * numBase * dim), bias: v(H),
  }));
  return { hiddenSize: D, numHeads: H, numKvHeads: K, dim, numBase, layers, model: 'test', tokens: 0 };
}

/** The gate score of one token for KV head g, written out from the formula. */
function gateByFormula(s: Gates, p: GateLayer, x: ArrayLike<number>, g: number): number {
  const { hiddenSize: D, numHeads: H, numKvHeads: K, dim: d, numBase: S } = s, G = H / K;
  const rmsnorm = (u: number[], n: ArrayLike<number>) => { const r = Math.sqrt(u.reduce((a, b) => a + b * b, 0) / d + 1e-6); return u.map((v, j) => (v / r) * n[j]); };
  const proj = (w: ArrayLike<number>, row: number) => Array.from({ length: D }, (_, i) => w[row * D + i] * x[i]).reduce((a, b) => a + b, 0);
  const k = rmsnorm(Array.from({ length: d }, (_, j) => proj(p.wk, g * d + j)), p.kNorm);
  let sum = 0;
  for (let h = g * G; h < (g + 1) * G; h++) {
    const q = rmsnorm(Array.from({ length: d }, (_, j) => proj(p.wq, h * d + j) + p.bq[h * d + j]), p.qNorm);
    const own = q.reduce((a, v, j) => a + v * k[j], 0) / Math.sqrt(d) + p.bias[h];
    let z = 0;
    for (let b = 0; b < S; b++) z += Math.exp(q.reduce((a, v, j) => a + v * p.base[(g * S + b) * d + j], 0) / Math.sqrt(d) - own);
    sum += 1 / (1 + z);
  }
  return sum / G;
}

test('Fast KVzip scores are the gates of the hidden states, ends protected, one budget over all layers', async () => {
  const m = await loadModel(), c = m.config, tokens = m.tokenizer!.encode(`${PROMPT} ${PROMPT} ${PROMPT}`, { bos: true }), T = tokens.length;
  const hidden: Float32Array[] = [];
  m.forward(tokens, m.newCache(), { press: { compress: (ctx) => void (hidden[ctx.layer] = ctx.hidden.slice()) }, logits: 'none' });
  const gates = randomGates(c.hiddenSize, c.numHeads, c.numKvHeads, c.numLayers, 3);
  const dir = mkdtempSync(join(tmpdir(), 'fastkvzip-'));
  try {
    const file = join(dir, 'g.safetensors');
    writeGates(file, gates);
    const press = new FastKVzipPress(0.7, { gates: file });
    const scores: Float64Array[][] = [];
    press.observer = { onScores: (l, s) => { scores[l] = s.map((x) => Float64Array.from(x)); } };
    const { cache } = prefill(m, tokens, { press, logits: 'none' });
    const window = Math.floor(0.02 * T);
    assert.ok(window >= 1, `T = ${T}`);
    const all: { x: number; key: string }[] = [];
    gates.layers.forEach((p, l) => {
      for (let g = 0; g < c.numKvHeads; g++) {
        for (let t = 0; t < T; t++) {
          const want = t < 4 || t >= T - window ? 1 : gateByFormula(gates, p, hidden[l].subarray(t * c.hiddenSize, (t + 1) * c.hiddenSize), g);
          assert.ok(Math.abs(scores[l][g][t] - want) <= 1e-5 * want, `L${l} h${g} t${t}: ${scores[l][g][t]} vs ${want}`);
          all.push({ x: want, key: `${l}/${g}/${t}` });
        }
      }
    });
    const kept = new Set(cache.layers.flatMap((lc, l) => Array.from({ length: c.numKvHeads }, (_, g) => Array.from(lc.headPositions(g), (t) => `${l}/${g}/${t}`)).flat()));
    assert.equal(kept.size, all.length - Math.floor(all.length * 0.7));
    const minKept = Math.min(...all.filter((e) => kept.has(e.key)).map((e) => e.x)), maxOut = Math.max(...all.filter((e) => !kept.has(e.key)).map((e) => e.x));
    assert.ok(minKept >= maxOut, `kept ${minKept} < evicted ${maxOut}`);
    assert.deepEqual(readGates(file, c.numLayers, c.hiddenSize, c.numHeads, c.numKvHeads).layers[1].base, gates.layers[1].base);
    assert.throws(() => createPress('fast_kvzip', 0.5), /needs gates/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Fast KVzip training: the loss gradient matches finite differences, and training lowers the loss', () => {
  const D = 6, H = 4, K = 2, gates = randomGates(D, H, K, 1, 11), r = lcg(5), n = 7;
  const data: SurrogateData = { n, x: Array.from({ length: n }, () => Float32Array.from({ length: D }, () => 2 * r())), y: Array.from({ length: n }, () => Float32Array.from({ length: K }, () => -2 + r())) };
  const p = Object.fromEntries(Object.entries(gates.layers[0]).map(([k, v]) => [k, Float64Array.from(v as Float32Array)])) as { [K in keyof GateLayer]: Float64Array };
  const grad = Object.fromEntries(Object.entries(p).map(([k, v]) => [k, new Float64Array(v.length)])) as typeof p;
  gateLoss(gates, p, data, grad);
  for (const k of Object.keys(p) as (keyof GateLayer)[]) {
    for (let i = 0; i < p[k].length; i += Math.max(1, Math.floor(p[k].length / 5))) {
      const x = p[k][i], h = 1e-6;
      p[k][i] = x + h;
      const up = gateLoss(gates, p, data);
      p[k][i] = x - h;
      const down = gateLoss(gates, p, data);
      p[k][i] = x;
      const fd = (up - down) / (2 * h);
      assert.ok(Math.abs(fd - grad[k][i]) <= 1e-5 * (1 + Math.abs(fd)), `${k}[${i}]: analytic ${grad[k][i]} vs finite difference ${fd}`);
    }
  }
  const before = trainGates([data], H, K, D, 'test', { dim: 4, numBase: 3, epochs: 1, learningRate: 0 });
  const after = trainGates([data], H, K, D, 'test', { dim: 4, numBase: 3, epochs: 150 });
  const loss = (g: Gates) => gateLoss(g, Object.fromEntries(Object.entries(g.layers[0]).map(([k, v]) => [k, Float64Array.from(v as Float32Array)])) as typeof p, data);
  assert.ok(loss(after) < 0.5 * loss(before), `loss ${loss(after)} vs ${loss(before)} at initialisation`);
});

test('kvpress calibrate fast-kvzip trains gates on plain KVzip scores that fast_kvzip reads', async () => {
  const m = await loadModel(), tokens = m.tokenizer!.encode(PROMPT, { bos: true });
  const data = collectSurrogateData(m, [tokens], { kvzipPlusNormalization: false });
  const plain: Float64Array[][] = [];
  const kvzip = createPress('kvzip', 0);
  kvzip.observer = { onScores: (l, s) => { plain[l] = s.map((x) => Float64Array.from(x)); } };
  prefill(m, tokens, { press: kvzip, logits: 'none' });
  data.forEach((d, l) => d.y.forEach((y, t) => y.forEach((v, g) => assert.ok(Math.abs(v - Math.log(plain[l][g][t])) < 1e-4, `L${l} t${t} h${g}`))));
  const dir = mkdtempSync(join(tmpdir(), 'fastkvzip-cli-'));
  try {
    const text = join(dir, 't.txt'), out = join(dir, 'g.safetensors');
    (await import('node:fs')).writeFileSync(text, PROMPT);
    const r = await runCli(['calibrate', 'fast-kvzip', '--input', text, '--output', out, '--epochs', '2']);
    assert.equal(r.code, 0, r.stderr);
    const press = createPress('fast_kvzip', 0.5, { gates: out });
    const { cache } = prefill(m, tokens, { press, logits: 'none' });
    assert.equal(cache.lengths().flat().reduce((a, b) => a + b, 0), m.config.numLayers * m.config.numKvHeads * tokens.length - Math.floor(m.config.numLayers * m.config.numKvHeads * tokens.length * 0.5));
    const bad = await runCli(['calibrate', 'fast-kvzip', '--input', text, '--output', out, '--type', 'linear']);
    assert.match(bad.stderr, /--type belongs to `kvpress calibrate kvzap`/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
