import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadModel, packageRoot } from '../src/model/load.js';
import { Pipeline, PipelineError } from '../src/pipeline/pipeline.js';
import { createPress, FinchPress, prefill, PressError } from '../src/presses/index.js';

// FinchPress's scores and kept sets are checked against kvpress in golden.test.ts; here: its
// place in the pipeline (question tokens appended, answers after the re-rotated context), the
// chunked selection and the positions, each against a derivation written here.

const model = await loadModel();
const tok = model.tokenizer!;
const context = readFileSync(join(packageRoot(), 'examples/story.txt'), 'utf8').slice(0, 400);
const question = 'What did Lily do in the park?';

function argmax(x: Float32Array): number {
  let b = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[b]) b = i;
  return b;
}

test('finch in the pipeline: context then question tokens prefilled together, answer after the kept entries', () => {
  const r = new Pipeline(model).run({ context, question, press: new FinchPress(0.5), maxNewTokens: 8 });
  // The same by hand: the question tokenized apart (kvpress's delimiter splits it), window = its length.
  const ctxIds = tok.encode(context, { bos: true }), q = tok.encode(question, { bos: false });
  const { cache } = prefill(model, [...ctxIds, ...q], { press: new FinchPress(0.5, { windowSize: q.length }), logits: 'none' });
  const n = Math.floor((ctxIds.length + q.length) * 0.5);
  for (const l of cache.lengths()) assert.deepEqual(l, l.map(() => n));
  assert.equal(cache.nextPosition, n, 're-rotated: the next token goes right after the kept entries');
  assert.equal(r.stats.contextTokens, ctxIds.length + q.length);
  assert.deepEqual(r.stats.keptPerLayer, cache.lengths().map((l) => l[0]));
  let logits = model.forward(tok.encode('\n', { bos: false }), cache, { logits: 'last' });
  const ids: number[] = [];
  for (let i = 0; i < 8; i++) {
    const next = argmax(logits);
    if (tok.stopIds.includes(next)) break;
    ids.push(next);
    logits = model.forward([next], cache, { logits: 'last' });
  }
  assert.deepEqual(r.answerIds[0], ids);
});

test('finch: chunked selection and positions, against the observed scores', () => {
  const ctxIds = tok.encode(context, { bos: true }), q = tok.encode(question, { bos: false }), T = ctxIds.length + q.length;
  for (const [chunkLength, rerotateKeys] of [[40, false], [0, false], [40, true]] as const) {
    const press = new FinchPress(0.5, { windowSize: q.length, chunkLength, rerotateKeys });
    const scores: Float64Array[][] = [];
    press.observer = { onScores: (l, s) => { scores[l] = s.map((x) => Float64Array.from(x)); } };
    const { cache } = prefill(model, [...ctxIds, ...q], { press, logits: 'none' });
    assert.equal(cache.nextPosition, rerotateKeys ? cache.layers[0].lengths[0] : T);
    cache.layers.forEach((layer, li) => {
      for (let g = 0; g < model.config.numKvHeads; g++) {
        const s = scores[li][g];
        assert.equal(s.length, T);
        // The question is always kept: its entries score above every context entry.
        for (let t = T - q.length; t < T; t++) assert.ok(s[t] > Math.max(...s.subarray(0, T - q.length)));
        const want: number[] = [];
        for (let a = 0; a < T; a += chunkLength || T) {
          const idx = [...Array(Math.min(a + (chunkLength || T), T) - a).keys()].map((i) => a + i);
          const k = chunkLength ? Math.max(1, Math.floor(idx.length * 0.5)) : Math.floor(T * 0.5);
          want.push(...idx.sort((x, y) => s[y] - s[x] || x - y).slice(0, k));
        }
        want.sort((x, y) => x - y);
        const got = Array.from(layer.headPositions(g));
        if (rerotateKeys) assert.deepEqual(got, want.map((_, i) => i));
        else assert.deepEqual(got, want, `chunk ${chunkLength} L${li} h${g}`);
      }
    });
  }
});

test('finch refuses to run without a question, in one line', () => {
  const p = new Pipeline(model);
  assert.throws(() => p.run({ context, press: new FinchPress(0.5) }), PipelineError);
  assert.throws(() => p.compress(context, { press: new FinchPress(0.5) }), /with its question/);
  assert.throws(() => prefill(model, tok.encode(context, { bos: true }), { press: createPress('finch', 0.5) }), PressError);
  assert.throws(() => prefill(model, [1, 2, 3], { press: new FinchPress(0.5, { windowSize: 3 }) }), /longer than the question/);
  assert.throws(() => prefill(model, tok.encode(context, { bos: true }), { press: new FinchPress(0.5, { windowSize: 5, chunkLength: 8 }) }), /chunkLength 8 must exceed/);
});
