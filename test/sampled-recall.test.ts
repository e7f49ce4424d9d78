import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { sampledRecallStories } from '../src/eval/datasets/sampled-recall.js';
import { runEval } from '../src/eval/runner.js';
import { loadModel } from '../src/model/load.js';

test('sampled_recall: items are sampled stories cut before a later mention of a name they introduced early', async () => {
  const model = await loadModel();
  const items = sampledRecallStories(model, { count: 4, seed: 7 });
  assert.equal(items.length, 4);
  for (const it of items) {
    assert.ok(it.text.startsWith(`${it.prefix} ${it.answer}`), it.id);
    assert.ok(!/[A-Za-z]/.test(it.text.charAt(it.prefix.length + 1 + it.answer.length)), `${it.id}: the mention is a whole word`);
    assert.ok(it.prefix.length + 1 >= 0.4 * it.text.length, `${it.id}: cut in the first 40 %`);
    const intro = new RegExp(`\\b(named|called)\\s+${it.answer}\\b`).exec(it.text);
    assert.ok(intro && intro.index + intro[0].length <= 0.4 * it.text.length, `${it.id}: ${it.answer} is not introduced early`);
  }
  assert.deepEqual(sampledRecallStories(model, { count: 4, seed: 7 }), items, 'same seed, same items');
  assert.notDeepEqual(sampledRecallStories(model, { count: 4, seed: 8 }).map((i) => i.text), items.map((i) => i.text));
});

test('sampled_recall: scored with the name-recall protocol, with a standard error', async () => {
  const output = mkdtempSync(join(tmpdir(), 'kvpress-sampled-'));
  const summary = await runEval({ dataset: 'sampled_recall', presses: ['knorm'], ratios: [0.5], limit: 6, output });
  assert.equal(summary.ran.length, 2);
  const metrics = JSON.parse(readFileSync(join(output, summary.ran[1].dir, 'metrics.json'), 'utf8')) as { scores: Record<string, number> };
  const { accuracy, accuracy_se } = metrics.scores;
  const p = accuracy / 100;
  assert.ok(Math.abs(accuracy_se - 100 * Math.sqrt((p * (1 - p)) / 6)) < 1e-9);
});
