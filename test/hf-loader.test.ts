import assert from 'node:assert/strict';
import { readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { ModelConfig } from '../src/model/config.js';
import { parseHfConfig } from '../src/model/loaders/hf-config.js';
import { loadHfDirectory } from '../src/model/loaders/hf-dir.js';
import { loadLlama2c } from '../src/model/loaders/llama2c.js';
import { readSafetensors, SafetensorsFile, writeSafetensors, type FloatDtype } from '../src/model/loaders/safetensors.js';
import { Model } from '../src/model/model.js';
import { toWeightType, type ModelWeights, type Weight } from '../src/model/weights.js';

/** A matrix widened to f32 (exact), for the float64 reference. */
function asF32(w: Weight): Float32Array {
  return toWeightType(w, 'f32', 0, 0) as Float32Array;
}
import { loadHfTokenizer } from '../src/tokenizer/hf.js';
import type { Tokenizer } from '../src/tokenizer/tokenizer.js';
import {
  hfTensors, mulberry32, randomWeights, tempDir, tinyConfig, TINY_CHAT_TEMPLATE,
  writeHfDirectory, writeLlama2c, writeTokenizerFiles,
} from './fixtures/tiny-models.js';

const root = tempDir('hf-loader');
after(() => rmSync(root, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = (name: string) => join(root, `${dirCount++}-${name}`);

/** Asserts a one-line error whose message contains every fragment (the file name among them). */
function assertOneLine(err: unknown, ...fragments: string[]): true {
  assert.ok(err instanceof Error, 'expected an Error');
  assert.ok(!err.message.includes('\n'), `multi-line error: ${err.message}`);
  for (const f of fragments) assert.ok(err.message.includes(f), `error "${err.message}" lacks "${f}"`);
  return true;
}

const throwsOneLine = (fn: () => unknown, ...fragments: string[]) => assert.throws(fn, (e) => assertOneLine(e, ...fragments));
const rejectsOneLine = (p: Promise<unknown>, ...fragments: string[]) => assert.rejects(p, (e) => assertOneLine(e, ...fragments));

/** A safetensors file with a hand-written header (possibly lying) and `dataBytes` zero bytes. */
function rawSafetensors(path: string, header: unknown, dataBytes: number, lengthField?: bigint): void {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthField ?? BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, Buffer.alloc(dataBytes)]));
}

// ---------------------------------------------------------------------------------------------
// Float64 reference forward pass, written from the Hugging Face modeling code independently of
// the engine: no shared kernels, no shared RoPE tables.

/** HF `_compute_default/linear/llama3_parameters`: θ_j for j < headDim/2. */
function referenceInvFreq(c: ModelConfig): number[] {
  const half = c.headDim / 2;
  const base = Array.from({ length: half }, (_, j) => 1 / c.ropeTheta ** ((2 * j) / c.headDim));
  const s = c.ropeScaling;
  if (s === null) return base;
  if (s.type === 'linear') return base.map((f) => f / s.factor);
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  return base.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / s.factor;
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * (f / s.factor) + smooth * f;
  });
}

/** Logits [T][vocab] in float64 for `tokens` at positions 0…T−1. */
function referenceLogits(c: ModelConfig, w: ModelWeights, tokens: number[]): number[][] {
  const D = c.hiddenSize, hd = c.headDim, H = c.numHeads, KV = c.numKvHeads, half = hd / 2;
  const rmsnorm = (x: number[], g: ArrayLike<number>): number[] => {
    const ms = x.reduce((a, v) => a + v * v, 0) / x.length;
    const inv = 1 / Math.sqrt(ms + c.rmsNormEps);
    return x.map((v, i) => g[i] * v * inv);
  };
  const linear = (x: number[], M: Weight, outDim: number, b: ArrayLike<number> | null = null): number[] => {
    const W = asF32(M);
    return Array.from({ length: outDim }, (_, o) => {
      let s = b ? b[o] : 0;
      for (let i = 0; i < x.length; i++) s += W[o * x.length + i] * x[i];
      return s;
    });
  };
  const heads = (v: number[], n: number) => Array.from({ length: n }, (_, h) => v.slice(h * hd, (h + 1) * hd));
  const invFreq = referenceInvFreq(c);
  const rope = (x: number[], pos: number): number[] => {
    const out = x.slice();
    for (let j = 0; j < half; j++) {
      const a = pos * invFreq[j], cs = Math.cos(a), sn = Math.sin(a);
      out[j] = x[j] * cs - x[j + half] * sn;
      out[j + half] = x[j + half] * cs + x[j] * sn;
    }
    return out;
  };
  const silu = (v: number) => v / (1 + Math.exp(-v));

  let xs = tokens.map((t) => Array.from(asF32(w.embedding).subarray(t * D, (t + 1) * D)));
  for (const l of w.layers) {
    const qs: number[][][] = [], ks: number[][][] = [], vs: number[][][] = [];
    xs.forEach((x, pos) => {
      const h = rmsnorm(x, l.attnNorm);
      let q = heads(linear(h, l.wq, H * hd, l.bq), H);
      let k = heads(linear(h, l.wk, KV * hd, l.bk), KV);
      if (l.qNorm && l.kNorm) {
        q = q.map((v) => rmsnorm(v, l.qNorm!));
        k = k.map((v) => rmsnorm(v, l.kNorm!));
      }
      qs.push(q.map((v) => rope(v, pos)));
      ks.push(k.map((v) => rope(v, pos)));
      vs.push(heads(linear(h, l.wv, KV * hd, l.bv), KV));
    });
    xs = xs.map((x, t) => {
      const attn: number[] = [];
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / KV));
        const scores = Array.from({ length: t + 1 }, (_, u) => qs[t][h].reduce((a, v, i) => a + v * ks[u][g][i], 0) / Math.sqrt(hd));
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let i = 0; i < hd; i++) attn.push(e.reduce((a, p, u) => a + (p / z) * vs[u][g][i], 0));
      }
      const o = linear(attn, l.wo, D);
      const x1 = x.map((v, i) => v + o[i]);
      const h2 = rmsnorm(x1, l.ffnNorm);
      const gate = linear(h2, l.wGate, c.intermediateSize), up = linear(h2, l.wUp, c.intermediateSize);
      const down = linear(gate.map((g, i) => silu(g) * up[i]), l.wDown, D);
      return x1.map((v, i) => v + down[i]);
    });
  }
  return xs.map((x) => linear(rmsnorm(x, w.finalNorm), w.lmHead, c.vocabSize));
}

function engineLogits(config: ModelConfig, weights: ModelWeights, tokens: number[]): Float32Array {
  const model = new Model(config, weights);
  return model.forward(tokens, model.newCache(), { logits: 'all' });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** max |engine − reference| relative to max |reference|. */
function relativeError(engine: Float32Array, ref: number[][]): number {
  const flat = ref.flat();
  return maxAbsDiff(engine, flat) / Math.max(...flat.map(Math.abs));
}

const TOKENS = [1, 5, 9, 33, 2, 63, 17, 40, 8, 21, 12, 7];

// ---------------------------------------------------------------------------------------------

describe('safetensors', () => {
  test('round trip per dtype is exact for representable values', () => {
    const rand = mulberry32(7);
    // ≤ 8 significant bits, within half's normal range: exact in F32, F16 and BF16.
    const data = Float32Array.from({ length: 6 * 5 }, () => (Math.floor(rand() * 255) - 127) / 64);
    for (const dtype of ['F32', 'F16', 'BF16'] as FloatDtype[]) {
      const path = join(root, `rt-${dtype}.safetensors`);
      writeSafetensors(path, { a: { dtype, shape: [6, 5], data }, b: { dtype, shape: [], data: Float32Array.of(-2.5) } }, { format: 'pt' });
      const bytes = readFileSync(path);
      const headerLen = Number(bytes.readBigUInt64LE(0));
      assert.equal((8 + headerLen) % 8, 0, 'data section is 8-byte aligned');
      assert.equal(bytes.length, 8 + headerLen + 31 * (dtype === 'F32' ? 4 : 2));
      const { tensors, metadata } = readSafetensors(path);
      assert.deepEqual(metadata, { format: 'pt' });
      assert.deepEqual(Object.keys(tensors), ['a', 'b']);
      assert.equal(tensors.a.dtype, dtype);
      assert.deepEqual(tensors.a.shape, [6, 5]);
      assert.deepEqual(Array.from(tensors.a.data), Array.from(data));
      assert.deepEqual(Array.from(tensors.b.data), [-2.5]);
    }
  });

  test('conversion rounds to nearest even (hand-computed values)', () => {
    const path = join(root, 'rounding.safetensors');
    const x = Float32Array.of(1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 2 ** -25, 3 * 2 ** -26, -0.1, 1e9, 2 ** -24);
    writeSafetensors(path, { h: { dtype: 'F16', shape: [8], data: x }, b: { dtype: 'BF16', shape: [8], data: x } });
    const { tensors } = readSafetensors(path);
    // F16: ties go to the even mantissa; 65520 is halfway to 65536 = overflow; 2^-25 ties to 0;
    // 1.5·2^-25 rounds to the smallest subnormal 2^-24; -0.1 → -1638/16384.
    assert.deepEqual(Array.from(tensors.h.data), [1, 1 + 2 ** -9, Infinity, 0, 2 ** -24, -1638 / 16384, Infinity, 2 ** -24]);
    // BF16 keeps 8 significant bits: 1 + 2^-11 → 1; 65520 → 65536; -0.1 (0x3DCCCCCD) → -0x3DCD0000.
    const bf = Array.from(tensors.b.data);
    assert.deepEqual(bf.slice(0, 3), [1, 1, 65536]);
    assert.equal(bf[5], -0.10009765625);
    assert.equal(bf[6], 238 * 2 ** 22);
  });

  test('bad files give one-line errors naming the file', () => {
    const missing = join(root, 'nope.safetensors');
    throwsOneLine(() => SafetensorsFile.open(missing), missing, 'ENOENT');

    const tiny = join(root, 'tiny.safetensors');
    writeFileSync(tiny, Buffer.alloc(5));
    throwsOneLine(() => SafetensorsFile.open(tiny), tiny, 'truncated');

    const absurd = join(root, 'absurd.safetensors');
    rawSafetensors(absurd, {}, 16, 1n << 62n);
    throwsOneLine(() => SafetensorsFile.open(absurd), absurd, 'absurd safetensors header length');

    const short = join(root, 'short.safetensors');
    rawSafetensors(short, '{}', 0, 1000n);
    throwsOneLine(() => SafetensorsFile.open(short), short, 'header claims 1000 bytes', 'only 2');

    const json = join(root, 'json.safetensors');
    rawSafetensors(json, '{"a": ', 0);
    throwsOneLine(() => SafetensorsFile.open(json), json, 'not valid JSON');

    const beyond = join(root, 'beyond.safetensors');
    rawSafetensors(beyond, { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8);
    throwsOneLine(() => SafetensorsFile.open(beyond), beyond, 'tensor a', 'exceed the 8 data bytes');

    const mismatch = join(root, 'mismatch.safetensors');
    rawSafetensors(mismatch, { a: { dtype: 'F32', shape: [3], data_offsets: [0, 16] } }, 16);
    throwsOneLine(() => SafetensorsFile.open(mismatch), mismatch, 'tensor a', 'needs 12 bytes', 'span 16');

    const overlap = join(root, 'overlap.safetensors');
    rawSafetensors(overlap, { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, 16);
    throwsOneLine(() => SafetensorsFile.open(overlap), overlap, 'a and b overlap');

    const unknown = join(root, 'unknown.safetensors');
    rawSafetensors(unknown, { a: { dtype: 'Q4', shape: [4], data_offsets: [0, 2] } }, 2);
    throwsOneLine(() => SafetensorsFile.open(unknown), unknown, 'tensor a', 'unknown dtype "Q4"');

    const int64 = join(root, 'int64.safetensors');
    rawSafetensors(int64, { ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, 16);
    const f = SafetensorsFile.open(int64);
    try {
      throwsOneLine(() => f.read('ids'), int64, 'tensor ids', 'dtype I64');
    } finally {
      f.close();
    }
  });
});

describe('config.json', () => {
  const base = { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 64 };

  test('defaults and per-architecture fields', () => {
    const llama = parseHfConfig({ model_type: 'llama', ...base }, 'c.json');
    assert.equal(llama.headDim, 8, 'head_dim defaults to hidden/heads');
    assert.equal(llama.numKvHeads, 4, 'num_key_value_heads defaults to heads');
    assert.equal(llama.ropeTheta, 10000);
    assert.equal(llama.rmsNormEps, 1e-6);
    assert.equal(llama.tieWordEmbeddings, false);
    assert.equal(llama.ropeScaling, null);
    assert.equal(llama.maxPositionEmbeddings, 2048);

    const qwen2 = parseHfConfig({ model_type: 'qwen2', ...base, num_key_value_heads: 2, rope_theta: 1e6, tie_word_embeddings: true }, 'c.json');
    assert.deepEqual([qwen2.attentionBias, qwen2.qkNorm, qwen2.ropeTheta, qwen2.tieWordEmbeddings, qwen2.numKvHeads], [true, false, 1e6, true, 2]);

    const qwen3 = parseHfConfig({ model_type: 'qwen3', ...base, head_dim: 16, attention_bias: false }, 'c.json');
    assert.deepEqual([qwen3.attentionBias, qwen3.qkNorm, qwen3.headDim], [false, true, 16]);

    const mistral = parseHfConfig({ model_type: 'mistral', ...base, sliding_window: 4096, head_dim: null }, 'c.json');
    assert.equal(mistral.headDim, 8);

    assert.deepEqual(parseHfConfig({ model_type: 'llama', ...base, rope_scaling: { type: 'linear', factor: 2 } }, 'c.json').ropeScaling, { type: 'linear', factor: 2 });
    assert.deepEqual(
      parseHfConfig({ model_type: 'llama', ...base, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } }, 'c.json').ropeScaling,
      { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
    );
    assert.equal(parseHfConfig({ model_type: 'llama', ...base, rope_scaling: { rope_type: 'default' } }, 'c.json').ropeScaling, null);
    // transformers v5 layout
    const v5 = parseHfConfig({ model_type: 'llama', ...base, rope_parameters: { rope_type: 'linear', factor: 4, rope_theta: 500000 } }, 'c.json');
    assert.deepEqual([v5.ropeTheta, v5.ropeScaling], [500000, { type: 'linear', factor: 4 }]);
  });

  test('unsupported configs give one-line errors naming the file', () => {
    throwsOneLine(() => parseHfConfig({ model_type: 'gpt2', ...base }, 'x/config.json'), 'x/config.json', 'unsupported architecture "gpt2"');
    throwsOneLine(() => parseHfConfig({ ...base }, 'x/config.json'), 'x/config.json', 'unsupported architecture null');
    throwsOneLine(() => parseHfConfig({ model_type: 'llama', ...base, rope_scaling: { type: 'yarn', factor: 4 } }, 'x/config.json'), 'x/config.json', 'unsupported rope_scaling type "yarn"');
    throwsOneLine(() => parseHfConfig({ model_type: 'llama', ...base, rope_scaling: { rope_type: 'llama3', factor: 8 } }, 'x/config.json'), 'x/config.json', 'low_freq_factor');
    throwsOneLine(() => parseHfConfig({ model_type: 'llama', ...base, hidden_act: 'gelu' }, 'x/config.json'), 'x/config.json', 'hidden_act');
    throwsOneLine(() => parseHfConfig({ model_type: 'llama', ...base, attention_bias: true }, 'x/config.json'), 'x/config.json', 'attention_bias');
    throwsOneLine(() => parseHfConfig({ model_type: 'llama', ...base, intermediate_size: 'big' }, 'x/config.json'), 'x/config.json', 'invalid intermediate_size');
    throwsOneLine(() => parseHfConfig({ model_type: 'llama', ...base, num_key_value_heads: 3 }, 'x/config.json'), 'x/config.json', 'not a multiple');
  });
});

describe('Hugging Face directory: bad input', () => {
  const c = tinyConfig();
  const w = randomWeights(c, 3);

  test('missing directory, config or weights', async () => {
    const missing = join(root, 'no-such-model');
    await rejectsOneLine(loadHfDirectory(missing), missing, 'ENOENT');
    const empty = freshDir('empty');
    writeHfDirectory(empty, c, w);
    rmSync(join(empty, 'config.json'));
    await rejectsOneLine(loadHfDirectory(empty), join(empty, 'config.json'), 'ENOENT');
    const noWeights = freshDir('no-weights');
    writeHfDirectory(noWeights, c, w);
    rmSync(join(noWeights, 'model.safetensors'));
    await rejectsOneLine(loadHfDirectory(noWeights), noWeights, 'no model.safetensors');
  });

  test('truncated model.safetensors', async () => {
    const dir = writeHfDirectory(freshDir('truncated'), c, w);
    const file = join(dir, 'model.safetensors');
    truncateSync(file, statSync(file).size - 10);
    await rejectsOneLine(loadHfDirectory(dir), file, 'exceed the');
    truncateSync(file, 6);
    await rejectsOneLine(loadHfDirectory(dir), file, 'truncated safetensors file');
  });

  test('absurd header length and a header longer than the file', async () => {
    const dir = writeHfDirectory(freshDir('header'), c, w);
    const file = join(dir, 'model.safetensors');
    const bytes = readFileSync(file);
    bytes.writeBigUInt64LE(0xffffffffffffffffn, 0);
    writeFileSync(file, bytes);
    await rejectsOneLine(loadHfDirectory(dir), file, 'absurd');
    bytes.writeBigUInt64LE(BigInt(bytes.length), 0);
    writeFileSync(file, bytes);
    await rejectsOneLine(loadHfDirectory(dir), file, `header claims ${bytes.length} bytes`);
  });

  test('unsupported dtype, unknown architecture, missing tensor, wrong shape', async () => {
    const base = hfTensors(c, w, 'F32');
    const withTensors = (name: string, edit: (t: typeof base) => void) => {
      const dir = writeHfDirectory(freshDir(name), c, w);
      const t = { ...base };
      edit(t);
      writeSafetensors(join(dir, 'model.safetensors'), t);
      return dir;
    };

    const i64 = writeHfDirectory(freshDir('i64'), c, w);
    const embBytes = c.vocabSize * c.hiddenSize * 8;
    rawSafetensors(join(i64, 'model.safetensors'), { 'model.embed_tokens.weight': { dtype: 'I64', shape: [c.vocabSize, c.hiddenSize], data_offsets: [0, embBytes] } }, embBytes);
    await rejectsOneLine(loadHfDirectory(i64), join(i64, 'model.safetensors'), 'model.embed_tokens.weight', 'I64');

    const gpt2 = writeHfDirectory(freshDir('gpt2'), c, w, { configExtra: { model_type: 'gpt2' } });
    await rejectsOneLine(loadHfDirectory(gpt2), join(gpt2, 'config.json'), 'unsupported architecture "gpt2"');

    const noNorm = withTensors('no-norm', (t) => delete t['model.norm.weight']);
    await rejectsOneLine(loadHfDirectory(noNorm), join(noNorm, 'model.safetensors'), 'missing tensor model.norm.weight');

    // An untied config needs lm_head.weight.
    const untied = writeHfDirectory(freshDir('untied'), c, w, { configExtra: { tie_word_embeddings: false } });
    await rejectsOneLine(loadHfDirectory(untied), join(untied, 'model.safetensors'), 'missing tensor lm_head.weight');

    const kv = c.numKvHeads * c.headDim;
    const transposed = withTensors('shape', (t) => { t['model.layers.1.self_attn.k_proj.weight'] = { dtype: 'F32', shape: [c.hiddenSize, kv], data: asF32(w.layers[1].wk) }; });
    await rejectsOneLine(loadHfDirectory(transposed), join(transposed, 'model.safetensors'), 'model.layers.1.self_attn.k_proj.weight', `has shape [32, ${kv}], expected [${kv}, 32]`);

    const sharded = writeHfDirectory(freshDir('sharded-missing'), c, w, { shards: 2 });
    const indexPath = join(sharded, 'model.safetensors.index.json');
    const index = JSON.parse(readFileSync(indexPath, 'utf8'));
    delete index.weight_map['model.layers.0.mlp.up_proj.weight'];
    writeFileSync(indexPath, JSON.stringify(index));
    await rejectsOneLine(loadHfDirectory(sharded), indexPath, 'missing tensor model.layers.0.mlp.up_proj.weight');
    index.weight_map['model.layers.0.mlp.up_proj.weight'] = '../model-00001-of-00002.safetensors';
    writeFileSync(indexPath, JSON.stringify(index));
    await rejectsOneLine(loadHfDirectory(sharded), indexPath, 'invalid shard file name');
  });
});

describe('logit equivalence', () => {
  test('HF directory (F32, F16, BF16, sharded) and llama2.c checkpoint give identical logits', async () => {
    for (const tie of [true, false]) {
      const c = tinyConfig({ tieWordEmbeddings: tie });
      const w = randomWeights(c, tie ? 11 : 12);
      const binPath = join(root, `tiny-${tie}.bin`);
      writeLlama2c(binPath, c, w);
      const fromBin = loadLlama2c(binPath);
      assert.equal(fromBin.config.tieWordEmbeddings, tie);
      const binLogits = engineLogits(fromBin.config, fromBin.weights, TOKENS);

      // The llama2.c path (written interleaved, permuted back at load) against float64 HF math.
      const ref = referenceLogits(c, w, TOKENS);
      assert.ok(relativeError(binLogits, ref) < 1e-4, `llama2.c vs reference: ${relativeError(binLogits, ref)}`);

      const variants: [string, { dtype: FloatDtype; shards?: number }][] = [
        ['F32', { dtype: 'F32' }], ['F16', { dtype: 'F16' }], ['BF16', { dtype: 'BF16' }], ['BF16 sharded', { dtype: 'BF16', shards: 3 }],
      ];
      for (const [label, opts] of variants) {
        const dir = writeHfDirectory(freshDir(`equiv-${label}`), c, w, opts);
        const hf = await loadHfDirectory(dir);
        assert.equal(hf.tokenizer, null, 'no tokenizer.json → null');
        assert.deepEqual(Array.from(asF32(hf.weights.layers[1].wk)), Array.from(asF32(w.layers[1].wk)), `${label}: weights survive the dtype exactly`);
        assert.equal(hf.weights.lmHead === hf.weights.embedding, tie);
        const d = maxAbsDiff(engineLogits(hf.config, hf.weights, TOKENS), binLogits);
        assert.ok(d <= 1e-5, `tie=${tie} ${label}: max |HF − llama2.c| = ${d}`);
      }
    }
  });

  test('a wrong RoPE layout would be caught', () => {
    // Loading the HF q/k rows as if they were llama2.c's must change the logits well beyond 1e-5.
    const c = tinyConfig();
    const w = randomWeights(c, 11);
    const good = engineLogits(c, w, TOKENS);
    const hs = c.headDim, half = hs / 2, D = c.hiddenSize;
    const swapped = (m: Float32Array, heads: number) => {
      const out = new Float32Array(m.length);
      for (let h = 0; h < heads; h++) for (let j = 0; j < half; j++) for (let p = 0; p < 2; p++) {
        out.set(m.subarray((h * hs + p * half + j) * D, (h * hs + p * half + j + 1) * D), (h * hs + 2 * j + p) * D);
      }
      return out;
    };
    const bad = { ...w, layers: w.layers.map((l) => ({ ...l, wq: swapped(asF32(l.wq), c.numHeads), wk: swapped(asF32(l.wk), c.numKvHeads) })) };
    assert.ok(maxAbsDiff(engineLogits(c, bad, TOKENS), good) > 1e-3);
  });

  const noBiasNoNorm = (c: ModelConfig, w: ModelWeights): [ModelConfig, ModelWeights] =>
    [{ ...c, attentionBias: false, qkNorm: false }, { ...w, layers: w.layers.map((l) => ({ ...l, bq: null, bk: null, bv: null, qNorm: null, kNorm: null })) }];
  const noScaling = (c: ModelConfig, w: ModelWeights): [ModelConfig, ModelWeights] => [{ ...c, ropeScaling: null }, w];
  /** [label, config, extra config.json fields, ablation of the feature under test]. */
  const cases: [string, ModelConfig, Record<string, unknown> | undefined, ((c: ModelConfig, w: ModelWeights) => [ModelConfig, ModelWeights]) | null][] = [
    ['qwen2 (q/k/v bias)', tinyConfig({ architecture: 'qwen2', attentionBias: true, ropeTheta: 1e6, rmsNormEps: 1e-6, tieWordEmbeddings: false }), undefined, noBiasNoNorm],
    ['qwen3 (q/k norm, head_dim ≠ hidden/heads)', tinyConfig({ architecture: 'qwen3', qkNorm: true, headDim: 16, ropeTheta: 1e6, rmsNormEps: 1e-6 }), undefined, noBiasNoNorm],
    ['mistral (sliding_window ignored: full attention)', tinyConfig({ architecture: 'mistral', tieWordEmbeddings: false }), { sliding_window: 4 }, null],
    ['llama, linear rope scaling', tinyConfig({ ropeScaling: { type: 'linear', factor: 4 } }), undefined, noScaling],
    // θ_j wavelengths 6.3, 63, 628, 6283 against 128/4 and 128/1: high, medium, low, low.
    ['llama, llama3 rope scaling', tinyConfig({ ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 128 } }), undefined, noScaling],
  ];
  for (const [label, c, extra, ablate] of cases) {
    test(`${label}: engine matches the float64 reference`, async () => {
      const w = randomWeights(c, 21);
      const dir = writeHfDirectory(freshDir(c.architecture), c, w, { dtype: 'BF16', configExtra: extra });
      const hf = await loadHfDirectory(dir);
      assert.deepEqual(hf.config, c);
      const ref = referenceLogits(c, w, TOKENS);
      const err = relativeError(engineLogits(hf.config, hf.weights, TOKENS), ref);
      assert.ok(err < 1e-4, `relative error ${err}`);
      if (ablate) {
        // The feature under test matters: without it the reference moves far beyond tolerance.
        const other = referenceLogits(...ablate(c, w), TOKENS);
        assert.ok(relativeError(Float32Array.from(other.flat()), ref) > 1e-2);
      }
    });
  }
});

describe('tokenizer.json', () => {
  const c = tinyConfig({ vocabSize: 280 });
  const w = randomWeights(c, 5);

  /** Streamed pieces after the first token, appended to its text, must equal the full decode. */
  const assertStreams = (tok: Tokenizer, ids: number[]) => {
    let text = tok.decode(ids.slice(0, 1));
    for (let i = 1; i < ids.length; i++) text += tok.decodePiece(ids[i - 1], ids[i]);
    assert.equal(text, tok.decode(ids));
  };

  test('Llama style: BOS from the template, byte fallback, streaming', async () => {
    const dir = writeHfDirectory(freshDir('tok-llama'), c, w, { configExtra: { bos_token_id: 1, eos_token_id: 2 } });
    writeTokenizerFiles(dir, 'llama');
    const { tokenizer: tok } = await loadHfDirectory(dir);
    assert.ok(tok);
    assert.equal(tok.bosId, 1);
    assert.deepEqual(tok.stopIds, [2]);
    assert.equal(tok.chatTemplate, null);
    assert.equal(tok.vocabSize, 278);
    assert.deepEqual(tok.encode('hello world', { bos: true }), [1, 274, 277, 266, 262]);
    assert.deepEqual(tok.encode('hello world'), [274, 277, 266, 262]);
    // "é" is not in the vocabulary: UTF-8 bytes C3 A9 → byte tokens 3 + 0xC3, 3 + 0xA9.
    assert.deepEqual(tok.encode('café'), [259, 261, 260, 264, 198, 172]);
    assert.equal(tok.decode([1, 274, 277, 266, 262, 2]), 'hello world');
    assert.equal(tok.decode([259, 261, 260, 264, 198, 172]), 'café');
    assert.equal(tok.decodePiece(1, 274), 'hello', 'the leading space is dropped after BOS');
    assert.equal(tok.decodePiece(274, 277), ' wor');
    assertStreams(tok, tok.encode('hello café world\nhello', { bos: true }));

    // The template alone (no tokenizer_config.json) still gives BOS; add_bos_token false removes it.
    const bare = freshDir('tok-llama-bare');
    writeHfDirectory(bare, c, w);
    writeTokenizerFiles(bare, 'llama', { tokenizerConfig: false });
    assert.equal(loadHfTokenizer(bare)?.bosId, 1);
    writeFileSync(join(bare, 'tokenizer_config.json'), JSON.stringify({ add_bos_token: false }));
    assert.equal(loadHfTokenizer(bare)?.bosId, null);
    assert.deepEqual(loadHfTokenizer(bare)?.encode('hello', { bos: true }), [274]);
  });

  test('Qwen style: no BOS, EOS list, chat template, byte-level streaming', async () => {
    const dir = writeHfDirectory(freshDir('tok-qwen'), { ...c, architecture: 'qwen2', attentionBias: true }, randomWeights({ ...c, attentionBias: true }, 6), { configExtra: { bos_token_id: 264, eos_token_id: 266 } });
    writeTokenizerFiles(dir, 'qwen');
    const { tokenizer: tok } = await loadHfDirectory(dir);
    assert.ok(tok);
    assert.equal(tok.bosId, null, 'Qwen does not prepend bos_token_id');
    assert.deepEqual(tok.stopIds, [266, 264]);
    assert.equal(tok.chatTemplate, TINY_CHAT_TEMPLATE);
    assert.deepEqual(tok.encode('hello world', { bos: true }), [262, 258, 108, 100]);
    // Added tokens are matched whole; "user" falls back to single bytes.
    assert.deepEqual(tok.encode('<|im_start|>user'), [265, 117, 115, 101, 114]);
    assert.equal(tok.decode([265, 262, 266]), 'hello', 'special tokens are skipped');
    // "é" = C3 A9 (two byte tokens), "€" = [E2 82] + [AC]: characters split over two tokens.
    const ids = tok.encode('café €!');
    assert.deepEqual(ids, [99, 97, 102, 0xc3, 0xa9, 32, 263, 0xac, 33]);
    assert.equal(tok.decode(ids), 'café €!');
    assert.equal(tok.decodePiece(102, 0xc3), '', 'an incomplete character waits for its next byte');
    assert.equal(tok.decodePiece(0xc3, 0xa9), 'é');
    assertStreams(tok, ids);
    assertStreams(tok, tok.encode('hello world €€ é'));

    // chat_template.jinja beside a tokenizer_config.json without chat_template.
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|im_end|>' }));
    writeFileSync(join(dir, 'chat_template.jinja'), '{{ messages }}');
    assert.equal(loadHfTokenizer(dir)?.chatTemplate, '{{ messages }}');
  });

  test('a directory without tokenizer.json has no tokenizer; a broken one is a clear error', () => {
    const dir = writeHfDirectory(freshDir('no-tok'), c, w);
    assert.equal(loadHfTokenizer(dir), null);
    const tokPath = join(dir, 'tokenizer.json');
    writeFileSync(tokPath, '{"model": ');
    throwsOneLine(() => loadHfTokenizer(dir), tokPath, 'invalid JSON');
    writeFileSync(tokPath, JSON.stringify({ model: { type: 'NoSuchModel' } }));
    throwsOneLine(() => loadHfTokenizer(dir), tokPath, 'unsupported tokenizer');
  });
});
