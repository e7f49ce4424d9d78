import { loadModel } from '../../model/load.js';
import { generate } from '../../pipeline/generate.js';
import { weightsFlag, num, parse, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { contextOptions, contextUsage, runGenerateContext } from './generate-context.js';
import { pressFlags, pressFlagsUsage, pressFromFlags } from './presses.js';

export const generateCommand: Command = {
  name: 'generate',
  summary: 'generate text from a prompt, or answer questions from a compressed context',
  usage: `kvpress generate --prompt TEXT [options]

Options:
  --prompt TEXT          the prompt (tokenized with BOS)
  --model PATH           llama2.c .bin checkpoint or Hugging Face directory (default: embedded stories260K)
  --tokenizer PATH       tokenizer .bin for a llama2.c checkpoint (default: found beside it)
  --max-new-tokens N     tokens to generate at most (default 256)
  --temperature T        0 = greedy (default 0)
  --top-p P              nucleus sampling mass in (0, 1] (default 1)
  --top-k K              sample among the K most likely tokens, 0 = all (default 0)
  --seed S               sampler seed (default: from the clock)
  --weights W            f32 or bf16: hold every matrix in this format, for prefill and decode (default: as the checkpoint stores it; bf16 halves weight memory)
  --decode-weights W     former name of --weights (still accepted)
${pressFlagsUsage}
  --json                 print {"promptTokens", "tokens", "text", "cache": {"bytes"}} on stdout

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
    ...pressFlags,
    json: { type: 'boolean' },
    ...contextOptions,
  },
  async run(argv, io) {
    const { values } = parse(argv, this.options);
    const weights = weightsFlag(values, io.err);
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
    const model = await loadModel(str(values.model), { tokenizer: str(values.tokenizer), backend: io.backend(), weights });
    const press = pressFromFlags(values, model);
    const tok = model.tokenizer;
    if (!tok) throw new UsageError(`${str(values.model)}: no tokenizer found; pass --tokenizer PATH`);
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
      io.out(JSON.stringify({ promptTokens, tokens: r.tokens, text: r.text, cache: { bytes: r.cache.bytes() } }) + '\n');
    } else {
      io.out('\n');
      const tps = r.tokens.length > 0 ? (r.tokens.length / (r.decodeMs / 1000)).toFixed(1) : '-';
      const pressNote = press ? `press ${press.name} at ratio ${press.compressionRatio}, ` : '';
      io.err(`[${pressNote}${promptTokens.length} prompt tokens, ${r.tokens.length} generated, prefill ${r.prefillMs.toFixed(1)} ms, decode ${tps} tok/s, KV cache ${r.cache.bytes()} bytes]\n`);
    }
    return 0;
  },
};
