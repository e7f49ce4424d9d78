/**
 * What bf16 weights cost on stories260K against its f32 weights, on every backend: the largest
 * logit difference, the mean NLL of the reference texts (prompt + greedy continuation, teacher
 * forced, every position), and greedy agreement. Bounds come from bf16's rounding, not from a run:
 * - u = 2^-8 is bf16's unit roundoff: rounding a weight (or an activation, in the native
 *   prefill GEMM) moves each product by at most u relative, so to first order each of the
 *   model's L + 1 product stages on a logit's path (L layers, the head) adds at most 2u
 *   relative to the largest logit: |Δlogit| ≤ 2u·(L + 1)·max|logit|.
 * - log-softmax is 2-Lipschitz in the max norm: |ΔNLL| ≤ 2·max|Δlogit| at every position.
 * - the argmax cannot change where f32's top-1 margin exceeds 2·max|Δlogit|.
 * The figures (README, "Backends and speed") are printed as diagnostics.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Backend } from '../src/backend/backend.js';
import { backendInfo, createBackend } from '../src/backend/index.js';
import { JsBackend } from '../src/backend/js/kernels.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import type { Model } from '../src/model/model.js';

const U = 2 ** -8;

interface Case { prompt: string; promptTokens: number[]; greedyTokens: number[]; meanNllTeacherForced: number }
const cases = (JSON.parse(readFileSync(join(packageRoot(), 'models', 'stories260K', 'reference.json'), 'utf8')) as { cases: Case[] }).cases;

const info = backendInfo({ prefer: 'auto' });
const backends: Backend[] = [new JsBackend()];
for (const name of ['native', 'wasm'] as const) if (info.backends[name].available) backends.push(createBackend({ prefer: name, threads: 1 }));

/** NLL of token `next` under logits row p of [rows][V]. */
function nll(l: Float32Array, p: number, V: number, next: number): number {
  let m = -Infinity;
  for (let j = 0; j < V; j++) m = Math.max(m, l[p * V + j]);
  let s = 0;
  for (let j = 0; j < V; j++) s += Math.exp(l[p * V + j] - m);
  return Math.log(s) + m - l[p * V + next];
}

/** Top-1 index of row p and its margin over the runner-up. */
function top(l: Float32Array, p: number, V: number): { arg: number; margin: number } {
  let a = 0, b = -Infinity;
  for (let j = 1; j < V; j++) {
    const v = l[p * V + j];
    if (v > l[p * V + a]) {
      b = l[p * V + a];
      a = j;
    } else b = Math.max(b, v);
  }
  return { arg: a, margin: l[p * V + a] - b };
}

function greedy(m: Model, prompt: number[], n: number): number[] {
  const cache = m.newCache();
  let l = m.forward(prompt, cache);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = top(l, 0, m.config.vocabSize).arg;
    out.push(t);
    l = m.forward([t], cache);
  }
  return out;
}

for (const b of backends) {
  test(`stories260K on ${b.name}: bf16 weights against f32 — logits, NLL and greedy tokens within bf16's rounding`, async (t) => {
    const f32 = await loadModel(undefined, { backend: b });
    const bf16 = await loadModel(undefined, { backend: b, weights: 'bf16' });
    const V = f32.config.vocabSize, stages = f32.config.numLayers + 1;
    for (const c of cases) {
      const toks = [...c.promptTokens, ...c.greedyTokens];
      const la = f32.forward(toks, f32.newCache(), { logits: 'all' }), lb = bf16.forward(toks, bf16.newCache(), { logits: 'all' });
      let maxDiff = 0, maxAbs = 0;
      for (let i = 0; i < la.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(la[i] - lb[i]));
        maxAbs = Math.max(maxAbs, Math.abs(la[i]));
      }
      const bound = 2 * U * stages * maxAbs;
      assert.ok(maxDiff > 0, 'the bf16 model computed exactly as f32: its weights were not bf16');
      assert.ok(maxDiff <= bound, `${c.prompt}: max |Δlogit| ${maxDiff} > ${bound}`);
      let sumA = 0, sumB = 0, n = 0, flips = 0;
      for (let p = 0; p + 1 < toks.length; p++) {
        const a = nll(la, p, V, toks[p + 1]), bb = nll(lb, p, V, toks[p + 1]);
        assert.ok(Math.abs(a - bb) <= 2 * maxDiff + 1e-6, `position ${p}: |ΔNLL| ${Math.abs(a - bb)} > 2·max|Δlogit|`);
        sumA += a;
        sumB += bb;
        n++;
        const ta = top(la, p, V), tb = top(lb, p, V);
        if (ta.arg !== tb.arg) {
          flips++;
          assert.ok(ta.margin <= 2 * maxDiff, `position ${p}: argmax changed with a margin of ${ta.margin} > 2·${maxDiff}`);
        }
      }
      // The f32 engine reproduces the float64 reference's NLL (to its ~1e-4 logits).
      assert.ok(Math.abs(sumA / n - c.meanNllTeacherForced) < 1e-3, `f32 NLL ${sumA / n} vs reference ${c.meanNllTeacherForced}`);
      // Greedy decoding with bf16 weights: the reference tokens up to the first step where f32's
      // own margin is within the perturbation bound (past it, the two may part ways).
      const got = greedy(bf16, c.promptTokens, c.greedyTokens.length);
      let agreed = 0;
      while (agreed < got.length && got[agreed] === c.greedyTokens[agreed]) agreed++;
      let safe = 0;
      for (let p = c.promptTokens.length - 1; p + 1 < toks.length && top(la, p, V).margin > 2 * bound; p++) safe++;
      assert.ok(agreed >= safe, `${c.prompt}: greedy tokens agree for ${agreed}, the margins guarantee ${safe}`);
      t.diagnostic(`${b.name} "${c.prompt}": max|Δlogit| ${maxDiff.toFixed(4)} (bound ${bound.toFixed(3)}, max|logit| ${maxAbs.toFixed(1)}); ` +
        `mean NLL f32 ${(sumA / n).toFixed(4)} bf16 ${(sumB / n).toFixed(4)}; argmax flips ${flips}/${toks.length - 1}; ` +
        `greedy agreement ${agreed}/${got.length}`);
    }
  });
}
