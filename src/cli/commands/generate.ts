import type { KVCache } from '../../cache/kv-cache.js';
import { loadModel } from '../../model/load.js';
import { generate } from '../../pipeline/generate.js';
import { weightsFlag, num, parse, str, UsageError, noTokenizer } from '../args.js';
import type { Command } from '../command.js';
import { kvDtypeFlag, kvDtypeOption, kvDtypeUsage } from './kv-dtype.js';
import { contextOptions, contextUsage, runGenerateContext } from './generate-context.js';
import { pressFlags, pressFlagsUsage, pressFromFlags } from './presses.js';

export const generateCommand: Command = {
  name: 'generate',
  summary: 'generate text from a prompt, or answer questions from a compressed context',
  usage: `kvpress generate --prompt TEXT [options]

Options:
  --prompt TEXT          the prompt (tokenized with BOS)
  --model PATH           llama2.c .bin, .gguf file or Hugging Face directory (default: embedded stories260K)
  --tokenizer PATH       tokenizer .bin for a llama2.c checkpoint (default: found beside it)
  --max-new-tokens N     tokens to generate at most (default 256)
  --temperature T        0 = greedy (default 0)
  --top-p P              nucleus sampling mass in (0, 1] (default 1)
  --top-k K              sample among the K most likely tokens, 0 = all (default 0)
  --seed S               sampler seed (default: from the clock)
  --weights W            f32, bf16, q8_0 or q4_k: hold every matrix in this format, for prefill and decode
                         (default: as the checkpoint stores it; bf16 halves weight memory, q8_0 and q4_k quantize it)
  --decode-weights W     former name of --weights (still accepted)
${kvDtypeUsage}
${pressFlagsUsage}
  --json                 print {"promptTokens", "tokens", "text", "cache": {"bytes", "allocatedBytes", "dtype", "pageEntries"}} on stdout

Examples:
  kvpress generate --prompt "Once upon a time"
  kvpress generate --prompt "Once upon a time" --temperature 1 --top-p 0.9 --seed 42 --json
  kvpress generate --prompt "Once upon a time" --press expected_attention --ratio 0.5

${contextUsage}`,
  options: {
    prompt: { type: 'string' },
    model: { type: 'string' },
    tokenizer: { type: 'string' },
    'max-new-tokens': { type: 'string' },
    temperature: { type: 'string' },
    'top-p': { type: 'string' },
    'top-k': { type: 'string' },
    seed: { type: 'string' },
    weights: { type: 'string' },
    'decode-weights': { type: 'string' },
    ...kvDtypeOption,
    ...pressFlags,
    json: { type: 'boolean' },
    ...contextOptions,
  },
  async run(argv, io) {
    const { values } = parse(argv, this.options);
    const weights = weightsFlag(values, io.err);
    const kvDtype = kvDtypeFlag(values['kv-dtype']);
    if (values['context-file'] !== undefined || values.question !== undefined) return runGenerateContext(values, io);
    const prompt = str(values.prompt);
    if (prompt === undefined) throw new UsageError('--prompt is required');
    const maxNewTokens = num(values['max-new-tokens'], 'max-new-tokens', { min: 0, integer: true }) ?? 256;
    const temperature = num(values.temperature, 'temperature', { min: 0 }) ?? 0;
    const topP = num(values['top-p'], 'top-p', { min: 0, max: 1 }) ?? 1;
    if (topP === 0) throw new UsageError('--top-p must be in (0, 1], got "0"');
    const topK = num(values['top-k'], 'top-k', { min: 0, integer: true }) ?? 0;
    const seed = num(values.seed, 'seed', { min: 0, integer: true });
    // Press mistakes are reported before the model is loaded; what it needs from the model, after.
    pressFromFlags(values);
    const model = await loadModel(str(values.model), { tokenizer: str(values.tokenizer), backend: io.backend(), weights, kvDtype });
    const press = pressFromFlags(values, model);
    const tok = model.tokenizer;
    if (!tok) throw noTokenizer(str(values.model));
    // A prompt that cannot fit is refused before it is tokenized (a 10 MB file would take a while).
    const atLeast = (tok.minTokens?.(prompt) ?? 0) + (tok.bosId === null ? 0 : 1);
    if (atLeast > model.config.maxPositionEmbeddings) {
      throw new UsageError(`the prompt (${prompt.length} characters) has at least ${atLeast} tokens, more than the model's context of ${model.config.maxPositionEmbeddings}; shorten it`);
    }
    const promptTokens = tok.encode(prompt, { bos: true });
    if (promptTokens.length > model.config.maxPositionEmbeddings) {
      throw new UsageError(`the prompt has ${promptTokens.length} tokens, more than the model's context of ${model.config.maxPositionEmbeddings}`);
    }
    const json = values.json === true;
    // The prompt is echoed once the prefill has succeeded, so that an error stays on its own line.
    let echoed = json;
    const echo = () => {
      if (!echoed) io.out(prompt);
      echoed = true;
    };
    const r = generate(model, promptTokens, {
      maxNewTokens, temperature, topP, topK, seed, press,
      onToken: json ? undefined : (_id, text) => {
        echo();
        io.out(text);
      },
    });
    echo();
    if (json) {
      const cache = { bytes: r.cache.bytes(), allocatedBytes: r.cache.allocatedBytes(), dtype: r.cache.dtype, pageEntries: r.cache.pageEntries };
      io.out(JSON.stringify({ promptTokens, tokens: r.tokens, text: r.text, cache }) + '\n');
    } else {
      io.out('\n');
      const tps = r.tokens.length > 0 ? (r.tokens.length / (r.decodeMs / 1000)).toFixed(1) : '-';
      const pressNote = press ? `press ${press.name} at ratio ${press.compressionRatio}, ` : '';
      io.err(`[${pressNote}${promptTokens.length} prompt tokens, ${r.tokens.length} generated, prefill ${r.prefillMs.toFixed(1)} ms, decode ${tps} tok/s, KV cache ${kvSummary(r.cache, promptTokens.length, r.tokens.length)}]\n`);
    }
    return 0;
  },
};

/**
 * The cache at the end: what the prompt's entries became (a press compresses those) beside the
 * generated ones (never compressed by a prefill press), then bytes and allocated bytes.
 */
function kvSummary(cache: KVCache, promptTokens: number, generated: number): string {
  const heads = cache.layers.length * (cache.layers[0]?.numKvHeads ?? 0);
  const entries = cache.layers.reduce((s, l) => s + l.lengths.reduce((a, n) => a + n, 0), 0);
  // The last generated token is never fed back, so the cache holds generated − 1 of them.
  const fed = Math.max(0, generated - 1);
  const context = heads > 0 ? (entries - fed * heads) / heads : 0;
  const c = Number.isInteger(context) ? String(context) : context.toFixed(1);
  return `${cache.bytes()} bytes ${cache.dtype} (${c} of ${promptTokens} prompt entries + ${fed} generated per head), ${cache.allocatedBytes()} allocated`;
}
