/**
 * llama.cpp measured in the same benchmark run as ours. When `llama-bench` is found
 * (`LLAMA_CPP_BIN`, else /work/llama.cpp/build/bin, else ../llama.cpp/build/bin beside the
 * package), the benchmark's random shapes are written as GGUF files with our own writer (f32
 * and f16; Q8_0 and Q4_K_M through `llama-quantize`), cached in the temp directory, and timed
 * with `llama-bench -t 1 -o json`. Without it, the figures recorded earlier stand in, and the
 * output says so. No llama.cpp code is part of this project: only its programs are run.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, renameSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { f16Bits } from '../src/cache/format.js';
import { ggufBytes, type MetaValue, type TensorSpec } from '../src/model/loaders/gguf-writer.js';
import { SHAPES } from '../src/model/random.js';

export type LlamaShape = 'small' | 'medium';
/** Weight formats timed: f32 and f16 against ours, Q8_0 and Q4_K_M against the quantized weights. */
export type LlamaType = 'f32' | 'f16' | 'q8_0' | 'q4_k_m';

/** One model's llama-bench figures, tokens/s (null: not measured). */
export interface LlamaFigures {
  p512: number | null;
  p2048: number | null;
  decode: number | null;
  /**
   * Decode from a cache of 2048: this llama-bench build has no depth option (-d), so it is
   * derived from `-pg 2048,N` (prompt then N tokens, timed together) less the pp2048 time.
   */
  decode2048: number | null;
}

export interface LlamaCppResult {
  source: 'measured' | 'recorded';
  /** Element type of llama.cpp's KV cache in these runs (llama-bench's default -ctk/-ctv). */
  kvType: 'f16';
  /** Where the figures come from, for the tables. */
  note: string;
  build: string | null;
  figures: Partial<Record<`${LlamaShape} ${LlamaType}`, LlamaFigures>>;
}

/** Recorded on this machine kind, 1 thread: small f32 prefill 512 and decode and all f16 from issue #10, the rest from llama.cpp 3f545be (issue #3). */
export const RECORDED: LlamaCppResult['figures'] = {
  'small f32': { p512: 530, p2048: 320, decode: 62.5, decode2048: 28.5 },
  'medium f32': { p512: 110, p2048: 102, decode: 7.9, decode2048: 7.0 },
  'small f16': { p512: 620, p2048: null, decode: 99.5, decode2048: 35.5 },
  'medium f16': { p512: null, p2048: null, decode: 19.5, decode2048: 12.6 },
};

/** The folder holding llama-bench, or null. */
export function findLlamaCpp(root: string): string | null {
  const dirs = [process.env.LLAMA_CPP_BIN, '/work/llama.cpp/build/bin', join(root, '..', 'llama.cpp', 'build', 'bin')];
  for (const d of dirs) if (d && existsSync(join(d, 'llama-bench'))) return d;
  return null;
}

/** Deterministic uniform numbers of std 0.02, like the benchmark's random weights (xorshift32). */
class Uniform {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  fill(out: Float32Array): Float32Array {
    const a = 0.02 * Math.sqrt(3);
    let s = this.s;
    for (let i = 0; i < out.length; i++) {
      s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
      out[i] = ((s >>> 0) / 4294967296 * 2 - 1) * a;
    }
    this.s = s;
    return out;
  }
}

/** The dimensions of a random model (as SHAPES gives them). */
export type ShapeDims = { hiddenSize: number; intermediateSize: number; numLayers: number; numHeads: number; numKvHeads: number; headDim: number; vocabSize: number };

/** A SentencePiece-style vocabulary of `n` pieces: unk, bos, eos, the 256 byte pieces, then fillers. */
function vocabulary(n: number): { tokens: string[]; types: number[] } {
  const tokens = ['<unk>', '<s>', '</s>'], types = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6);
  }
  for (let i = tokens.length; i < n; i++) {
    tokens.push(`▁t${i}`);
    types.push(1);
  }
  return { tokens, types };
}

/**
 * Writes a random-weight model of `shape` as a llama GGUF (tied embeddings, f32 norms), its
 * matrices as F32 or F16, one tensor at a time (the file is never held in memory). Random values
 * carry no RoPE pairing, so q/k rows need no reordering; only the shapes matter to the timing.
 */
export function writeShapeGguf(path: string, shape: LlamaShape | ShapeDims, type: 'f32' | 'f16'): void {
  const s = typeof shape === 'string' ? SHAPES[shape] : shape;
  const D = s.hiddenSize, F = s.intermediateSize, V = s.vocabSize, q = s.numHeads * s.headDim, kv = s.numKvHeads * s.headDim;
  const ggmlType = type === 'f32' ? 0 : 1, width = type === 'f32' ? 4 : 2;
  const tensors: { name: string; rows: number; cols: number; norm: boolean }[] = [
    { name: 'token_embd.weight', rows: V, cols: D, norm: false },
    { name: 'output_norm.weight', rows: 1, cols: D, norm: true },
  ];
  for (let l = 0; l < s.numLayers; l++) {
    const p = `blk.${l}.`;
    tensors.push(
      { name: p + 'attn_norm.weight', rows: 1, cols: D, norm: true },
      { name: p + 'attn_q.weight', rows: q, cols: D, norm: false },
      { name: p + 'attn_k.weight', rows: kv, cols: D, norm: false },
      { name: p + 'attn_v.weight', rows: kv, cols: D, norm: false },
      { name: p + 'attn_output.weight', rows: D, cols: q, norm: false },
      { name: p + 'ffn_norm.weight', rows: 1, cols: D, norm: true },
      { name: p + 'ffn_gate.weight', rows: F, cols: D, norm: false },
      { name: p + 'ffn_up.weight', rows: F, cols: D, norm: false },
      { name: p + 'ffn_down.weight', rows: D, cols: F, norm: false },
    );
  }
  const align = 32;
  let offset = 0;
  const specs: TensorSpec[] = tensors.map((t) => {
    const bytes = t.rows * t.cols * (t.norm ? 4 : width);
    const spec: TensorSpec = { name: t.name, dims: t.rows === 1 ? [t.cols] : [t.cols, t.rows], type: t.norm ? 0 : ggmlType, data: new Uint8Array(0), offset: BigInt(offset) };
    offset = Math.ceil((offset + bytes) / align) * align;
    return spec;
  });
  const u = (value: number): MetaValue => ({ type: 'u32', value });
  const vocab = vocabulary(V);
  const header = ggufBytes({
    alignment: align,
    metadata: [
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['general.name', { type: 'string', value: `kvpress random ${typeof shape === 'string' ? shape : 'model'}` }],
      ['general.file_type', u(type === 'f32' ? 0 : 1)],
      ['llama.embedding_length', u(D)], ['llama.feed_forward_length', u(F)], ['llama.block_count', u(s.numLayers)],
      ['llama.attention.head_count', u(s.numHeads)], ['llama.attention.head_count_kv', u(s.numKvHeads)],
      ['llama.context_length', u(32768)], ['llama.rope.freq_base', { type: 'f32', value: 10000 }],
      ['llama.attention.layer_norm_rms_epsilon', { type: 'f32', value: 1e-5 }],
      ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
      ['tokenizer.ggml.tokens', { type: 'strings', value: vocab.tokens }],
      ['tokenizer.ggml.scores', { type: 'f32s', value: vocab.tokens.map((_, i) => -i) }],
      ['tokenizer.ggml.token_type', { type: 'i32s', value: vocab.types }],
      ['tokenizer.ggml.bos_token_id', u(1)], ['tokenizer.ggml.eos_token_id', u(2)],
    ],
    tensors: specs,
  });
  mkdirSync(dirname(path), { recursive: true });
  const part = `${path}.${process.pid}.part`;
  const fd = openSync(part, 'w');
  try {
    writeSync(fd, header, 0, header.length, 0);
    const rng = new Uniform(1);
    tensors.forEach((t, i) => {
      const values = t.norm ? new Float32Array(t.cols).fill(1) : rng.fill(new Float32Array(t.rows * t.cols));
      const bytes = t.norm || type === 'f32' ? new Uint8Array(values.buffer) : new Uint8Array(Uint16Array.from(values, f16Bits).buffer);
      writeSync(fd, bytes, 0, bytes.length, header.length + Number(specs[i].offset));
    });
  } finally {
    closeSync(fd);
  }
  renameSync(part, path);
}

/** The GGUF of `shape` in `type`, made once and cached in the temp directory. */
export function shapeGguf(bin: string, shape: LlamaShape, type: LlamaType): string {
  const dir = join(tmpdir(), 'kvpress-llama-cpp');
  const path = join(dir, `random-${shape}-${type}-v1.gguf`);
  if (existsSync(path) && statSync(path).size > 0) return path;
  if (type === 'f32' || type === 'f16') {
    writeShapeGguf(path, shape, type);
    return path;
  }
  const source = shapeGguf(bin, shape, 'f32');
  const part = `${path}.${process.pid}.part`;
  execFileSync(join(bin, 'llama-quantize'), [source, part, type.toUpperCase(), '1'], { stdio: 'ignore', env: libraryEnv(bin) });
  renameSync(part, path);
  return path;
}

/** llama.cpp's shared libraries sit beside its programs. */
function libraryEnv(bin: string): NodeJS.ProcessEnv {
  return { ...process.env, LD_LIBRARY_PATH: [bin, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':') };
}

interface LlamaBenchRow {
  build_commit?: string;
  n_prompt: number;
  n_gen: number;
  avg_ts: number;
}

/** llama-bench's JSON rows for `model`, 1 thread, its KV cache f16 (its default, named so that the comparisons say what it is). */
function llamaBenchRows(bin: string, model: string, args: string[]): LlamaBenchRow[] {
  const all = ['-m', model, '-t', '1', '-ctk', 'f16', '-ctv', 'f16', ...args, '-o', 'json'];
  return JSON.parse(execFileSync(join(bin, 'llama-bench'), all, { encoding: 'utf8', maxBuffer: 1 << 24, stdio: ['ignore', 'pipe', 'ignore'], env: libraryEnv(bin) })) as LlamaBenchRow[];
}

/** llama-bench on one model: pp512, pp2048, tg`gen` and (long) pg2048+`gen`. */
function llamaBench(bin: string, model: string, gen: number, reps: number, long: boolean): { figures: LlamaFigures; build: string | null } {
  const rows = llamaBenchRows(bin, model, ['-p', long ? '512,2048' : '512', '-n', String(gen), '-r', String(reps), ...(long ? ['-pg', `2048,${gen}`] : [])]);
  const find = (p: number, n: number) => rows.find((r) => r.n_prompt === p && r.n_gen === n)?.avg_ts ?? null;
  const p2048 = find(2048, 0), pg = find(2048, gen);
  // pg's rate counts prompt and generated tokens over their total time.
  const decodeSeconds = pg !== null && p2048 !== null ? (2048 + gen) / pg - 2048 / p2048 : null;
  return {
    figures: { p512: find(512, 0), p2048, decode: find(0, gen), decode2048: decodeSeconds !== null && decodeSeconds > 0 ? gen / decodeSeconds : null },
    build: rows[0]?.build_commit ?? null,
  };
}

/**
 * Times llama.cpp on the benchmark's shapes. quick: the small shape only (f32, f16, Q8_0,
 * Q4_K_M: the quantized-weights section compares against the last two), two repetitions. Falls back to RECORDED (and says so) when llama-bench is missing or fails.
 */
export function runLlamaCpp(root: string, opts: { quick: boolean; log?: (s: string) => void }): LlamaCppResult {
  const bin = findLlamaCpp(root);
  const recorded = (why: string): LlamaCppResult => ({ source: 'recorded', kvType: 'f16', note: `llama.cpp not run (${why}): its figures recorded earlier on this machine kind (issues #3 and #10, llama.cpp 3f545be and later)`, build: null, figures: RECORDED });
  if (!bin) return recorded('no llama-bench in LLAMA_CPP_BIN, /work/llama.cpp/build/bin or ../llama.cpp/build/bin');
  const plan: [LlamaShape, LlamaType][] = opts.quick
    ? [['small', 'f32'], ['small', 'f16'], ['small', 'q8_0'], ['small', 'q4_k_m']]
    : [['small', 'f32'], ['small', 'f16'], ['small', 'q8_0'], ['small', 'q4_k_m'], ['medium', 'f32'], ['medium', 'f16'], ['medium', 'q8_0'], ['medium', 'q4_k_m']];
  const figures: LlamaCppResult['figures'] = {};
  let build: string | null = null;
  try {
    for (const [shape, type] of plan) {
      opts.log?.(`llama.cpp ${shape} ${type}…\n`);
      const model = shapeGguf(bin, shape, type);
      // medium: prompts of 512 only (its 2048-token runs alone would take minutes).
      const r = llamaBench(bin, model, shape === 'small' ? 64 : 16, opts.quick ? 2 : 3, shape === 'small');
      figures[`${shape} ${type}`] = r.figures;
      build ??= r.build;
    }
  } catch (e) {
    return recorded(`llama-bench failed: ${String((e as Error).message).split('\n')[0]}`);
  }
  return {
    source: 'measured', kvType: 'f16', build,
    note: `llama.cpp ${build ?? '(unknown build)'} measured in this run: llama-bench -t 1 on the same random shapes written as GGUF (Q8_0 and Q4_K_M by llama-quantize); its decode @2048 is derived from -pg 2048,N less pp2048 (this build has no depth option); its KV cache is f16 (-ctk f16 -ctv f16, the default)`,
    figures,
  };
}

/** One decode comparison: our run (tokens/s) against llama-bench's tg on `type`. */
export interface DecodePair {
  name: string;
  type: LlamaType;
  ours: () => number;
}

/**
 * Decode at depth 0, ours and llama.cpp's, alternated over `rounds` rounds (one llama-bench
 * repetition of tg`gen` per round, after its own warm-up) with the best of each side kept.
 * Decode streams every weight once a token, so its speed follows the memory bandwidth the machine
 * grants at that moment; a comparison made minutes apart measures the machine as much as the code.
 */
export function pairedDecode(root: string, pairs: DecodePair[], opts: { rounds: number; gen: number; log?: (s: string) => void }): Record<string, { ours: number; llamaCpp: number | null; oursRuns: number[]; llamaCppRuns: number[] }> {
  const bin = findLlamaCpp(root);
  const out: Record<string, { ours: number; llamaCpp: number | null; oursRuns: number[]; llamaCppRuns: number[] }> = {};
  for (const p of pairs) out[p.name] = { ours: 0, llamaCpp: null, oursRuns: [], llamaCppRuns: [] };
  for (let round = 0; round < opts.rounds; round++) {
    for (const p of pairs) {
      opts.log?.(`decode pair ${p.name}, round ${round + 1}/${opts.rounds}…\n`);
      const r = out[p.name];
      r.oursRuns.push(p.ours());
      if (!bin) continue;
      try {
        const rows = llamaBenchRows(bin, shapeGguf(bin, 'small', p.type), ['-p', '0', '-n', String(opts.gen), '-r', '1']);
        const ts = rows.find((x) => x.n_gen === opts.gen)?.avg_ts;
        if (ts) r.llamaCppRuns.push(ts);
      } catch {
        // A failed llama-bench leaves that side empty; the table then shows ours alone.
      }
    }
  }
  for (const r of Object.values(out)) {
    r.ours = Math.max(...r.oursRuns);
    r.llamaCpp = r.llamaCppRuns.length ? Math.max(...r.llamaCppRuns) : null;
  }
  return out;
}
