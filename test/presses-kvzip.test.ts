import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadModel } from '../src/model/load.js';
import type { Model } from '../src/model/model.js';
import type { Compressor } from '../src/model/layer-context.js';
import { createPress, prefill } from '../src/presses/index.js';
import { KVzipPress } from '../src/presses/kvzip.js';
import { KVzapPress } from '../src/presses/kvzap.js';
import { collectSurrogateData, readSurrogate, surrogateLoss, trainSurrogate, writeSurrogate, type KVzipSurrogate } from '../src/presses/kvzip-surrogate.js';
import { runCli } from './helpers/cli.js';

let modelP: Promise<Model> | null = null;
const model = () => (modelP ??= loadModel());
const PROMPT = 'Tom and his dog went to the park. The dog saw a big red ball and ran after it.';

/** The press's scores [layer][head][t] and the cache's kept positions. */
function runPress(m: Model, press: KVzipPress | KVzapPress, tokens: number[]) {
  const scores: Float64Array[][] = [];
  press.observer = { onScores: (l, s) => { scores[l] = s.map((x) => Float64Array.from(x)); } };
  const { cache } = prefill(m, tokens, { press, logits: 'none' });
  return { scores, kept: cache.layers.map((l) => Array.from({ length: l.numKvHeads }, (_, g) => Array.from(l.headPositions(g)))) };
}

/**
 * KVzip scores derived from the model's own attention, written apart from the press: the context
 * is prefilled, then each chunk's repeat ids (built here from the prompt strings) run through a
 * plain forward pass whose probe reads the full causal softmax of every repeat query; the softmax
 * is renormalised to the columns KVzip lets a chunk see (its sinks, the chunk, the repeat rows).
 */
function derivedScores(m: Model, tokens: number[], chunkSize: number, nSink: number): number[][][] {
  const c = m.config, T = tokens.length, G = c.numHeads / c.numKvHeads, tok = m.tokenizer!;
  const out = Array.from({ length: c.numLayers }, () => Array.from({ length: c.numKvHeads }, () => new Array<number>(T).fill(0)));
  const base = prefill(m, tokens, { logits: 'none' }).cache;
  for (let start = 0; start < T; start += chunkSize) {
    const end = Math.min(T, start + chunkSize);
    const prompt = start === 0 ? tok.encode('\n\nRepeat the previous context exactly.', { bos: false })
      : [...tok.encode('\n\nRepeat the part of the previous context exactly, starting with', { bos: false }), ...tokens.slice(Math.max(0, start - 8), start)];
    const ids = [...prompt, ...tok.encode('\n', { bos: false }), ...tokens.slice(start, end)];
    const sinks = Math.min(nSink, start);
    const probe: Compressor = {
      compress(ctx) {
        ctx.attentionProbs().forEach((p, h) => {
          const len = T + ctx.rows, s = out[ctx.layer][Math.floor(h / G)];
          for (let r = 0; r < ctx.rows; r++) {
            const row = p.subarray(r * len, (r + 1) * len);
            let mass = 0;
            for (let t = 0; t < len; t++) if (t < sinks || (t >= start && t < end) || t >= T) mass += row[t];
            for (let t = start; t < end; t++) s[t] = Math.max(s[t], row[t] / mass);
          }
        });
      },
    };
    m.forward(ids, base.clone(), { press: probe, logits: 'none' });
  }
  return out;
}

test('KVzip over several chunks equals the renormalised attention of each repeat pass', async () => {
  const m = await model(), tokens = m.tokenizer!.encode(PROMPT, { bos: true });
  for (const chunkSize of [7, 2048]) {
    const { scores } = runPress(m, new KVzipPress(0.5, { chunkSize }), tokens);
    const want = derivedScores(m, tokens, chunkSize, 4);
    want.forEach((layer, l) => layer.forEach((s, g) => s.forEach((x, t) => {
      assert.ok(Math.abs(scores[l][g][t] - x) <= 1e-5 * x + 1e-7, `chunk ${chunkSize} L${l} h${g} t${t}: ${scores[l][g][t]} vs ${x}`);
    })));
  }
});

test('KVzip evicts floor(L·H·T·ratio) lowest scores over all layers, or per layer with layerwise', async () => {
  const m = await model(), tokens = m.tokenizer!.encode(PROMPT, { bos: true }), T = tokens.length, c = m.config;
  for (const layerwise of [false, true]) {
    const ratio = 0.6, { scores, kept } = runPress(m, new KVzipPress(ratio, { layerwise }), tokens);
    const groups = layerwise ? scores.map((_, l) => [l]) : [scores.map((_, l) => l)];
    for (const layers of groups) {
      const all = layers.flatMap((l) => scores[l].flatMap((s, g) => Array.from(s, (x, t) => ({ x, l, g, t }))));
      const nOut = Math.floor(all.length * ratio);
      const keptSet = new Set(layers.flatMap((l) => kept[l].flatMap((k, g) => k.map((t) => `${l}/${g}/${t}`))));
      assert.equal(keptSet.size, all.length - nOut, `layerwise=${layerwise}`);
      const keptX = all.filter((e) => keptSet.has(`${e.l}/${e.g}/${e.t}`)).map((e) => e.x), outX = all.filter((e) => !keptSet.has(`${e.l}/${e.g}/${e.t}`)).map((e) => e.x);
      assert.ok(Math.min(...keptX) >= Math.max(...outX), `layerwise=${layerwise}: a kept score is below an evicted one`);
    }
    assert.equal(kept.length, c.numLayers);
    assert.ok(kept.every((l) => l.every((k) => k.length <= T)));
  }
});

test('KVzip refuses a cache that an earlier press already compressed, and leaves ratio 0 untouched', async () => {
  const m = await model(), tokens = m.tokenizer!.encode(PROMPT, { bos: true });
  const { cache } = prefill(m, tokens, { press: new KVzipPress(0), logits: 'none' });
  assert.deepEqual(cache.lengths(), Array.from({ length: m.config.numLayers }, () => new Array(m.config.numKvHeads).fill(tokens.length)));
  const composed = createPress('kvzip', 0.5);
  const knorm = createPress('knorm', 0.5);
  const both: Compressor = { compress: (ctx) => { const k = knorm.compress(ctx); if (k) ctx.kvCache.layers[ctx.layer].keep(k); return composed.compress(ctx); } };
  assert.throws(() => m.forward(tokens, m.newCache(), { press: both, logits: 'none' }), /exactly the \d+ prompt tokens/);
});

/** GELU with erf(z) = 2/√π ∫₀^z e^(−u²) du by Simpson's rule (4000 intervals: error far below 1e-9). */
function geluSeries(x: number): number {
  const z = x / Math.SQRT2, n = 4000, h = z / n;
  let sum = 1 + Math.exp(-z * z);
  for (let i = 1; i < n; i++) sum += (i % 2 ? 4 : 2) * Math.exp(-((i * h) ** 2));
  return 0.5 * x * (1 + ((2 / Math.sqrt(Math.PI)) * sum * h) / 3);
}

/** A random surrogate of the model's shape. */
function randomSurrogate(m: Model, type: 'linear' | 'mlp', seed: number): KVzipSurrogate {
  let s = seed;
  const r = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5);
  const c = m.config, D = c.hiddenSize, H = c.numKvHeads, W = 5;
  const layers = Array.from({ length: c.numLayers }, () => type === 'linear'
    ? { w1: Float32Array.from({ length: H * D }, r), b1: Float32Array.from({ length: H }, r) }
    : { w1: Float32Array.from({ length: W * D }, r), b1: Float32Array.from({ length: W }, r), w2: Float32Array.from({ length: H * W }, r), b2: Float32Array.from({ length: H }, r) });
  return { type, hiddenSize: D, numKvHeads: H, width: type === 'mlp' ? W : 0, layers, model: 'test', tokens: 0 };
}

test('KVzap scores are the surrogate of the attention-input hidden states, read back from its file', async () => {
  const m = await model(), tokens = m.tokenizer!.encode(PROMPT, { bos: true }), c = m.config, D = c.hiddenSize;
  const hidden: Float32Array[] = [];
  m.forward(tokens, m.newCache(), { press: { compress: (ctx) => void (hidden[ctx.layer] = ctx.hidden.slice()) }, logits: 'none' });
  const dir = mkdtempSync(join(tmpdir(), 'kvzap-'));
  try {
    for (const type of ['linear', 'mlp'] as const) {
      const s = randomSurrogate(m, type, 7), file = join(dir, `${type}.safetensors`);
      writeSurrogate(file, s);
      const press = new KVzapPress(0.5, { surrogate: file, modelType: type });
      press.validate(m);
      const { scores, kept } = runPress(m, press, tokens);
      s.layers.forEach((p, l) => {
        for (let g = 0; g < c.numKvHeads; g++) {
          const want = tokens.map((_, t) => {
            const h = hidden[l].subarray(t * D, (t + 1) * D);
            if (type === 'linear') return p.b1[g] + h.reduce((a, x, i) => a + x * p.w1[g * D + i], 0);
            let y = p.b2![g];
            for (let j = 0; j < s.width; j++) y += p.w2![g * s.width + j] * geluSeries(p.b1[j] + h.reduce((a, x, i) => a + x * p.w1[j * D + i], 0));
            return y;
          });
          want.forEach((x, t) => assert.ok(Math.abs(scores[l][g][t] - x) <= 1e-5 * (1 + Math.abs(x)), `${type} L${l} h${g} t${t}: ${scores[l][g][t]} vs ${x}`));
          const top = want.map((x, t) => ({ x, t })).sort((a, b) => b.x - a.x || a.t - b.t).slice(0, Math.floor(tokens.length / 2)).map((e) => e.t).sort((a, b) => a - b);
          assert.deepEqual(kept[l][g], top, `${type} L${l} h${g}`);
        }
      });
      assert.throws(() => new KVzapPress(0.5, { surrogate: file, modelType: type === 'mlp' ? 'linear' : 'mlp' }).validate(m), /is a (linear|mlp) surrogate/);
    }
    writeFileSync(join(dir, 'bad.safetensors'), 'nonsense');
    assert.throws(() => new KVzapPress(0.5, { surrogate: join(dir, 'bad.safetensors') }).validate(m), /KVzapPress: /);
    assert.throws(() => createPress('kvzap', 0.5), /needs a surrogate/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('KVzap training: targets are log KVzip+ scores, the linear fit solves its normal equations, the MLP beats the mean', async () => {
  const m = await model(), tokens = m.tokenizer!.encode(PROMPT, { bos: true }), c = m.config, D = c.hiddenSize, H = c.numKvHeads;
  const data = collectSurrogateData(m, [tokens]);
  const { scores } = runPress(m, new KVzipPress(0, { kvzipPlusNormalization: true }), tokens);
  data.forEach((d, l) => d.y.forEach((y, t) => y.forEach((v, g) => assert.ok(Math.abs(v - Math.log(scores[l][g][t])) < 1e-4, `L${l} t${t} h${g}`))));
  const ridge = 1e-3, lin = trainSurrogate(data, D, H, 'test', { type: 'linear', ridge });
  data.forEach((d, l) => {
    // Gradient of the ridge objective: Xᵀ(Xw + b − y) + λw = 0 and Σ(Xw + b − y) = 0.
    let trace = 0;
    for (const x of d.x) for (const v of x) trace += v * v;
    const lambda = (ridge * trace) / D, p = lin.layers[l];
    for (let g = 0; g < H; g++) {
      const res = d.x.map((x, s) => p.b1[g] + x.reduce((a, v, i) => a + v * p.w1[g * D + i], 0) - d.y[s][g]);
      assert.ok(Math.abs(res.reduce((a, b) => a + b, 0)) < 1e-3 * d.n, `L${l} h${g} bias`);
      for (let i = 0; i < D; i++) {
        const grad = d.x.reduce((a, x, s) => a + x[i] * res[s], 0) + lambda * p.w1[g * D + i];
        assert.ok(Math.abs(grad) < 1e-3 * d.n, `L${l} h${g} w${i}: gradient ${grad}`);
      }
    }
  });
  const mlp = trainSurrogate(data, D, H, 'test', { type: 'mlp', width: 8, epochs: 60 });
  data.forEach((d, l) => {
    let base = 0;
    for (let g = 0; g < H; g++) {
      const mean = d.y.reduce((a, y) => a + y[g], 0) / d.n;
      base += d.y.reduce((a, y) => a + (y[g] - mean) ** 2, 0);
    }
    assert.ok(surrogateLoss(mlp, l, d) < base / (d.n * H), `L${l}: MLP loss ${surrogateLoss(mlp, l, d)} not below the mean's ${base / (d.n * H)}`);
  });
});

test('kvpress calibrate kvzap writes a surrogate that dms_kvzap thresholds', async () => {
  const m = await model(), dir = mkdtempSync(join(tmpdir(), 'kvzap-cli-'));
  try {
    const text = join(dir, 'text.txt'), out = join(dir, 's.safetensors');
    writeFileSync(text, `${PROMPT} ${PROMPT}`);
    const r = await runCli(['calibrate', 'kvzap', '--input', text, '--output', out, '--type', 'linear', '--seq-len', '40']);
    assert.equal(r.code, 0, r.stderr);
    const s = readSurrogate(out, m.config.numLayers, m.config.hiddenSize, m.config.numKvHeads);
    assert.equal(s.type, 'linear');
    const threshold = -5, press = createPress('dms_kvzap', 0, { surrogate: out, modelType: 'linear', threshold, slidingWindowSize: 4 });
    const tokens = m.tokenizer!.encode(PROMPT, { bos: true }), scores: Float64Array[][] = [];
    press.observer = { onScores: (l, x) => { scores[l] = x.map((v) => Float64Array.from(v)); } };
    const { cache } = prefill(m, tokens, { press, logits: 'none' });
    cache.layers.forEach((l, li) => {
      for (let g = 0; g < l.numKvHeads; g++) {
        const want = tokens.map((_, t) => t).filter((t) => t >= tokens.length - 4 || !(scores[li][g][t] < threshold));
        assert.deepEqual(Array.from(l.headPositions(g)), want, `L${li} h${g}`);
      }
    });
    const bad = await runCli(['calibrate', 'kvzap', '--input', text, '--output', out, '--type', 'cubic']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--type must be linear or mlp/);
    const stray = await runCli(['calibrate', '--input', text, '--output', join(dir, 'x.json'), '--width', '3']);
    assert.match(stray.stderr, /--width belongs to `kvpress calibrate kvzap`/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
