import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { loadModel } from '../../model/load.js';
import { calibrate } from '../../presses/expected-attention-calibration.js';
import { calibrateDuoPatterns, writeDuoPatterns } from '../../presses/duo-attention.js';
import { calibrateLukvBudgets, writeLukvBudgets } from '../../presses/lukv.js';
import { writeQueryStats } from '../../presses/stats-format.js';
import { num, parse, str, UsageError, noTokenizer, checkOutputFile } from '../args.js';
import type { Command } from '../command.js';
import { ProgressBar } from '../progress.js';
import { calibrateKvzap, KVZAP_OPTIONS, KVZAP_USAGE } from './calibrate-kvzap.js';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';

export const calibrateCommand: Command = {
  name: 'calibrate',
  summary: 'compute query statistics, Q-Filters, DuoAttention head patterns (or, with kvzap, train KVzap surrogates) from local text files',
  usage: `kvpress calibrate --input F [--input F2 ...] --output STATS.{json,safetensors} [options]
       kvpress calibrate --input F [--input F2 ...] --duo-patterns DIR [options]

Runs the model over local text (no download) and writes, per layer and query head, the mean and
sample covariance of the pre-RoPE queries (for the expected_attention_stats press) and the
Q-Filters direction of the post-RoPE queries (for the qfilter press). The text of each file is
tokenized and cut into samples of --seq-len tokens, each starting with BOS; the first --n-sink
tokens of every sample are left out of the statistics.

Output format (by extension):
  .safetensors  F32 tensors query_mean [layers, heads, head_dim], query_cov [layers, heads,
                head_dim, head_dim], query_filters [layers, heads, head_dim]; metadata format =
                "kvpress-query-stats", version, model, nSink, tokens
  .json         {"format": "kvpress-query-stats", "version": 1, "model", "nSink", "tokens",
                 "numLayers", "numHeads", "headDim", "layers": [{"mean", "cov", "qfilter"}]}
  The Q-Filter of a head is −u, u the top right singular vector of its stacked post-RoPE queries
  oriented so that they project positively on it; the qfilter press scores −(filter · key).

With --lukv-budgets it writes LU-KV budget curves instead (.json only), for the lukv_<scorer>
presses: {"format": "kvpress-lukv-budgets", "version": 1, "model", "numLayers", "numKvHeads",
"samples", "tokens", "pruneRatios": number[99][layers][kvHeads]}, row i the fraction of each
head's entries to evict at compression ratio (i + 1)/100. Each sample's observed attention (per
entry, averaged over its queries and the KV group) is pooled over every layer and head; the
global top (1 − ratio) of the pool sets each head's share; samples are averaged.

Options:
  --input PATH           a text file, or a directory whose files are all read (repeatable)
  --output PATH          where to write the statistics (.json or .safetensors)
  --model PATH           llama2.c .bin, .gguf file or Hugging Face directory (default: embedded stories260K)
  --tokenizer PATH       tokenizer .bin for a llama2.c checkpoint (default: found beside it)
  --seq-len N            tokens per sample, BOS included (default: the model's context, at most 1024)
  --n-sink N             leading tokens of each sample left out (default 4)
  --max-samples N        stop after N samples (default: all the text)
  --duo-patterns DIR     also (or only) write DuoAttention head patterns for the duo_attention press:
                         DIR/config.json {"sink_size", "recent_size", "model", "length", "tokens"}
                         and DIR/full_attention_heads.tsv, one line per layer, one tab-separated
                         retrieval score in [0, 1] per KV head (the DuoAttention authors' layout,
                         so their attn_patterns/<model>/ directories load too). A head's score:
                         the mean pre-RoPE query and key of the text, placed at positions
                         0 … L − 1 with RoPE, the last query's attention over them, and the mean
                         of its cumulative curve from the oldest position (high = looks far back)
  --duo-length L         positions of that attention (default 500, kvpress's)
  --duo-sink N           sink tokens a streaming head keeps (default 128, kvpress's)
  --duo-recent N         recent tokens a streaming head keeps (default 256, kvpress's)
  --lukv-budgets         write LU-KV budget curves (see above) instead of query statistics

Examples:
  kvpress calibrate --input corpus/ --output stats.safetensors
  kvpress calibrate --input corpus/ --lukv-budgets --output budgets.json
  kvpress calibrate --input examples/story.txt --duo-patterns duo/ --duo-sink 4 --duo-recent 64
  kvpress scores --prompt-file examples/story.txt --press duo_attention --ratio 0.5 \\
      --press-option patterns=duo/ --json
  kvpress scores --prompt "Once upon a time" --press expected_attention_stats \\
      --press-option stats=stats.safetensors --ratio 0.5 --json
${KVZAP_USAGE}`,
  options: {
    input: { type: 'string', multiple: true },
    output: { type: 'string' },
    model: { type: 'string' },
    tokenizer: { type: 'string' },
    'seq-len': { type: 'string' },
    'n-sink': { type: 'string' },
    'max-samples': { type: 'string' },
    'duo-patterns': { type: 'string' },
    'duo-length': { type: 'string' },
    'duo-sink': { type: 'string' },
    'duo-recent': { type: 'string' },
    ...KVZAP_OPTIONS,
    'lukv-budgets': { type: 'boolean' },
  },
  async run(argv, io) {
    const { values, positionals } = parse(argv, this.options);
    if ((positionals[0] === 'kvzap' || positionals[0] === 'fast-kvzip') && positionals.length === 1) return calibrateKvzap(positionals[0], values, io, { listTextFiles, textSamples });
    if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}" (subcommands: kvzap, fast-kvzip)`);
    for (const k of Object.keys(KVZAP_OPTIONS)) if (values[k] !== undefined) throw new UsageError(`--${k} belongs to \`kvpress calibrate kvzap\` or \`fast-kvzip\``);
    const inputs = (values.input as string[] | undefined) ?? [];
    if (inputs.length === 0) throw new UsageError('--input is required (a text file or a directory)');
    const output = str(values.output), duo = str(values['duo-patterns']);
    if (output === undefined && duo === undefined) throw new UsageError('--output is required (a .json or .safetensors file), or --duo-patterns DIR');
    const ext = output === undefined ? undefined : extname(output).toLowerCase();
    if (output !== undefined) {
      if (ext !== '.json' && ext !== '.safetensors') throw new UsageError(`--output must end in .json or .safetensors, got "${output}"`);
      checkOutputFile('output', output);
    }
    const lukv = values['lukv-budgets'] === true;
    if (lukv && ext !== '.json') throw new UsageError(`--lukv-budgets writes JSON: --output must end in .json, got "${output ?? ''}"`);
    const duoLength = num(values['duo-length'], 'duo-length', { min: 1, integer: true }) ?? 500;
    const duoSink = num(values['duo-sink'], 'duo-sink', { min: 0, integer: true }) ?? 128;
    const duoRecent = num(values['duo-recent'], 'duo-recent', { min: 0, integer: true }) ?? 256;
    const nSink = num(values['n-sink'], 'n-sink', { min: 0, integer: true }) ?? 4;
    const maxSamples = num(values['max-samples'], 'max-samples', { min: 1, integer: true }) ?? Infinity;
    const files = inputs.flatMap(listTextFiles);

    const model = await loadModel(str(values.model), { tokenizer: str(values.tokenizer), backend: io.backend() });
    const tok = model.tokenizer;
    if (!tok) throw noTokenizer(str(values.model));
    const context = model.config.maxPositionEmbeddings;
    const seqLen = num(values['seq-len'], 'seq-len', { min: nSink + 2, max: context, integer: true }) ?? Math.min(context, 1024);
    if (seqLen < nSink + 2) throw new UsageError(`--seq-len ${seqLen} leaves no token beyond the ${nSink} sinks`);

    const samples = textSamples(files, tok, seqLen, maxSamples);
    if (samples.length === 0) throw new UsageError(`no text in ${inputs.join(', ')}`);

    const from = `${samples.length} samples from ${files.length} file${files.length > 1 ? 's' : ''}`;
    if (output !== undefined && lukv) {
      const bar = new ProgressBar(io, 'calibrate', 'samples');
      const budgets = calibrateLukvBudgets(model, samples, (done, total) => bar.update(done, total));
      writeLukvBudgets(output, budgets);
      io.err(`[LU-KV budget curves from ${samples.length} samples, ${budgets.tokens} tokens → ${output}]\n`);
    } else if (output !== undefined) {
      const bar = new ProgressBar(io, 'calibrate', 'samples');
      const stats = calibrate(model, samples, { nSink, onSample: (done, total) => bar.update(done, total) });
      writeQueryStats(output, stats);
      io.err(`[${from}, ${stats.tokens} query vectors per head → ${output}]\n`);
    }
    if (duo !== undefined) {
      const bar = new ProgressBar(io, 'duo patterns', 'samples');
      const patterns = calibrateDuoPatterns(model, samples, { nSink, length: duoLength, sinkSize: duoSink, recentSize: duoRecent, onSample: (done, total) => bar.update(done, total) });
      try {
        writeDuoPatterns(duo, patterns, { model: model.source, length: duoLength, tokens: samples.reduce((n, s) => n + Math.max(0, s.length - nSink), 0) });
      } catch (e) {
        throw new UsageError(`--duo-patterns ${duo}: cannot write (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
      }
      io.err(`[${from}: DuoAttention head patterns (${patterns.scores.length} layers × ${patterns.scores[0].length} KV heads) → ${duo}]\n`);
    }
    return 0;
  },
};

/** The text of `files` tokenized and cut into samples of seqLen tokens, each starting with BOS. */
export function textSamples(files: readonly string[], tok: Tokenizer, seqLen: number, maxSamples: number): number[][] {
  const bos = tok.bosId === null ? [] : [tok.bosId];
  const body = seqLen - bos.length;
  const samples: number[][] = [];
  for (const f of files) {
    const ids = tok.encode(readFileSync(f, 'utf8'), { bos: false });
    for (let i = 0; i < ids.length && samples.length < maxSamples; i += body) samples.push([...bos, ...ids.slice(i, i + body)]);
  }
  return samples;
}

/** A file, or the regular non-hidden files of a directory (sorted, not recursive). */
export function listTextFiles(path: string): string[] {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new UsageError(`${path}: no such file or directory`);
  }
  if (!st.isDirectory()) return [path];
  const files = readdirSync(path).filter((n) => !n.startsWith('.')).sort().map((n) => join(path, n)).filter((p) => statSync(p).isFile());
  if (files.length === 0) throw new UsageError(`${path}: the directory holds no file`);
  return files;
}
