import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadModel } from '../src/model/load.js';

// A press's keep indices are checked as given: NaN, fractions, strings and huge numbers are
// refused (an Int32Array would have made them 0, 0, 2 and a wrapped index), and the cache is
// left as it was before the pass.
test('keep indices that are not integers in range are refused and the cache is unchanged', async () => {
  const model = await loadModel();
  const ids = model.tokenizer!.encode('Once upon a time, there was a little girl.', { bos: true });
  const bad: unknown[] = [Number.NaN, 0.5, '2', 1e10, -1, ids.length];
  for (const b of bad) {
    const cache = model.newCache();
    model.forward(ids.slice(0, 4), cache, { logits: 'none' });
    const before = JSON.stringify({ lengths: cache.lengths(), next: cache.nextPosition, bytes: cache.bytes() });
    const press = { compress: () => Array.from({ length: model.config.numKvHeads }, () => [1, b] as unknown as number[]) };
    assert.throws(() => model.forward(ids.slice(4), cache, { logits: 'none', press }), (e: Error) => /keep: head 0 index .* is not an integer in/.test(e.message) && !e.message.includes('\n'), String(b));
    assert.equal(JSON.stringify({ lengths: cache.lengths(), next: cache.nextPosition, bytes: cache.bytes() }), before, String(b));
  }
});
