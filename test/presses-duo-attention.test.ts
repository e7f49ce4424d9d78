import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { LayerContext } from '../src/model/layer-context.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import { calibrateDuoPatterns, createPress, DuoAttentionPress, prefill, PressError, readDuoPatterns, writeDuoPatterns } from '../src/presses/index.js';
import { runCli } from './helpers/cli.js';

const model = await loadModel();
const c = model.config, story = readFileSync(join(packageRoot(), 'examples/story.txt'), 'utf8');
const tokens = model.tokenizer!.encode(story, { bos: true });
const tmp = mkdtempSync(join(tmpdir(), 'kvpress-duo-'));

/**
 * The calibration re-derived another way: pre-RoPE queries and keys recovered from the post-RoPE
 * ones the forward pass produced (rotated back by their positions), and the last query's logits
 * written as a function of the distance δ alone — q·R(−δ)k = Σ_j (q_j k_j + q_j' k_j') cos δθ_j +
 * (q_j k_j' − q_j' k_j) sin δθ_j, j' = j + d/2 — instead of rotating both vectors.
 */
function independentScores(samples: number[][], length: number, nSink: number): number[][] {
  const d = c.headDim, half = d / 2, H = c.numHeads, Hkv = c.numKvHeads, G = H / Hkv;
  const theta = Array.from({ length: half }, (_, j) => c.ropeTheta ** (-(2 * j) / d));
  const unrotate = (x: ArrayLike<number>, o: number, p: number, out: Float64Array, oo: number) => {
    for (let j = 0; j < half; j++) {
      const cs = Math.cos(p * theta[j]), sn = Math.sin(p * theta[j]), a = x[o + j], b = x[o + j + half];
      out[oo + j] += a * cs + b * sn;
      out[oo + j + half] += b * cs - a * sn;
    }
  };
  const qm = Array.from({ length: c.numLayers }, () => new Float64Array(H * d)), km = Array.from({ length: c.numLayers }, () => new Float64Array(Hkv * d));
  let n = 0;
  for (const s of samples) {
    model.forward(s, model.newCache(), {
      logits: 'none',
      press: {
        compress(ctx: LayerContext) {
          for (let r = nSink; r < ctx.rows; r++) for (let h = 0; h < H; h++) unrotate(ctx.queries, (r * H + h) * d, ctx.positions[r], qm[ctx.layer], h * d);
          for (let g = 0; g < Hkv; g++) {
            const K = ctx.cache.headKeys(g);
            for (let r = nSink; r < ctx.rows; r++) unrotate(K, r * d, ctx.positions[r], km[ctx.layer], g * d);
          }
          if (ctx.layer === 0) n += ctx.rows - nSink;
          return null;
        },
      },
    });
  }
  return qm.map((qs, l) => Array.from({ length: Hkv }, (_, g) => {
    let score = 0;
    for (let h = g * G; h < (g + 1) * G; h++) {
      const z = Array.from({ length }, (_, t) => {
        const delta = length - 1 - t;
        let s = 0;
        for (let j = 0; j < half; j++) {
          const qa = qs[h * d + j] / n, qb = qs[h * d + j + half] / n, ka = km[l][g * d + j] / n, kb = km[l][g * d + j + half] / n;
          s += (qa * ka + qb * kb) * Math.cos(delta * theta[j]) + (qa * kb - qb * ka) * Math.sin(delta * theta[j]);
        }
        return s / Math.sqrt(d);
      });
      const mx = Math.max(...z), e = z.map((x) => Math.exp(x - mx)), sum = e.reduce((a, b) => a + b, 0);
      // Mean over t of the cumulative attention Σ_{s≤t} a_s.
      let cum = 0, mean = 0;
      for (let t = 0; t < length; t++) { cum += e[t] / sum; mean += cum / length; }
      score += mean / G;
    }
    return score;
  }));
}

test('DuoAttention calibration equals an independent derivation of the head scores', () => {
  const samples = [tokens.slice(0, 200), [tokens[0], ...tokens.slice(200, 399)]];
  for (const length of [500, 64]) {
    const p = calibrateDuoPatterns(model, samples, { length, nSink: 4, sinkSize: 8, recentSize: 32 });
    const want = independentScores(samples, length, 4);
    assert.equal(p.sinkSize, 8);
    assert.equal(p.recentSize, 32);
    p.scores.forEach((row, l) => row.forEach((s, g) => assert.ok(Math.abs(s - want[l][g]) <= 1e-4 * want[l][g] + 1e-7, `length ${length} L${l} h${g}: ${s} vs ${want[l][g]}`)));
    // The heads differ: the scores rank them.
    assert.ok(new Set(p.scores.flat().map((x) => x.toPrecision(4))).size > 10);
  }
});

test('DuoAttention: the lowest round(L·H·ratio) heads keep only sinks and the recent window, and free the rest', () => {
  const scores = [[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.05, 0.7], [0.6, 0.4, 0.35, 0.95], [0.15, 0.45, 0.55, 0.65], [0.25, 0.75, 0.85, 0.5]];
  const dir = join(tmp, 'pattern');
  writeDuoPatterns(dir, { sinkSize: 4, recentSize: 16, scores });
  const flat = scores.flat().map((s, i) => ({ s, i })).sort((a, b) => a.s - b.s);
  const T = 120, ids = tokens.slice(0, T), plain = prefill(model, ids, { logits: 'none' }).cache;
  for (const ratio of [0.25, 0.5, 0.125]) {
    const n = ratio === 0.125 ? 2 : Math.round(20 * ratio); // round(2.5) = 2 (half to even)
    const streaming = new Set(flat.slice(0, n).map((x) => x.i));
    const press = createPress('duo_attention', ratio, { patterns: dir });
    const { cache } = prefill(model, ids, { press, logits: 'none' });
    cache.layers.forEach((l, li) => {
      for (let g = 0; g < c.numKvHeads; g++) {
        const want = streaming.has(li * 4 + g) ? [...Array(4).keys(), ...Array.from({ length: 16 }, (_, i) => T - 16 + i)] : [...Array(T).keys()];
        assert.deepEqual(Array.from(l.headPositions(g)), want, `ratio ${ratio} L${li} h${g}`);
      }
    });
    assert.ok(Math.abs(press.compressionRatio - (n / 20) * (1 - 20 / T)) < 1e-12);
    assert.ok(cache.allocatedBytes() < plain.allocatedBytes());
  }
  // Prompts no longer than sink + recent are left alone.
  const short = prefill(model, tokens.slice(0, 20), { press: createPress('duo_attention', 0.5, { patterns: dir }), logits: 'none' }).cache;
  for (const l of short.lengths()) assert.deepEqual(l, [20, 20, 20, 20]);
});

test('DuoAttention patterns in the authors\' layout load (extra keys, clipping), and bad ones are one-line errors', () => {
  const dir = join(tmp, 'authors');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ sink_size: 64, recent_size: 256, model: 'x', reg_weight: 0.05 }));
  writeFileSync(join(dir, 'full_attention_heads.tsv'), '1.2\t-0.1\t0.5\t0.25\n'.repeat(5));
  const p = readDuoPatterns(dir);
  assert.deepEqual(p.scores[0], [1, 0, 0.5, 0.25]);
  assert.equal(p.sinkSize, 64);
  new DuoAttentionPress(p).validate(model);
  writeFileSync(join(dir, 'full_attention_heads.tsv'), '0.5\t0.5\n0.5\t0.5\n');
  assert.throws(() => prefill(model, tokens.slice(0, 8), { press: createPress('duo_attention', 0.5, { patterns: dir }) }), (e: Error) => e instanceof PressError && /2×2.*5×4/.test(e.message));
  writeFileSync(join(dir, 'full_attention_heads.tsv'), '0.5\tabc\n');
  assert.throws(() => readDuoPatterns(dir), /line 1: "abc" is not a number/);
  writeFileSync(join(dir, 'config.json'), '{"sink_size": 4}');
  assert.throws(() => readDuoPatterns(dir), /recent_size/);
  assert.throws(() => readDuoPatterns(join(tmp, 'none')), /cannot read/);
  assert.throws(() => createPress('duo_attention', 0.5), /patterns=DIR/);
});

test('kvpress calibrate --duo-patterns writes patterns that duo_attention loads', async () => {
  const dir = join(tmp, 'cli');
  const r = await runCli(['calibrate', '--input', join(packageRoot(), 'examples/story.txt'), '--duo-patterns', dir, '--duo-sink', '4', '--duo-recent', '32', '--duo-length', '100', '--max-samples', '1']);
  assert.equal(r.code, 0, r.stderr);
  const p = readDuoPatterns(dir), cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  assert.deepEqual([p.sinkSize, p.recentSize, cfg.length], [4, 32, 100]);
  assert.equal(p.scores.length, c.numLayers);
  const s = await runCli(['scores', '--prompt', story.slice(0, 400), '--press', 'duo_attention', '--ratio', '0.5', '--press-option', `patterns=${dir}`, '--json']);
  assert.equal(s.code, 0, s.stderr);
  const layers = JSON.parse(s.stdout).layers as { kept: number[][] }[];
  assert.equal(layers.flatMap((l) => l.kept).filter((k) => k.length === 36).length, 10);
  const bad = await runCli(['calibrate', '--input', join(packageRoot(), 'examples/story.txt'), '--duo-sink', '-1', '--duo-patterns', dir]);
  assert.equal(bad.code, 2);
});
