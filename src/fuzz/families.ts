/**
 * The file formats the fuzzer mutates: one entry per parser family. An entry names the file the
 * mutant is written to, builds its seed files in code (small, so a run does hundreds of
 * thousands of inputs) and parses a path the way the library does, touching what it loaded.
 * A new format is one more entry here.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { loadGguf } from '../model/loaders/gguf-model.js';
import { ggufBytes, type MetaValue } from '../model/loaders/gguf-writer.js';
import { readHfConfig } from '../model/loaders/hf-config.js';
import { loadLlama2c } from '../model/loaders/llama2c.js';
import { readSafetensors, writeSafetensors } from '../model/loaders/safetensors.js';
import { packageRoot } from '../model/load.js';
import { mulberry32 } from '../presses/random.js';
import { loadHfTokenizer } from '../tokenizer/hf.js';
import { loadLlama2cTokenizer } from '../tokenizer/llama2c.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';

export interface FuzzFamily {
  name: string;
  /** File name the mutant is written to (in a private folder). */
  file: string;
  /** Text formats also get JSON-aware edits. */
  text: boolean;
  /** Unmutated side files written once into the folder. */
  sideFiles?: Record<string, string>;
  seeds(): Buffer[];
  /** Loads `path` as the library does; throws for a bad file. */
  parse(path: string): void;
}

/** What a loaded tokenizer must survive: encoding and decoding a little text. */
function exercise(tok: Tokenizer): void {
  const ids = tok.encode('Once upon a time, hello world € 漢 \u0000', { bos: true });
  tok.decode(ids);
  for (let i = 1; i < ids.length; i++) tok.decodePiece(ids[i - 1], ids[i]);
}

function llama2cCheckpoint(dims: number[], seed: number): Buffer {
  const [dim, hidden, layers, heads, kvHeads, vocab, seq] = dims;
  const hs = dim / heads, kv = kvHeads * hs, V = Math.abs(vocab);
  const n = V * dim + layers * (2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * hidden * dim) + dim + seq * hs + (vocab < 0 ? V * dim : 0);
  const r = mulberry32(seed);
  const b = Buffer.alloc(28 + 4 * n);
  dims.forEach((d, i) => b.writeInt32LE(d, 4 * i));
  for (let i = 0; i < n; i++) b.writeFloatLE(r() - 0.5, 28 + 4 * i);
  return b;
}

function llama2cTokenizerFile(vocab: string[], seed: number): Buffer {
  const r = mulberry32(seed);
  const parts = [Buffer.alloc(4)];
  parts[0].writeInt32LE(Math.max(...vocab.map((v) => Buffer.byteLength(v))));
  for (const v of vocab) {
    const head = Buffer.alloc(8);
    head.writeFloatLE(-Math.floor(r() * 1000), 0);
    head.writeInt32LE(Buffer.byteLength(v), 4);
    parts.push(head, Buffer.from(v));
  }
  return Buffer.concat(parts);
}

const BYTE_PIECES = Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);

function syntheticVocab(size: number): string[] {
  const v = ['<unk>', '<s>', '</s>', ...BYTE_PIECES, ' ', ...'abcdefghijklmnopqrstuvwxyz.,'];
  for (let i = 0; v.length < size; i++) v.push((i % 3 === 0 ? ' ' : '') + v[259 + (i % 29)] + v[260 + ((i * 7) % 28)]);
  return v;
}

function configJson(over: Record<string, unknown>): Buffer {
  return Buffer.from(JSON.stringify({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8, vocab_size: 64, max_position_embeddings: 64,
    rms_norm_eps: 1e-5, rope_theta: 10000, rope_scaling: null, tie_word_embeddings: true, hidden_act: 'silu', torch_dtype: 'float32', ...over,
  }, null, 1));
}

function bpeVocab(tokens: string[], merges: [string, string][]): Record<string, number> {
  const vocab: Record<string, number> = {};
  for (const t of [...tokens, ...merges.map(([a, b]) => a + b)]) if (!(t in vocab)) vocab[t] = Object.keys(vocab).length;
  return vocab;
}

const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

function tokenizerJsonSeeds(): Buffer[] {
  const merges: [string, string][] = [['l', 'l'], ['▁', 'h'], ['e', 'll'], ['▁h', 'ell'], ['▁hell', 'o'], ['▁', 'w'], ['o', 'r'], ['▁w', 'or']];
  const llama = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: null,
    post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [], special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } } },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: {
      type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false,
      vocab: bpeVocab(['<unk>', '<s>', '</s>', ...BYTE_PIECES.slice(0, 64), '▁', ...'acdefhlorw'], merges), merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true };
  const letters = [...'!"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~', 'Ġ'];
  const qmerges: [string, string][] = [['Ġ', 'w'], ['o', 'r'], ['Ġw', 'or'], ['h', 'e'], ['l', 'l'], ['he', 'll'], ['hell', 'o']];
  const qwen = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special(200, '<|endoftext|>'), special(201, '<|im_start|>'), special(202, '<|im_end|>')],
    normalizer: { type: 'NFC' }, pre_tokenizer: byteLevel, post_processor: byteLevel, decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab: bpeVocab(letters, qmerges), merges: qmerges },
  };
  return [llama, qwen].map((j) => Buffer.from(JSON.stringify(j)));
}

/**
 * A tiny llama GGUF (one layer, width 32) with a SentencePiece vocabulary in its metadata; its
 * matrices are F32, or Q8_0 blocks (34 bytes per 32 numbers: an f16 scale, then 32 int8).
 */
function ggufModel(seed: number, quantized: boolean): Buffer {
  const D = 32, V = 8, r = mulberry32(seed);
  const f32 = (n: number) => new Uint8Array(Float32Array.from({ length: n }, () => r() - 0.5).buffer);
  const q8 = (n: number) => {
    const b = new Uint8Array((n / 32) * 34);
    for (let o = 0; o < b.length; o += 34) {
      b[o + 1] = 0x20; // f16 scale 2^-7
      for (let i = 2; i < 34; i++) b[o + i] = Math.floor(r() * 256);
    }
    return b;
  };
  const matrix = (name: string, rows: number) => ({ name, dims: [D, rows], type: quantized ? 8 : 0, data: quantized ? q8(D * rows) : f32(D * rows) });
  const u = (value: number): MetaValue => ({ type: 'u32', value });
  const pieces = ['<unk>', '<s>', '</s>', '▁', '▁a', 'a', 'b', '▁b'];
  return ggufBytes({
    metadata: [
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['llama.embedding_length', u(D)], ['llama.feed_forward_length', u(D)], ['llama.block_count', u(1)],
      ['llama.attention.head_count', u(2)], ['llama.context_length', u(64)],
      ['llama.attention.layer_norm_rms_epsilon', { type: 'f32', value: 1e-5 }],
      ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
      ['tokenizer.ggml.tokens', { type: 'strings', value: pieces }],
      ['tokenizer.ggml.scores', { type: 'f32s', value: pieces.map((_, i) => -i) }],
      ['tokenizer.ggml.token_type', { type: 'i32s', value: pieces.map((_, i) => (i < 3 ? 3 : 1)) }],
      ['tokenizer.ggml.bos_token_id', u(1)], ['tokenizer.ggml.eos_token_id', u(2)],
    ],
    tensors: [
      { name: 'token_embd.weight', dims: [D, V], type: 0, data: f32(D * V) },
      { name: 'output_norm.weight', dims: [D], type: 0, data: f32(D) },
      { name: 'blk.0.attn_norm.weight', dims: [D], type: 0, data: f32(D) },
      { name: 'blk.0.ffn_norm.weight', dims: [D], type: 0, data: f32(D) },
      ...['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down'].map((t) => matrix(`blk.0.${t}.weight`, D)),
    ],
  });
}

export const FAMILIES: FuzzFamily[] = [
  {
    name: 'llama2c-checkpoint',
    file: 'model.bin',
    text: false,
    seeds: () => [llama2cCheckpoint([8, 16, 2, 2, 2, 16, 8], 1), llama2cCheckpoint([8, 12, 1, 2, 1, -16, 4], 2)],
    parse: (path) => void loadLlama2c(path),
  },
  {
    name: 'llama2c-tokenizer',
    file: 'tok512.bin',
    text: false,
    seeds: () => {
      const real = join(packageRoot(), 'models/stories260K/tok512.bin');
      return [llama2cTokenizerFile(syntheticVocab(512), 3), ...(existsSync(real) ? [readFileSync(real)] : [])];
    },
    parse: (path) => exercise(loadLlama2cTokenizer(path, 512)),
  },
  {
    name: 'safetensors',
    file: 'model.safetensors',
    text: false,
    seeds: () => {
      const p = join(tmpdir(), `kvpress-fuzz-seed-${process.pid}.safetensors`);
      const r = mulberry32(4);
      const t = (dtype: 'F32' | 'F16' | 'BF16', shape: number[]) => ({ dtype, shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r() - 0.5) });
      writeSafetensors(p, { 'model.embed_tokens.weight': t('F32', [4, 3]), 'model.norm.weight': t('F16', [3]), 'lm_head.weight': t('BF16', [2, 2]) }, { format: 'pt' });
      const a = readFileSync(p);
      writeSafetensors(p, { w: t('BF16', [8]), __proto__: t('F32', [1]) });
      return [a, readFileSync(p)];
    },
    parse: (path) => void readSafetensors(path),
  },
  {
    name: 'config.json',
    file: 'config.json',
    text: true,
    seeds: () => [
      configJson({}),
      configJson({ architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', attention_bias: false, rope_theta: 1000000, tie_word_embeddings: false }),
      configJson({ architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', head_dim: undefined }),
      configJson({ rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 32 } }),
      configJson({ architectures: ['MistralForCausalLM'], model_type: 'mistral', rope_scaling: { type: 'linear', factor: 2 } }),
    ],
    parse: (path) => void readHfConfig(path),
  },
  {
    name: 'tokenizer.json',
    file: 'tokenizer.json',
    text: true,
    sideFiles: { 'tokenizer_config.json': JSON.stringify({ add_bos_token: true, bos_token: '<s>', eos_token: '</s>' }) },
    seeds: tokenizerJsonSeeds,
    parse: (path) => {
      const tok = loadHfTokenizer(dirname(path));
      if (tok) exercise(tok);
    },
  },
  {
    name: 'gguf',
    file: 'model.gguf',
    text: false,
    seeds: () => [ggufModel(5, false), ggufModel(6, true)],
    parse: (path) => {
      const { tokenizer } = loadGguf(path);
      if (tokenizer) exercise(tokenizer);
    },
  },
];

/** Writes a family's side files into `dir` (once per worker). */
export function writeSideFiles(f: FuzzFamily, dir: string): void {
  for (const [name, text] of Object.entries(f.sideFiles ?? {})) writeFileSync(join(dir, name), text);
}
