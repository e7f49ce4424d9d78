import { kvDtypeFlag, kvDtypeOption, kvDtypeUsage } from './kv-dtype.js';
import { createBackend } from '../../backend/index.js';
import { benchModel } from '../../bench/model-bench.js';
import { benchModelOfShape, SHAPE_NAMES } from '../../bench/shapes.js';
import type { Backend } from '../../backend/backend.js';
import { NativeBackend } from '../../backend/native/index.js';
import { loadModel } from '../../model/load.js';
import { Model } from '../../model/model.js';
import { weightBytes, type ModelWeights, type WeightType } from '../../model/weights.js';
import type { ShapeName } from '../../model/random.js';
import { weightsFlag, num, parse, str, UsageError, threadsFlag } from '../args.js';
import type { Command } from '../command.js';

export const benchCommand: Command = {
  name: 'bench',
  summary: 'time prefill and decode on a model shape',
  usage: `kvpress bench (--shape stories260K|small|medium | --model PATH) [options]

Builds the model (stories260K's real weights; random weights in memory for small and medium) or
loads the one at --model, prefills N tokens and decodes M tokens greedily.

Options:
  --shape NAME           stories260K, small (SmolLM2-135M-shaped) or medium (Qwen2.5-0.5B-shaped)
  --model PATH           a llama2.c .bin, .gguf file or Hugging Face directory instead of a shape
  --prompt-tokens N      tokens to prefill (default 512)
  --gen-tokens M         tokens to decode (default 32)
  --depth D              decode from a cache of D entries instead of the prefill's (default: the prefill)
  --threads T            kernel threads (default: available cores)
  --backend NAME         native, wasm, js or auto (default auto; KVPRESS_BACKEND also works)
  --weights W            f32, bf16, q8_0 or q4_k: hold every matrix in this format, for prefill and decode (default: as the checkpoint stores it; bf16 halves weight memory; q8_0 and q4_k quantize in memory, q4_k falling back to q5_0 on rows that are not whole 256-value blocks, as llama-quantize does)
  --decode-weights W     former name of --weights (still accepted)
${kvDtypeUsage}
  --json                 print one JSON object {"prefillTokensPerSecond", "decodeTokensPerSecond", "backend", "weights", "gemm", ...}

Examples:
  kvpress bench --shape stories260K
  kvpress bench --model test/fixtures/gguf/stories260K-q8_0.gguf --prompt-tokens 256
  kvpress bench --shape small --prompt-tokens 1 --depth 8192 --gen-tokens 8 --threads 1 --kv-dtype q8_0
  kvpress bench --shape small --prompt-tokens 2048 --gen-tokens 16 --threads 1 --json
  kvpress bench --shape small --prompt-tokens 1 --depth 2048 --gen-tokens 16 --threads 1 --weights bf16
  kvpress bench --shape small --prompt-tokens 512 --gen-tokens 64 --threads 1 --weights q4_k --json`,
  options: {
    shape: { type: 'string' },
    model: { type: 'string' },
    'prompt-tokens': { type: 'string' },
    'gen-tokens': { type: 'string' },
    depth: { type: 'string' },
    threads: { type: 'string' },
    backend: { type: 'string' },
    weights: { type: 'string' },
    'decode-weights': { type: 'string' },
    ...kvDtypeOption,
    json: { type: 'boolean' },
  },
  async run(argv, io) {
    const { values } = parse(argv, this.options);
    const shape = str(values.shape), modelPath = str(values.model);
    if ((shape === undefined) === (modelPath === undefined)) throw new UsageError('give exactly one of --shape, --model');
    if (shape !== undefined && !(SHAPE_NAMES as string[]).includes(shape)) throw new UsageError(`--shape must be one of ${SHAPE_NAMES.join(', ')}, got "${shape}"`);
    const promptTokens = num(values['prompt-tokens'], 'prompt-tokens', { min: 1, max: 32768, integer: true }) ?? 512;
    const genTokens = num(values['gen-tokens'], 'gen-tokens', { min: 0, max: 32768, integer: true }) ?? 32;
    const depth = num(values.depth, 'depth', { min: 1, max: 32768, integer: true });
    const threads = threadsFlag(values.threads);
    const asked = weightsFlag(values, io.err), weights = asked ?? 'f32';
    const kvDtype = kvDtypeFlag(values['kv-dtype']);
    const prefer = str(values.backend) as 'native' | 'wasm' | 'js' | 'auto' | undefined;
    const backend = createBackend({ prefer, threads });
    const built = modelPath !== undefined ? await loadModel(modelPath, { backend, weights: asked, kvDtype }) : await benchModelOfShape(shape as ShapeName, backend);
    // The shapes come as f32 models; --weights converts them (held once, in that format).
    const model = modelPath !== undefined || (weights === 'f32' && kvDtype === 'auto') ? built : new Model(built.config, built.weights, { backend, tokenizer: built.tokenizer, source: built.source, weights, kvDtype });
    // A file's matrices as stored (a GGUF's quantized blocks) unless --weights converts them.
    const held = asked ?? (modelPath !== undefined ? model.weightsType : weights);
    const gemm = backendGemm(backend, held);
    const r = benchModel(model, { promptTokens, genTokens, depth });
    const result = {
      ...r, shape: shape ?? modelPath, backend: backend.name, backendDescription: backend.description, threads: backend.threads, weights: held, gemm, kvDtype: model.kvDtype,
      weightBytes: modelWeightBytes(model.weights),
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
    };
    if (values.json === true) io.out(JSON.stringify(result) + '\n');
    else {
      io.out(`${shape ?? modelPath} on ${backend.name} (${backend.threads} thread${backend.threads > 1 ? 's' : ''})\n`);
      io.out(`prefill ${promptTokens} tokens: ${r.prefillTokensPerSecond.toFixed(1)} tok/s (${r.prefillMs.toFixed(0)} ms)\n`);
      io.out(`decode ${genTokens} tokens at depth ${r.depth} (${held} weights): ${r.decodeTokensPerSecond.toFixed(1)} tok/s\n`);
      io.out(`KV cache ${(r.kvCacheBytes / 2 ** 20).toFixed(1)} MiB ${model.kvDtype}, peak RSS ${(result.peakRssBytes / 2 ** 20).toFixed(0)} MiB\n`);
    }
    return 0;
  },
};

/** The micro-kernel that runs the prefill products of `weights` on `backend` (and, for quantized weights, the decode product). */
function backendGemm(backend: Backend, weights: WeightType | 'mixed'): string {
  if (weights !== 'f32' && weights !== 'bf16') {
    if (backend instanceof NativeBackend) return `${backend.info.quantDot} int8 block dot (decode), ${backend.info.gemmF32} on dequantized panels (prefill)`;
    return `${backend.name} f32 on dequantized 64-row panels`;
  }
  if (backend instanceof NativeBackend) return weights === 'bf16' ? backend.info.gemmBf16 : backend.info.gemmF32;
  if (backend.name === 'wasm') return weights === 'bf16' ? 'wasm simd128 bf16 rows (gemv)' : 'wasm simd128 6x8';
  return weights === 'bf16' ? 'js bf16 4-row blocks' : 'js 1x4';
}

/** Bytes of every distinct weight array (tied embeddings once). */
function modelWeightBytes(w: ModelWeights): number {
  const seen = new Set<unknown>();
  let total = 0;
  const add = (a: Parameters<typeof weightBytes>[0] | null) => {
    if (a && !seen.has(a)) {
      seen.add(a);
      total += weightBytes(a);
    }
  };
  add(w.embedding);
  add(w.lmHead);
  add(w.finalNorm);
  for (const l of w.layers) for (const a of Object.values(l)) add(a);
  return total;
}
