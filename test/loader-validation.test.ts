import assert from 'node:assert/strict';
import { appendFileSync, copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { loadLlama2c } from '../src/model/loaders/llama2c.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import { Sampler } from '../src/pipeline/sampler.js';
import { randomWeights, tempDir, tinyConfig, writeHfDirectory, writeLlama2c } from './fixtures/tiny-models.js';

const c = tinyConfig();

test('a llama2.c checkpoint with NaN or Inf weights is rejected, naming the tensor and layer', () => {
  const dir = tempDir('nan');
  const w = randomWeights(c, 1);
  (w.layers[1].wDown as Float32Array)[5] = NaN;
  writeLlama2c(join(dir, 'a.bin'), c, w);
  assert.throws(() => loadLlama2c(join(dir, 'a.bin')), /tensor w2 holds NaN \(layer 1, element 5\)/);
  const w2 = randomWeights(c, 1);
  (w2.embedding as Float32Array)[3] = -Infinity;
  writeLlama2c(join(dir, 'b.bin'), c, w2);
  assert.throws(() => loadLlama2c(join(dir, 'b.bin')), /tensor token_embedding_table holds -Infinity \(element 3\)/);
});

test('all-zero embedding or final norm is rejected (every logit would be equal)', () => {
  const dir = tempDir('zero');
  const w = randomWeights(c, 2);
  (w.embedding as Float32Array).fill(0);
  writeLlama2c(join(dir, 'a.bin'), c, w);
  assert.throws(() => loadLlama2c(join(dir, 'a.bin')), /tensor token_embedding_table is all zeros/);
  const w2 = randomWeights(c, 2);
  w2.finalNorm.fill(0);
  writeHfDirectory(join(dir, 'hf'), c, w2);
  return assert.rejects(loadModel(join(dir, 'hf')), /tensor model.norm.weight is all zeros/);
});

test('a safetensors tensor holding Inf is rejected at load, naming it', async () => {
  const dir = tempDir('inf');
  const w = randomWeights(c, 3);
  (w.layers[0].wq as Float32Array)[7] = Infinity;
  writeHfDirectory(join(dir, 'hf'), c, w, { dtype: 'BF16' });
  await assert.rejects(loadModel(join(dir, 'hf')), /tensor model.layers.0.self_attn.q_proj.weight holds Infinity/);
});

test('a llama2.c file with trailing bytes is rejected; the embedded model has none', () => {
  const dir = tempDir('trail');
  const p = join(dir, 'm.bin');
  copyFileSync(join(packageRoot(), 'models/stories260K/stories260K.bin'), p);
  assert.doesNotThrow(() => loadLlama2c(p));
  appendFileSync(p, Buffer.alloc(4));
  assert.throws(() => loadLlama2c(p), /4 bytes more than the header describes/);
  // A header that claims fewer layers than the weights hold disagrees with the size.
  const b = readFileSync(join(packageRoot(), 'models/stories260K/stories260K.bin'));
  b.writeInt32LE(b.readInt32LE(8) - 1, 8);
  writeFileSync(p, b);
  assert.throws(() => loadLlama2c(p), /bytes more than the header describes/);
});

test('non-finite logits stop sampling with a message, greedy or not', () => {
  for (const temperature of [0, 1]) {
    const s = new Sampler(4, { temperature, seed: 1 });
    assert.throws(() => s.sample(Float32Array.of(0, NaN, 1, 2)), /the model produced a non-finite logit \(NaN for token 1\)/);
  }
});
