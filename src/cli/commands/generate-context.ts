import { kvDtypeFlag } from './kv-dtype.js';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { loadModel } from '../../model/load.js';
import { Pipeline } from '../../pipeline/pipeline.js';
import type { SamplingOptions } from '../../pipeline/sampler.js';
import { formatStats } from '../../pipeline/stats.js';
import { weightsFlag, num, str, UsageError, type OptionSpec, noTokenizer } from '../args.js';
import type { CommandIO } from '../command.js';
import { ProgressBar } from '../progress.js';
import { pressFlags, pressFromFlags } from './presses.js';

type Values = Record<string, string | boolean | string[] | boolean[] | undefined>;

/** The flags of `kvpress generate --context-file` (merged into the generate command's options). */
export const contextOptions: OptionSpec = {
  'context-file': { type: 'string' },
  question: { type: 'string', multiple: true },
  ...pressFlags,
  'answer-prefix': { type: 'string' },
  'max-context-length': { type: 'string' },
  'query-aware': { type: 'boolean' },
  'enable-thinking': { type: 'boolean' },
};

/** The `--help` section of the context mode. */
export const contextUsage = `kvpress generate --context-file FILE [--question Q ...] [--press NAME --ratio R] [options]

Compresses the context once with the press, then answers every question from the compressed
KV cache (greedy, as kvpress's pipeline) and prints the answers and what the compression saved.

Context options:
  --context-file FILE    the context (a document, a story…), read as UTF-8
  --question Q           a question about the context; repeat for several (none: continue the context)
  --press NAME           the press compressing the context (kvpress presses lists them; default none)
  --ratio R              fraction of the context's KV entries to remove, in [0, 1) (default 0)
  --press-option K=V     a press option, e.g. windowSize=32 (repeatable)
  --answer-prefix TEXT   text the answers start from (not part of the printed answer)
  --max-new-tokens N     tokens per answer at most (default 50 in this mode)
  --max-context-length N keep at most N context tokens (default: what leaves room in the model's window)
  --query-aware          append each question to the context before compressing (SnapKV-style runs)
  --enable-thinking      let chat templates that support it (Qwen3) open a thinking block
  --json                 print {"answers": [...], "stats": {...}} on stdout
  --model, --tokenizer, --weights, --kv-dtype, --temperature, --top-p, --top-k, --seed as above (greedy by default)

Examples:
  kvpress generate --context-file examples/story.txt --question "What did Lily find under the tree?" --press knorm --ratio 0.5
  kvpress generate --context-file examples/story.txt --question "Who lost his ball?" --question "What did Mom make?" --press snapkv --ratio 0.3 --press-option windowSize=16 --json`;

/** Runs the context mode of `kvpress generate` on already-parsed flags. */
export async function runGenerateContext(values: Values, io: CommandIO): Promise<number> {
  const file = str(values['context-file']);
  if (file === undefined) throw new UsageError('--question needs --context-file FILE (the context it asks about)');
  if (values.prompt !== undefined) throw new UsageError('--prompt and --context-file are exclusive: the context mode asks --question about the file');
  const sampling = samplingFromFlags(values);
  const maxNewTokens = num(values['max-new-tokens'], 'max-new-tokens', { min: 0, integer: true }) ?? 50;
  const maxContextLength = num(values['max-context-length'], 'max-context-length', { min: 1, integer: true });
  const context = readContext(file);
  const questions = (values.question as string[] | undefined) ?? [''];
  const press = pressFromFlags(values);
  const model = await loadModel(str(values.model), { tokenizer: str(values.tokenizer), backend: io.backend(), weights: weightsFlag(values), kvDtype: kvDtypeFlag(values['kv-dtype']) });
  if (!model.tokenizer) throw noTokenizer(str(values.model));
  const json = values.json === true;
  const bar = new ProgressBar(io, 'compressing the context', 'layers');
  const showQuestions = questions.length > 1 || questions[0] !== '';
  // Each answer is headed by its question, printed when the answer's first token arrives.
  let announced = -1;
  const announce = (upTo: number) => {
    for (let q = announced + 1; q <= upTo; q++) io.out(`${q > 0 ? '\n\n' : ''}Q: ${questions[q]}\nA: `);
    announced = Math.max(announced, upTo);
  };

  const r = new Pipeline(model).run({
    context, questions, press, sampling, maxContextLength, maxNewTokens,
    answerPrefix: str(values['answer-prefix']),
    queryAware: values['query-aware'] === true,
    enableThinking: values['enable-thinking'] === true,
    onLayer: (done, total) => bar.update(done, total),
    onToken: json ? undefined : (e) => {
      if (showQuestions) announce(e.question);
      io.out(e.text);
    },
  });
  if (r.stats.truncatedFrom !== null) io.err(`kvpress generate: warning: the context was truncated from ${r.stats.truncatedFrom} to ${r.stats.contextTokens} tokens\n`);
  if (json) {
    io.out(JSON.stringify({ answers: r.answers, stats: r.stats }) + '\n');
    return 0;
  }
  if (showQuestions) announce(questions.length - 1);
  io.out('\n\n' + formatStats(r.stats));
  return 0;
}

/** --temperature/--top-p/--top-k/--seed, checked as `kvpress generate` checks them. */
export function samplingFromFlags(values: Values): SamplingOptions {
  const topP = num(values['top-p'], 'top-p', { min: 0, max: 1 }) ?? 1;
  if (topP === 0) throw new UsageError('--top-p must be in (0, 1], got "0"');
  return {
    temperature: num(values.temperature, 'temperature', { min: 0 }) ?? 0,
    topP,
    topK: num(values['top-k'], 'top-k', { min: 0, integer: true }) ?? 0,
    seed: num(values.seed, 'seed', { min: 0, integer: true }),
  };
}

export function readContext(path: string): string {
  if (!existsSync(path)) throw new UsageError(`${path}: no such file`);
  if (statSync(path).isDirectory()) throw new UsageError(`${path}: is a directory, not a context file`);
  const text = readFileSync(path, 'utf8');
  if (text.trim() === '') throw new UsageError(`${path}: the context is empty`);
  return text;
}
