import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { writeShapeGguf } from '../bench/llama-cpp.js';
import { matrixBytesOf, writeLlama2c } from '../bench/weight-memory.js';
import { toBf16 } from '../src/backend/js/kernels.js';
import type { ModelConfig } from '../src/model/config.js';
import { loadModel } from '../src/model/load.js';
import { loadGguf } from '../src/model/loaders/gguf-model.js';
import { loadLlama2c } from '../src/model/loaders/llama2c.js';
import { SafetensorsFile, writeSafetensors } from '../src/model/loaders/safetensors.js';
import type { ModelWeights, Weight } from '../src/model/weights.js';

// A tiny untied model: 2 layers, grouped-query attention, vocabulary of 300.
const dims = { hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8, vocabSize: 300 };
const config: ModelConfig = {
  architecture: 'llama', ...dims, maxPositionEmbeddings: 16, rmsNormEps: 1e-5, ropeTheta: 10000,
  ropeScaling: null, tieWordEmbeddings: false, attentionBias: false, qkNorm: false,
};
const dir = mkdtempSync(join(tmpdir(), 'kvpress-bf16-load-'));
// Values of every matrix: embedding and output 300×32 each, per layer q 32·32, k and v 16·32, o 32·32, three FFN 48·32.
const VALUES = 2 * 300 * 32 + 2 * (32 * 32 + 2 * 16 * 32 + 32 * 32 + 3 * 48 * 32);

function matrices(w: ModelWeights): Weight[] {
  return [w.embedding, w.lmHead, ...w.layers.flatMap((l) => [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown])];
}

/** bf16 bits of a loaded matrix; throws if it is not bf16. */
function bits(w: Weight): Uint16Array {
  assert.ok(!(w instanceof Float32Array) && w.type === 'bf16', 'a bf16 matrix');
  return w.data as Uint16Array;
}

describe('bf16 conversion at load', () => {
  const ckpt = join(dir, 'model.bin');
  writeLlama2c(ckpt, config, 3);

  it('llama2.c: every matrix is held once, in the bytes of its format', () => {
    const f32 = loadLlama2c(ckpt), bf16 = loadLlama2c(ckpt, 'bf16');
    assert.equal(matrixBytesOf(f32.weights), 4 * VALUES);
    assert.equal(matrixBytesOf(bf16.weights), 2 * VALUES);
    const a = matrices(f32.weights), b = matrices(bf16.weights);
    // Converting as read gives the bits of converting after (round to nearest even), q/k rows reordered alike.
    a.forEach((m, i) => assert.deepEqual(bits(b[i]), toBf16(m as Float32Array), `matrix ${i}`));
  });

  it('loadModel with weights bf16 keeps the loader\'s matrices (no second conversion)', async () => {
    const m = await loadModel(ckpt, { weights: 'bf16' });
    assert.equal(m.weightsType, 'bf16');
    assert.equal(matrixBytesOf(m.weights), 2 * VALUES);
  });

  it('llama2.c bf16: a NaN is still named with its layer', () => {
    const bad = join(dir, 'nan.bin');
    const buf = readFileSync(ckpt);
    // w2 of layer 1, element 5: after the header, embedding, norms, q, k, v, o, ffn norms, w1 and layer 0 of w2.
    const at = 28 + 4 * (300 * 32 + 2 * 32 + 2 * (32 * 32 + 2 * 16 * 32 + 32 * 32) + 2 * 32 + 2 * 48 * 32 + 32 * 48 + 5);
    buf.writeFloatLE(NaN, at);
    writeFileSync(bad, buf);
    assert.throws(() => loadLlama2c(bad, 'bf16'), /tensor w2 holds NaN \(layer 1, element 5\)/);
    assert.throws(() => loadLlama2c(bad), /tensor w2 holds NaN \(layer 1, element 5\)/);
  });

  it('GGUF: f32 matrices converted layer by layer give the bits of converting after', () => {
    const path = join(dir, 'model.gguf');
    writeShapeGguf(path, dims, 'f32');
    const f32 = loadGguf(path), bf16 = loadGguf(path, 'bf16');
    const a = matrices(f32.weights), b = matrices(bf16.weights);
    a.forEach((m, i) => assert.deepEqual(bits(b[i]), toBf16(m as Float32Array), `matrix ${i}`));
    assert.equal(b[0], b[1], 'tied embeddings stay one matrix');
  });

  it('safetensors: F32 and F16 tensors read as bf16 give the bits of rounding their f32 values', () => {
    const path = join(dir, 'm.safetensors');
    // 70,000 values: more than one read chunk; extremes that round up, down and to even.
    const data = Float32Array.from({ length: 70000 }, (_, i) => Math.sin(i) * 10 ** ((i % 9) - 4));
    data[0] = 65504; data[1] = -1.00390625; data[2] = 1.01171875;
    writeSafetensors(path, { a: { dtype: 'F32', shape: [70000], data }, b: { dtype: 'F16', shape: [700, 100], data } });
    const f = SafetensorsFile.open(path);
    try {
      assert.deepEqual(f.readAsBf16('a'), toBf16(f.read('a')));
      assert.deepEqual(f.readAsBf16('b'), toBf16(f.read('b')));
    } finally {
      f.close();
    }
  });
});
