import { loadModel } from '../../model/load.js';
import { parse, str, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { readTokens } from './scores.js';

export const logitsCommand: Command = {
  name: 'logits',
  summary: "print the model's token ids and logits for a prompt (to compare with other engines)",
  usage: `kvpress logits --model PATH (--prompt TEXT | --tokens-file F) [--all] --json

Runs the prompt through the model (no press) and prints {"tokens": number[], "logits": number[][]}:
the prompt's token ids as the model's tokenizer makes them (BOS included where the model adds
one), and the logits of the last position ([1][vocab]), or of every position with --all
([tokens][vocab]).

Options:
  --model PATH           llama2.c .bin, .gguf file or Hugging Face directory (default: embedded stories260K)
  --tokenizer PATH       tokenizer .bin for a llama2.c checkpoint (default: found beside it)
  --prompt TEXT          the prompt, tokenized by the model's tokenizer with BOS
  --tokens-file F        a JSON array of token ids, used as they are
  --all                  logits of every position instead of the last
  --json                 print the JSON object (required: it is the only output format)

Examples:
  kvpress logits --model test/fixtures/gguf/stories260K-q8_0.gguf --prompt "Once upon a time" --json
  kvpress logits --tokens-file ids.json --all --json`,
  options: {
    model: { type: 'string' },
    tokenizer: { type: 'string' },
    prompt: { type: 'string' },
    'tokens-file': { type: 'string' },
    all: { type: 'boolean' },
    json: { type: 'boolean' },
  },
  async run(argv, io) {
    const { values, positionals } = parse(argv, this.options);
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    if (values.json !== true) throw new UsageError('--json is required (the output is one JSON object)');
    if ((values.prompt === undefined) === (values['tokens-file'] === undefined)) throw new UsageError('give exactly one of --prompt, --tokens-file');
    const model = await loadModel(str(values.model), { tokenizer: str(values.tokenizer), backend: io.backend() });
    const c = model.config;
    let tokens: number[];
    if (values['tokens-file'] !== undefined) tokens = readTokens(str(values['tokens-file'])!, c.vocabSize);
    else {
      if (!model.tokenizer) throw new UsageError(`${str(values.model)}: no tokenizer found; pass --tokenizer PATH or use --tokens-file`);
      tokens = model.tokenizer.encode(str(values.prompt)!, { bos: true });
    }
    if (tokens.length === 0) throw new UsageError('the prompt is empty');
    if (tokens.length > c.maxPositionEmbeddings) throw new UsageError(`the prompt has ${tokens.length} tokens, more than the model's context of ${c.maxPositionEmbeddings}`);
    const all = values.all === true;
    const flat = model.forward(tokens, model.newCache(), { logits: all ? 'all' : 'last' });
    const V = c.vocabSize, rows = flat.length / V;
    const logits = Array.from({ length: rows }, (_, r) => Array.from(flat.subarray(r * V, (r + 1) * V)));
    io.out(JSON.stringify({ tokens, logits }) + '\n');
    return 0;
  },
};
