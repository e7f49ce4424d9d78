import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { FloatDtype } from '../src/model/loaders/safetensors.js';
import { loadModel } from '../src/model/load.js';
import { randomWeights, tempDir, tinyConfig, writeHfDirectory } from './fixtures/tiny-models.js';

test('kvDtype auto follows a Hugging Face checkpoint\'s own precision (BF16 → bf16, F16 → f16, F32 → f32)', async () => {
  const root = tempDir('kv-precision');
  try {
    const c = tinyConfig();
    const w = randomWeights(c, 3);
    const cases: [FloatDtype, number | undefined, string][] = [['BF16', undefined, 'bf16'], ['BF16', 2, 'bf16'], ['F16', undefined, 'f16'], ['F32', undefined, 'f32']];
    for (const [dtype, shards, want] of cases) {
      const dir = writeHfDirectory(join(root, `${dtype}-${shards ?? 1}`), c, w, { dtype, shards });
      const m = await loadModel(dir);
      assert.equal(m.precision, want, `${dtype}: precision`);
      assert.equal(m.kvDtype, want, `${dtype}: auto KV type`);
      assert.equal(m.newCache().dtype, want, `${dtype}: the cache newCache() makes`);
      // An explicit type still wins, and weights converted at load do not change the checkpoint's precision.
      assert.equal((await loadModel(dir, { kvDtype: 'q8_0' })).kvDtype, 'q8_0');
      assert.equal((await loadModel(dir, { weights: 'f32' })).kvDtype, want);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
