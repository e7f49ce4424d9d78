import { kvDtypeFlag, kvDtypeOption, kvDtypeUsage } from './kv-dtype.js';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { loadModel } from '../../model/load.js';
import { isDecodingPress, Pipeline, pipelineStats, type AnswerOptions, type CompressedContext } from '../../pipeline/pipeline.js';
import type { AnswerStats } from '../../pipeline/stats.js';
import { formatBytes, formatStats } from '../../pipeline/stats.js';
import type { Press } from '../../presses/press.js';
import { weightsFlag, num, parse, str, UsageError, noTokenizer } from '../args.js';
import type { Command, CommandIO } from '../command.js';
import { ProgressBar } from '../progress.js';
import { readContext, samplingFromFlags } from './generate-context.js';
import { pressFlags, pressFromFlags } from './presses.js';

/** Positions a truncated context leaves for each question (besides the answer's). */
const QUESTION_ROOM = 32;

const HELP = 'Ask a question about the context. /stats shows what the compression saved, /quit exits.';

export const chatCommand: Command = {
  name: 'chat',
  summary: 'compress a context once, then answer questions about it interactively',
  usage: `kvpress chat --context-file FILE [--press NAME --ratio R] [options]

Compresses the context once with the press, then reads questions line by line and answers each
from the compressed KV cache (the cache is restored after every answer, so turns do not see each
other). Commands: /stats prints the statistics so far, /quit (or Ctrl-D) exits.

Options:
  --context-file FILE    the context, read as UTF-8
  --press NAME           the press compressing the context (kvpress presses lists them; default none)
  --ratio R              fraction of the context's KV entries to remove, in [0, 1) (default 0)
  --press-option K=V     a press option, e.g. windowSize=32 (repeatable)
  --model PATH           llama2.c .bin, .gguf file or Hugging Face directory (default: embedded stories260K)
  --tokenizer PATH       tokenizer .bin for a llama2.c checkpoint (default: found beside it)
  --answer-prefix TEXT   text every answer starts from
  --max-new-tokens N     tokens per answer at most (default 50)
  --max-context-length N keep at most N context tokens (default: the window minus room for a
                         32-token question and the answer)
  --enable-thinking      let chat templates that support it (Qwen3) open a thinking block
  --weights W            f32, bf16, q8_0 or q4_k: hold every matrix in this format, for prefill and decode
                         (default: as the checkpoint stores it; bf16 halves weight memory, q8_0 and q4_k quantize it)
  --decode-weights W     former name of --weights (still accepted)
${kvDtypeUsage}
  --temperature T        0 = greedy (default 0); --top-p, --top-k, --seed as for generate

Examples:
  kvpress chat --context-file examples/story.txt --press knorm --ratio 0.5
  kvpress chat --context-file report.txt --model ./Qwen3-0.6B --press expected_attention --ratio 0.75`,
  options: {
    'context-file': { type: 'string' },
    ...pressFlags,
    model: { type: 'string' },
    weights: { type: 'string' },
    'decode-weights': { type: 'string' },
    ...kvDtypeOption,
    tokenizer: { type: 'string' },
    'answer-prefix': { type: 'string' },
    'max-new-tokens': { type: 'string' },
    'max-context-length': { type: 'string' },
    'enable-thinking': { type: 'boolean' },
    temperature: { type: 'string' },
    'top-p': { type: 'string' },
    'top-k': { type: 'string' },
    seed: { type: 'string' },
  },
  async run(argv, io) {
    const { values } = parse(argv, this.options);
    const file = str(values['context-file']);
    if (file === undefined) throw new UsageError('--context-file is required');
    const context = readContext(file);
    const press = pressFromFlags(values);
    if (press && isDecodingPress(press)) {
      throw new UsageError(`${press.name} is a decoding press: it compresses while answering, so one context cannot serve several turns; use kvpress generate --context-file with one --question`);
    }
    const maxNewTokens = num(values['max-new-tokens'], 'max-new-tokens', { min: 0, integer: true }) ?? 50;
    const answer: AnswerOptions = { answerPrefix: str(values['answer-prefix']), maxNewTokens, sampling: samplingFromFlags(values) };
    const maxContextLength = num(values['max-context-length'], 'max-context-length', { min: 1, integer: true });
    const model = await loadModel(str(values.model), { tokenizer: str(values.tokenizer), backend: io.backend(), weights: weightsFlag(values, io.err), kvDtype: kvDtypeFlag(values['kv-dtype']) });
    if (!model.tokenizer) throw noTokenizer(str(values.model));

    const bar = new ProgressBar(io, 'compressing the context', 'layers');
    const compressed = new Pipeline(model).compress(context, {
      press, maxContextLength,
      enableThinking: values['enable-thinking'] === true,
      // Room for the turns when a long context is truncated: a short question and a full answer.
      reserve: QUESTION_ROOM + maxNewTokens,
      onLayer: (done, total) => bar.update(done, total),
    });
    return chatSession(compressed, press, answer, process.stdin, process.stdout, io);
  },
};

/**
 * The interactive loop over a compressed context: one question per line, answered from the
 * compressed cache. Returns the exit code (0 at /quit or end of input).
 */
export async function chatSession(compressed: CompressedContext, press: Press | null, opts: AnswerOptions, input: Readable, output: Writable, io: CommandIO): Promise<number> {
  const answers: AnswerStats[] = [];
  const stats = () => pipelineStats(press, [compressed.measure], answers);
  const s = stats();
  if (s.truncatedFrom !== null) io.err(`kvpress chat: warning: the context was truncated from ${s.truncatedFrom} to ${s.contextTokens} tokens\n`);
  io.out(`Context: ${s.contextTokens} tokens, KV cache ${formatBytes(s.cacheBytesBefore)} → ${formatBytes(s.cacheBytesAfter)} with ${s.press ?? 'no press'} (${(100 * s.achievedRatio).toFixed(1)}% removed; ${s.kvDtype}, ${formatBytes(s.cacheAllocatedBytesAfter)} allocated) in ${(s.prefillMs / 1000).toFixed(2)} s.\n${HELP}\n`);

  const rl = createInterface({ input, output, terminal: (input as { isTTY?: boolean }).isTTY === true, prompt: '> ' });
  rl.on('SIGINT', () => rl.close());
  rl.prompt();
  for await (const raw of rl) {
    const line = raw.trim();
    if (line === '/quit' || line === '/exit') break;
    if (line === '/stats') io.out(formatStats(stats()));
    else if (line === '/help') io.out(HELP + '\n');
    else if (line.startsWith('/')) io.out(`unknown command ${line.split(/\s/)[0]} (commands: /stats, /quit, /help)\n`);
    else if (line !== '') {
      try {
        const a = compressed.answer(line, { ...opts, onToken: (e) => io.out(e.text) }, answers.length);
        answers.push(a.stats);
        io.out('\n');
      } catch (e) {
        io.err(`kvpress chat: ${(e as Error).message}\n`);
      }
    }
    rl.prompt();
  }
  rl.close();
  return 0;
}
