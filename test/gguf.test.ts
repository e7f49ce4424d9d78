/**
 * GGUF against llama.cpp: the fixtures in test/fixtures/gguf/ (copied from the project's shared
 * model folder; see its README) with llama.cpp's own token ids, logits and greedy tokens.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { backendInfo, createBackend } from '../src/backend/index.js';
import { GgufFile } from '../src/model/loaders/gguf.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import type { Model } from '../src/model/model.js';
import { weightBytes, weightType } from '../src/model/weights.js';
import { f32Bytes, ggufBytes, type GgufSpec, type MetaValue } from '../src/model/loaders/gguf-writer.js';
import { mulberry32, tempDir } from './fixtures/tiny-models.js';
import { oneLine } from './helpers/errors.js';

const dir = join(packageRoot(), 'test', 'fixtures', 'gguf');

interface FileRef {
  arch: string;
  suggested_logit_atol: number;
  tensor_types: Record<string, string>;
  tensor_stats: Record<string, { sum: number; sumsq: number; sample: number[] }>;
  results: { prompt_index: number; prompt_tokens: number[]; last_logits: number[]; all_logits?: number[][]; last_logits_dequant_f64?: number[]; greedy: number[]; greedy_margins: number[] }[];
}
const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')) as { prompts: string[]; files: Record<string, FileRef> };
const files = Object.keys(ref.files);

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
const argmax = (x: ArrayLike<number>, from = 0, n = x.length) => {
  let best = from;
  for (let i = from; i < from + n; i++) if (x[i] > x[best]) best = i;
  return best - from;
};

/** Greedy continuation, one token per forward pass (as llama.cpp generated the reference). */
function greedy(m: Model, prompt: number[], n: number): number[] {
  const cache = m.newCache();
  let logits = m.forward(prompt, cache);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = argmax(logits);
    out.push(t);
    logits = m.forward([t], cache);
  }
  return out;
}

const isF32 = (name: string) => name.endsWith('-f32.gguf');

describe('dequantization matches gguf-py/llama.cpp (tensor_stats)', () => {
  for (const name of files) {
    test(name, () => {
      const f = GgufFile.open(join(dir, name));
      try {
        for (const [tensor, st] of Object.entries(ref.files[name].tensor_stats)) {
          assert.equal(f.info(tensor).typeName, ref.files[name].tensor_types[tensor], tensor);
          const x = f.readF32(tensor);
          let sum = 0, sumsq = 0;
          for (const v of x) { sum += v; sumsq += v * v; }
          assert.ok(Math.abs(sum - st.sum) <= 1e-6 * Math.max(1, Math.abs(st.sumsq)), `${tensor}: sum ${sum} vs ${st.sum}`);
          assert.ok(Math.abs(sumsq - st.sumsq) <= 1e-6 * st.sumsq, `${tensor}: sumsq ${sumsq} vs ${st.sumsq}`);
          const idx = st.sample.map((_, k) => Math.floor((k * (x.length - 1)) / 7));
          assert.deepEqual(idx.map((i) => Math.fround(x[i])), st.sample.map((v) => Math.fround(v)), `${tensor} samples`);
        }
      } finally {
        f.close();
      }
    });
  }
});

describe('GGUF models against llama.cpp: tokens, logits, greedy', () => {
  for (const name of files) {
    test(name, async () => {
      const fr = ref.files[name], atol = fr.suggested_logit_atol;
      // The float64 reference computes with float keys and values: pin the f32 cache (auto would
      // pick f16 for 16-bit and quantized files).
      const m = await loadModel(join(dir, name), { kvDtype: 'f32' });
      assert.equal(m.config.architecture, fr.arch);
      assert.equal((await loadModel(join(dir, name))).kvDtype, name.includes('f32') ? 'f32' : 'f16');
      for (const r of fr.results) {
        assert.deepEqual(m.tokenizer!.encode(ref.prompts[r.prompt_index], { bos: true }), r.prompt_tokens, 'prompt tokens');
        if (r.all_logits) {
          const all = m.forward(r.prompt_tokens, m.newCache(), { logits: 'all' });
          r.all_logits.forEach((row, i) => assert.ok(maxDiff(all.subarray(i * row.length, (i + 1) * row.length), row) <= atol, `position ${i}`));
        }
        const last = m.forward(r.prompt_tokens, m.newCache());
        const d = maxDiff(last, r.last_logits);
        assert.ok(d <= atol, `prompt ${r.prompt_index}: max |Δlogit| ${d} > ${atol}`);
        if (r.last_logits_dequant_f64) {
          // Float activations over the dequantized weights: the float64 reference is the tight target.
          const scale = Math.max(...r.last_logits_dequant_f64.map(Math.abs));
          const d64 = maxDiff(last, r.last_logits_dequant_f64);
          assert.ok(d64 <= 1e-4 * scale, `prompt ${r.prompt_index}: vs float64 dequantized reference ${d64}`);
        }
        if (isF32(name)) {
          assert.deepEqual(greedy(m, r.prompt_tokens, r.greedy.length), r.greedy, 'greedy tokens');
        } else {
          // Teacher-forced: the argmax must match where llama.cpp's own margin is large.
          const seq = [...r.prompt_tokens, ...r.greedy.slice(0, -1)], V = m.config.vocabSize, P = r.prompt_tokens.length;
          const all = m.forward(seq, m.newCache(), { logits: 'all' });
          r.greedy.forEach((t, k) => {
            if (r.greedy_margins[k] > 2 * atol) assert.equal(argmax(all, (P - 1 + k) * V, V), t, `greedy step ${k}`);
          });
        }
      }
    });
  }
});

test('matrices stay in the file\'s format: quantized blocks as stored, no f32 copy', async () => {
  for (const file of ['mini-llama-q4_k_m.gguf', 'stories260K-q8_0.gguf', 'mini-llama-q2_k.gguf']) {
    const types = ref.files[file].tensor_types;
    const m = await loadModel(join(dir, file));
    const l = m.weights.layers[0];
    const stored = (name: string) => types[name].toLowerCase();
    assert.equal(weightType(l.wq), stored('blk.0.attn_q.weight'), file);
    assert.equal(weightType(l.wDown), stored('blk.0.ffn_down.weight'), file);
    assert.equal(weightType(m.weights.embedding), stored('token_embd.weight'), file);
    // Every matrix together takes the file's tensor bytes (norms are the only f32 arrays).
    const f = GgufFile.open(join(dir, file));
    const fileBytes = [...f.tensors.values()].filter((t) => t.dims.length === 2).reduce((a, t) => a + t.bytes, 0);
    f.close();
    const held = new Set([m.weights.embedding, m.weights.lmHead, ...m.weights.layers.flatMap((x) => [x.wq, x.wk, x.wv, x.wo, x.wGate, x.wUp, x.wDown])]);
    assert.equal([...held].reduce((a, w) => a + weightBytes(w), 0), fileBytes, file);
  }
});

describe('the fast backends agree with llama.cpp too', () => {
  for (const name of ['native', 'wasm'] as const) {
    test(name, { skip: !backendInfo().backends[name].available && `${name} backend unavailable` }, async () => {
      const backend = createBackend({ prefer: name, threads: 1 });
      for (const file of files) {
        const fr = ref.files[file];
        const m = await loadModel(join(dir, file), { backend, kvDtype: 'f32' });
        for (const r of fr.results) {
          const d = maxDiff(m.forward(r.prompt_tokens, m.newCache()), r.last_logits);
          assert.ok(d <= fr.suggested_logit_atol, `${file} prompt ${r.prompt_index}: max |Δlogit| ${d}`);
        }
      }
    });
  }
});

describe('Hugging Face directories of the same random models', () => {
  for (const [hf, gguf] of [['tiny-phi3', 'tiny-phi3-f32.gguf'], ['tiny-gemma3', 'tiny-gemma3-f32.gguf']]) {
    test(hf, async () => {
      const fr = ref.files[gguf];
      const m = await loadModel(join(dir, 'hf', hf));
      assert.equal(m.config.architecture, fr.arch);
      for (const r of fr.results) {
        const d = maxDiff(m.forward(r.prompt_tokens, m.newCache()), r.last_logits);
        assert.ok(d <= fr.suggested_logit_atol, `prompt ${r.prompt_index}: max |Δlogit| ${d}`);
        assert.deepEqual(greedy(m, r.prompt_tokens, r.greedy.length), r.greedy, 'greedy tokens');
      }
    });
  }

  test('gemma3: sliding layers see the window only, the global layer everything', async () => {
    const m = await loadModel(join(dir, 'tiny-gemma3-f32.gguf'));
    assert.deepEqual(m.config.slidingLayers, [true, true, true, true, true, false]);
    assert.equal(m.config.slidingWindow, 8);
    assert.equal(m.config.localRopeTheta, 10000);
    assert.deepEqual(m.config.ropeScaling, { type: 'linear', factor: 8 });
    const hf = await loadModel(join(dir, 'hf', 'tiny-gemma3'));
    for (const k of ['slidingLayers', 'slidingWindow', 'localRopeTheta', 'ropeScaling', 'queryPreAttnScalar', 'embeddingScale'] as const) {
      assert.deepEqual(hf.config[k], m.config[k], k);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The reader's checks: every malformed header is one line naming the file, before any allocation.

const tmp = tempDir('gguf');
after(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const write = (bytes: Buffer) => {
  const p = join(tmp, `f${n++}.gguf`);
  writeFileSync(p, bytes);
  return p;
};

const base = (): GgufSpec => ({
  metadata: [['general.architecture', { type: 'string', value: 'llama' }]],
  tensors: [{ name: 'a', dims: [4, 2], type: 0, data: f32Bytes([1, 2, 3, 4, 5, 6, 7, 8]) }],
});

describe('GGUF reader checks the header against the file', () => {
  test('a well-formed file reads back, v2 and v3', () => {
    for (const version of [2, 3]) {
      const p = write(ggufBytes({ ...base(), version }));
      const f = GgufFile.open(p);
      assert.equal(f.version, version);
      assert.equal(f.get('general.architecture'), 'llama');
      assert.deepEqual(Array.from(f.readF32('a')), [1, 2, 3, 4, 5, 6, 7, 8]);
      f.close();
    }
  });

  test('custom alignment is honoured', () => {
    const spec = base();
    spec.alignment = 64;
    spec.metadata.push(['general.alignment', { type: 'u32', value: 64 }]);
    spec.tensors.push({ name: 'b', dims: [2], type: 0, data: f32Bytes([9, 10]) });
    const f = GgufFile.open(write(ggufBytes(spec)));
    assert.equal(f.dataStart % 64, 0);
    assert.deepEqual(Array.from(f.readF32('b')), [9, 10]);
    f.close();
  });

  const cases: [string, (s: GgufSpec) => Buffer, RegExp][] = [
    ['bad magic', (s) => { const b = ggufBytes(s); b.write('GGUX', 0, 'latin1'); return b; }, /not a GGUF file/],
    ['version 1', (s) => ggufBytes({ ...s, version: 1 }), /version 1 is not supported/],
    ['absurd tensor count', (s) => ggufBytes({ ...s, tensorCount: 1n << 60n }), /tensor count .* impossible/],
    ['absurd metadata count', (s) => ggufBytes({ ...s, kvCount: 1n << 40n }), /metadata count .* impossible/],
    ['truncated header', (s) => ggufBytes(s).subarray(0, 40), /truncated|impossible/],
    ['tensor past the end', (s) => ggufBytes(s).subarray(0, -8), /run past the end/],
    ['misaligned offset', (s) => { s.tensors[0].offset = 4n; return ggufBytes(s); }, /not a multiple of the alignment/],
    ['too many dimensions', (s) => { s.tensors[0].dims = [1, 1, 1, 1, 8]; return ggufBytes(s); }, /5 dimensions/],
    ['block-misaligned row', (s) => { s.tensors[0] = { name: 'a', dims: [16], type: 8, data: new Uint8Array(34) }; return ggufBytes(s); }, /not a multiple of the Q8_0 block/],
    ['duplicate key', (s) => { s.metadata.push(s.metadata[0]); return ggufBytes(s); }, /duplicate metadata key/],
    ['bad alignment', (s) => { s.metadata.push(['general.alignment', { type: 'u32', value: 3 }]); return ggufBytes(s); }, /alignment 3/],
    ['overlapping tensors', (s) => { s.tensors.push({ name: 'b', dims: [8], type: 0, data: f32Bytes(new Array(8).fill(0)), offset: 0n }); return ggufBytes(s); }, /overlap/],
  ];
  for (const [what, make, fragment] of cases) {
    test(what, () => {
      const p = write(make(base()));
      assert.throws(() => GgufFile.open(p), oneLine(p, fragment));
    });
  }

  test('an unsupported tensor type is named when read', () => {
    const spec = base();
    spec.tensors[0] = { name: 'a', dims: [32], type: 23, data: new Uint8Array(0) };
    const p = write(ggufBytes(spec));
    const f = GgufFile.open(p);
    assert.throws(() => f.readF32('a'), oneLine(p, /type IQ4_XS, which is not supported/));
    f.close();
  });

  test('a missing file and a non-GGUF model are one-line errors', async () => {
    await assert.rejects(loadModel(join(tmp, 'nope.gguf')), /no such file/);
    const p = write(ggufBytes(base()));
    await assert.rejects(loadModel(p), oneLine(p, /missing or invalid llama\./));
  });
});

// ---------------------------------------------------------------------------------------------
// Tokenizers from metadata.

/** A tiny llama-shaped GGUF (all weights zero) carrying the given metadata (and extra tensors). */
function tokenizerModel(meta: [string, MetaValue][], vocab: number, extra: GgufSpec['tensors'] = []): string {
  const D = 8, F = 8, z = (k: number) => new Uint8Array(4 * k);
  const tensors = [
    { name: 'token_embd.weight', dims: [D, vocab], type: 0, data: z(D * vocab) },
    { name: 'output_norm.weight', dims: [D], type: 0, data: z(D) },
    ...['attn_norm', 'ffn_norm'].map((t) => ({ name: `blk.0.${t}.weight`, dims: [D], type: 0, data: z(D) })),
    ...['attn_q', 'attn_k', 'attn_v', 'attn_output'].map((t) => ({ name: `blk.0.${t}.weight`, dims: [D, D], type: 0, data: z(D * D) })),
    { name: 'blk.0.ffn_gate.weight', dims: [D, F], type: 0, data: z(D * F) },
    { name: 'blk.0.ffn_up.weight', dims: [D, F], type: 0, data: z(D * F) },
    { name: 'blk.0.ffn_down.weight', dims: [F, D], type: 0, data: z(D * F) },
    ...extra,
  ];
  const u = (value: number): MetaValue => ({ type: 'u32', value });
  return write(ggufBytes({
    metadata: [
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['llama.embedding_length', u(D)], ['llama.feed_forward_length', u(F)], ['llama.block_count', u(1)],
      ['llama.attention.head_count', u(2)], ['llama.context_length', u(64)],
      ['llama.attention.layer_norm_rms_epsilon', { type: 'f32', value: 1e-5 }],
      ...meta,
    ],
    tensors,
  }));
}

test('rope_freqs.weight (Llama 3.x files) divides the RoPE frequencies', async () => {
  const { Rope } = await import('../src/model/rope.js');
  // The divisors a converter writes for llama3 scaling, recovered from our llama3 implementation.
  const cfg = (await loadModel(tokenizerModel([], 4))).config;
  const llama3 = new Rope({ ...cfg, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8 } });
  const plain = new Rope(cfg);
  const factors = Array.from(plain.invFreq, (f, j) => f / llama3.invFreq[j]);
  assert.ok(factors[1] > 1, 'the low frequency is scaled');
  const m = await loadModel(tokenizerModel([], 4, [{ name: 'rope_freqs.weight', dims: [2], type: 0, data: f32Bytes(factors) }]));
  assert.deepEqual(m.config.ropeFreqFactors, factors.map(Math.fround));
  m.rope.invFreq.forEach((f, j) => assert.ok(Math.abs(f - llama3.invFreq[j]) <= 1e-7 * f));
});

describe('tokenizers from GGUF metadata', () => {
  test('gpt2 byte-level BPE with merges, llama-bpe pre-tokenizer, specials and a chat template', async () => {
    // Byte-level alphabet: 'Ġ' is the space byte.
    const tokens = ['<|begin|>', '<|end|>', 'a', 'b', 'c', 'Ġ', '1', '2', '3', '4', 'ab', 'Ġab', 'abc', 'Ġabc', '12', '123'];
    const types = tokens.map((t) => (t.startsWith('<|') ? 3 : 1));
    const merges = ['a b', 'Ġ ab', 'ab c', 'Ġab c', '1 2', '12 3'];
    const template = '{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}<|end|>{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}';
    const p = tokenizerModel([
      ['tokenizer.ggml.model', { type: 'string', value: 'gpt2' }],
      ['tokenizer.ggml.pre', { type: 'string', value: 'llama-bpe' }],
      ['tokenizer.ggml.tokens', { type: 'strings', value: tokens }],
      ['tokenizer.ggml.token_type', { type: 'i32s', value: types }],
      ['tokenizer.ggml.merges', { type: 'strings', value: merges }],
      ['tokenizer.ggml.bos_token_id', { type: 'u32', value: 0 }],
      ['tokenizer.ggml.eos_token_id', { type: 'u32', value: 1 }],
      ['tokenizer.ggml.add_bos_token', { type: 'bool', value: true }],
      ['tokenizer.chat_template', { type: 'string', value: template }],
    ], tokens.length);
    const m = await loadModel(p);
    const tok = m.tokenizer!;
    // llama3's pattern splits digits in groups of at most three: "1234" → "123" "4".
    assert.deepEqual(tok.encode('abc ab1234', { bos: true }), [0, 12, 11, 15, 9]);
    assert.deepEqual(tok.encode('ab<|end|>c'), [10, 1, 4]);
    assert.equal(tok.decode([12, 11, 15, 9]), 'abc ab1234');
    assert.deepEqual(tok.stopIds, [1]);
    assert.equal(tok.chatTemplate, template);
    const { promptParts } = await import('../src/pipeline/chat-template.js');
    const parts = promptParts(tok, 'abc');
    assert.equal(parts.context, '<|begin|>[user]abc');
    assert.equal(parts.questionSuffix, '<|end|>[assistant]');
  });

  test('the pre-tokenizers split digits as their models do: default whole runs, llama-bpe groups of three, qwen2 one by one', async () => {
    // Merges never cross a pre-token, so "4123" shows the split: one run merges 1 2 → 12, 12 3 →
    // 123 after the 4; llama3's "412" + "3" keeps 12 and 3 apart; qwen2 leaves single digits.
    const tokens = ['a', 'Ġ', '1', '2', '3', '4', '12', '123'];
    const merges = ['1 2', '12 3'];
    const want: Record<string, number[]> = { default: [5, 7], 'llama-bpe': [5, 6, 4], llama3: [5, 6, 4], qwen2: [5, 2, 3, 4] };
    for (const [pre, ids] of Object.entries(want)) {
      const p = tokenizerModel([
        ['tokenizer.ggml.model', { type: 'string', value: 'gpt2' }],
        ['tokenizer.ggml.pre', { type: 'string', value: pre }],
        ['tokenizer.ggml.tokens', { type: 'strings', value: tokens }],
        ['tokenizer.ggml.merges', { type: 'strings', value: merges }],
      ], tokens.length);
      const tok = (await loadModel(p)).tokenizer!;
      assert.deepEqual(tok.encode('4123'), ids, pre);
      assert.equal(tok.decode(ids), '4123', pre);
    }
  });

  test('an unknown pre-tokenizer or tokenizer model is a one-line error naming it', async () => {
    const common: [string, MetaValue][] = [['tokenizer.ggml.tokens', { type: 'strings', value: ['a', 'b'] }], ['tokenizer.ggml.merges', { type: 'strings', value: ['a b'] }]];
    const p1 = tokenizerModel([['tokenizer.ggml.model', { type: 'string', value: 'gpt2' }], ['tokenizer.ggml.pre', { type: 'string', value: 'deepseek-coder' }], ...common], 2);
    await assert.rejects(loadModel(p1), oneLine(p1, /unsupported tokenizer.ggml.pre "deepseek-coder"/));
    const p2 = tokenizerModel([['tokenizer.ggml.model', { type: 'string', value: 'rwkv' }], ...common], 2);
    await assert.rejects(loadModel(p2), oneLine(p2, /unsupported tokenizer.ggml.model "rwkv"/));
  });

  test('SentencePiece on a long text: the ids of the llama2.c encoder over the same vocabulary', async () => {
    const { loadLlama2cTokenizer } = await import('../src/tokenizer/llama2c.js');
    const spm = (await loadModel(join(dir, 'stories260K-q4_0.gguf'))).tokenizer!;
    const l2c = loadLlama2cTokenizer(join(packageRoot(), 'models', 'stories260K', 'tok512.bin'), 512);
    const words = ['Once', 'upon', 'a', 'time', 'there', 'was', 'little', 'girl', 'named', 'Lily.', 'She', 'loved', 'to', 'play', 'outside', 'Tom', 'and', 'his', 'dog', 'went', 'park!', 'big', 'red', 'ball,', 'happy', 'é', '42'];
    const r = mulberry32(9);
    const text = Array.from({ length: 4000 }, () => words[Math.floor(r() * words.length)]).join(' ');
    const ids = spm.encode(text, { bos: true });
    assert.deepEqual(ids, l2c.encode(text, { bos: true }));
    assert.equal(spm.decode(ids), text);
  });

  test('SentencePiece: byte fallback, special tokens in text, decode drops the dummy prefix', async () => {
    const m = await loadModel(join(dir, 'stories260K-f32.gguf'));
    const tok = m.tokenizer!;
    assert.equal(tok.bosId, 1);
    assert.deepEqual(tok.stopIds, [2]);
    const ids = tok.encode('Once upon a time ☃', { bos: true });
    assert.deepEqual(ids.slice(0, 5), ref.files['stories260K-f32.gguf'].results[0].prompt_tokens);
    // ☃ is not a piece: its three UTF-8 bytes (E2 98 83) become <0xE2> <0x98> <0x83> (ids 3 + byte).
    assert.deepEqual(ids.slice(-3), [0xe2 + 3, 0x98 + 3, 0x83 + 3]);
    assert.equal(tok.decode(ids), 'Once upon a time ☃');
    assert.deepEqual(tok.encode('a</s>b'), [...tok.encode('a'), 2, ...tok.encode('b')]);
  });
});

test('unsupported phi3 and gemma3 variants are one-line errors naming the file', async () => {
  const { parseHfConfig } = await import('../src/model/loaders/hf-config.js');
  const phi3 = JSON.parse(readFileSync(join(dir, 'hf', 'tiny-phi3', 'config.json'), 'utf8'));
  const gemma = JSON.parse(readFileSync(join(dir, 'hf', 'tiny-gemma3', 'config.json'), 'utf8'));
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ ...phi3, rope_scaling: { rope_type: 'longrope', short_factor: [1], long_factor: [1] } }, /Phi-3 rope_scaling "longrope" is not supported/],
    [{ ...phi3, partial_rotary_factor: 0.5 }, /partial_rotary_factor 0.5/],
    [{ ...gemma, final_logit_softcapping: 30 }, /final_logit_softcapping is not supported/],
    [{ ...gemma, hidden_activation: 'gelu' }, /hidden_activation "gelu"/],
    [{ ...gemma, layer_types: ['sliding_attention'] }, /layer_types lists 1 layers/],
  ];
  for (const [json, fragment] of bad) assert.throws(() => parseHfConfig(json, 'x/config.json'), oneLine('x/config.json', fragment));
  // Without layer_types, every sliding_window_pattern-th layer is global.
  const { layer_types: _, ...byPattern } = gemma;
  assert.deepEqual(parseHfConfig({ ...byPattern, sliding_window_pattern: 3 }, 'x').slidingLayers, [true, true, false, true, true, false]);
});
