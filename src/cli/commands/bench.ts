import { createBackend } from '../../backend/index.js';
import { benchModel } from '../../bench/model-bench.js';
import { benchModelOfShape, SHAPE_NAMES } from '../../bench/shapes.js';
import { Model } from '../../model/model.js';
import type { ShapeName } from '../../model/random.js';
import { decodeWeightsFlag, num, parse, str, UsageError, threadsFlag } from '../args.js';
import type { Command } from '../command.js';

export const benchCommand: Command = {
  name: 'bench',
  summary: 'time prefill and decode on a model shape',
  usage: `kvpress bench --shape stories260K|small|medium [options]

Builds the model (stories260K's real weights; random weights in memory for small and medium),
prefills N tokens and decodes M tokens greedily.

Options:
  --shape NAME           stories260K, small (SmolLM2-135M-shaped) or medium (Qwen2.5-0.5B-shaped)
  --prompt-tokens N      tokens to prefill (default 512)
  --gen-tokens M         tokens to decode (default 32)
  --depth D              decode from a cache of D entries instead of the prefill's (default: the prefill)
  --threads T            kernel threads (default: available cores)
  --backend NAME         native, wasm, js or auto (default auto; KVPRESS_BACKEND also works)
  --decode-weights W     f32 or bf16: decode from a bf16 copy of the weights (faster, +50 % weight memory; default f32)
  --json                 print one JSON object {"prefillTokensPerSecond", "decodeTokensPerSecond", "backend", ...}

Examples:
  kvpress bench --shape stories260K
  kvpress bench --shape small --prompt-tokens 2048 --gen-tokens 16 --threads 1 --json
  kvpress bench --shape small --prompt-tokens 1 --depth 2048 --gen-tokens 16 --threads 1 --decode-weights bf16`,
  options: {
    shape: { type: 'string' },
    'prompt-tokens': { type: 'string' },
    'gen-tokens': { type: 'string' },
    depth: { type: 'string' },
    threads: { type: 'string' },
    backend: { type: 'string' },
    'decode-weights': { type: 'string' },
    json: { type: 'boolean' },
  },
  async run(argv, io) {
    const { values } = parse(argv, this.options);
    const shape = str(values.shape);
    if (!shape || !(SHAPE_NAMES as string[]).includes(shape)) throw new UsageError(`--shape must be one of ${SHAPE_NAMES.join(', ')}${shape ? `, got "${shape}"` : ''}`);
    const promptTokens = num(values['prompt-tokens'], 'prompt-tokens', { min: 1, max: 32768, integer: true }) ?? 512;
    const genTokens = num(values['gen-tokens'], 'gen-tokens', { min: 0, max: 32768, integer: true }) ?? 32;
    const depth = num(values.depth, 'depth', { min: 1, max: 32768, integer: true });
    const threads = threadsFlag(values.threads);
    const decodeWeights = decodeWeightsFlag(values['decode-weights']);
    const prefer = str(values.backend) as 'native' | 'wasm' | 'js' | 'auto' | undefined;
    const backend = createBackend({ prefer, threads });
    const built = await benchModelOfShape(shape as ShapeName, backend);
    // The shapes come as f32 models; the bf16 decode copy is made from the same weights.
    const model = decodeWeights === 'f32' ? built : new Model(built.config, built.weights, { backend, tokenizer: built.tokenizer, source: built.source, decodeWeights });
    const r = benchModel(model, { promptTokens, genTokens, depth });
    const result = {
      ...r, shape, backend: backend.name, backendDescription: backend.description, threads: backend.threads, decodeWeights,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
    };
    if (values.json === true) io.out(JSON.stringify(result) + '\n');
    else {
      io.out(`${shape} on ${backend.name} (${backend.threads} thread${backend.threads > 1 ? 's' : ''})\n`);
      io.out(`prefill ${promptTokens} tokens: ${r.prefillTokensPerSecond.toFixed(1)} tok/s (${r.prefillMs.toFixed(0)} ms)\n`);
      io.out(`decode ${genTokens} tokens at depth ${r.depth} (${decodeWeights} weights): ${r.decodeTokensPerSecond.toFixed(1)} tok/s\n`);
      io.out(`KV cache ${(r.kvCacheBytes / 2 ** 20).toFixed(1)} MiB, peak RSS ${(result.peakRssBytes / 2 ** 20).toFixed(0)} MiB\n`);
    }
    return 0;
  },
};
