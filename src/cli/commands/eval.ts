import { KV_DTYPES, type KvDtype } from '../../cache/format.js';
import { DEFAULT_RATIOS, parsePressOption, parseRatios, parseShard, parseTargetSizes, type EvalProgress } from '../../eval/options.js';
import { runEval } from '../../eval/runner.js';
import { num, parse, str, UsageError, threadsFlag, checkOutputDir } from '../args.js';
import type { Command, CommandIO } from '../command.js';

function formatEta(ms: number | null): string {
  if (ms === null) return '--';
  const s = Math.round(ms / 1000);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/**
 * One redrawn stderr line (the style of cli/progress.ts, plus the run and an ETA over the
 * whole grid), at most every 100 ms.
 */
function progressBar(io: CommandIO): { draw(p: EvalProgress): void; clear(): void } {
  const width = 24;
  let drawnAt = -Infinity, drawn = false;
  return {
    draw(p) {
      const t = performance.now();
      if (t - drawnAt < 100) return;
      const frac = (p.runsDone + (p.items ? p.item / p.items : 1)) / p.runsTotal;
      const filled = Math.round(frac * width);
      io.err(`\reval [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(100 * frac).toFixed(0)}% · run ${p.runsDone + 1}/${p.runsTotal} ` +
        `${p.run.press}@${p.run.ratio} item ${p.item}/${p.items} · ETA ${formatEta(p.etaMs)}\x1b[K`);
      drawn = true;
      drawnAt = t;
    },
    clear() {
      if (drawn) io.err('\r\x1b[K');
      drawn = false;
      drawnAt = -Infinity;
    },
  };
}

export const evalCommand: Command = {
  name: 'eval',
  summary: 'evaluate presses × compression ratios on a dataset (resumable, shardable)',
  usage: `kvpress eval --dataset NAME --press P1,P2,... [options]

Runs the no-press baseline and every press at every ratio; each run is written to
DIR/<dataset>__<model>__<press>__<ratio>/ (predictions.jsonl, config.json, metrics.json).
Complete runs (metrics.json present) are skipped, so an interrupted grid resumes.
Every name \`kvpress presses\` lists is accepted, wrappers over scorers included (chunkkv_snapkv);
a press that cannot be built (a calibration file not given) is refused before anything runs.
On continuation and the recall sets, decoding presses (nothing is generated) and presses that
read a question (finch: the items have none) are skipped with a note in the report; a press
that sets its own budget (sim_layer_kv, dms_…) runs once, at ratio 0, with its achieved ratio.

Datasets:
  continuation     story continuation fidelity: KL and NLL increase vs the uncompressed model
  name_recall      top-1 recall of a story character's name after compression (template stories)
  sampled_recall   the same protocol on stories the model samples itself (temperature 1, seeded),
                   cut before a later mention of a name introduced early ("named X")
  ruler            RULER synthetic tasks generated for the model's tokenizer
  niah             needle in a haystack at depths 0, 10, …, 100 %
  jsonl:PATH       a local JSONL file in the Python kvpress dataset format

Options:
  --dataset NAME            one of the datasets above (required)
  --press P1,P2,...         presses to evaluate (required; \`kvpress presses\` lists them)
  --ratios R1,R2,...        compression ratios in [0, 1) (default ${DEFAULT_RATIOS.join(',')})
  --target-sizes N1,N2,...  decoding presses (those with a targetSize option, e.g. decoding_expected_attention):
                            entries per KV head after each compression, one run per size instead of
                            per ratio; a size or compressionInterval that the task's answers never
                            reach is refused
  --kv-dtypes T1,T2,...     KV cache types of the runs: f32, f16, bf16, q8_0, q4_0 (default f32); the grid
                            is repeated per type and the report plots quality against KV bytes per token
  --kv-dtype T              the same for one type
  --model PATH              llama2.c .bin, .gguf or Hugging Face directory (default: embedded stories260K)
  --limit N                 items per run (continuation 100, name_recall and sampled_recall 200; ruler: per task, 10)
  --output DIR              results folder (default results/)
  --shard i/n               run only every n-th run of the grid, starting at the i-th (1 ≤ i ≤ n);
                            machines sharing DIR split the grid, \`kvpress report\` merges it
  --press-option K=V        press option for every press that has it, or PRESS.K=V for one;
                            repeatable
  --context-fraction F      continuation and recall sets: share of the tokens compressed (default 0.6)
  --context-length N        ruler/niah: target context length in tokens (default min(4096, window))
  --query-aware             ruler/niah/jsonl: the question is appended to the compressed context
  --seed S                  dataset and random-press seed (default 42)
  --threads T               kernel threads (default: the backend's; 1 is fastest for tiny models)

Examples:
  kvpress eval --dataset continuation --press knorm,expected_attention --limit 20
  kvpress eval --dataset name_recall --press snapkv --ratios 0.5 --press-option windowSize=16
  kvpress eval --dataset continuation --press expected_attention,knorm --kv-dtypes f32,f16,q8_0,q4_0 --limit 30
  kvpress eval --dataset niah --press decoding_expected_attention --target-sizes 64,128 --press-option compressionInterval=8 --limit 3
  kvpress eval --dataset continuation --press knorm,random --shard 2/3 --output shared/results
  kvpress report results`,
  options: {
    dataset: { type: 'string' },
    press: { type: 'string' },
    ratios: { type: 'string' },
    'target-sizes': { type: 'string' },
    'kv-dtypes': { type: 'string' },
    'kv-dtype': { type: 'string' },
    model: { type: 'string' },
    limit: { type: 'string' },
    output: { type: 'string' },
    shard: { type: 'string' },
    'press-option': { type: 'string', multiple: true },
    'context-fraction': { type: 'string' },
    'context-length': { type: 'string' },
    'query-aware': { type: 'boolean' },
    seed: { type: 'string' },
    threads: { type: 'string' },
  },
  async run(argv, io) {
    const { values, positionals } = parse(argv, this.options);
    if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}" (options start with --)`);
    const dataset = str(values.dataset);
    if (dataset === undefined) throw new UsageError('--dataset is required (continuation, name_recall, sampled_recall, ruler, niah or jsonl:PATH)');
    const press = str(values.press);
    if (press === undefined) throw new UsageError('--press is required: a comma-separated list of presses (`kvpress presses` lists them)');
    const ratiosArg = str(values.ratios);
    const shardArg = str(values.shard);
    const threads = threadsFlag(values.threads);
    if (str(values.output) !== undefined) checkOutputDir('output', str(values.output) as string);
    const backend = io.backend();
    if (threads !== undefined) backend.setThreads(threads);
    const bar = io.isTTY ? progressBar(io) : null;
    const summary = await runEval({
      dataset,
      presses: press.split(',').map((p) => p.trim()).filter((p) => p !== ''),
      ratios: ratiosArg === undefined ? undefined : parseRatios(ratiosArg),
      targetSizes: str(values['target-sizes']) === undefined ? undefined : parseTargetSizes(str(values['target-sizes']) as string),
      kvDtypes: kvDtypesFlag(values['kv-dtypes'], values['kv-dtype']),
      model: str(values.model),
      limit: num(values.limit, 'limit', { min: 1, integer: true }),
      output: str(values.output),
      shard: shardArg === undefined ? undefined : parseShard(shardArg),
      pressOptions: ((values['press-option'] as string[] | undefined) ?? []).map(parsePressOption),
      contextFraction: num(values['context-fraction'], 'context-fraction', { min: 0, max: 1 }),
      contextLength: num(values['context-length'], 'context-length', { min: 1, integer: true }),
      queryAware: values['query-aware'] === true,
      seed: num(values.seed, 'seed', { min: 0, integer: true }),
      backend,
      onProgress: bar ? (p) => bar.draw(p) : undefined,
      onNotice: (line) => {
        bar?.clear();
        io.err(line + '\n');
      },
    });
    bar?.clear();
    const s = summary;
    io.err(`${s.ran.length} run${s.ran.length === 1 ? '' : 's'} done, ${s.skipped.length} already complete` +
      (s.mine.length < s.planned.length ? ` (this shard: ${s.mine.length} of ${s.planned.length})` : '') + ` → ${s.output}/\n`);
    return 0;
  },
};

/** --kv-dtypes T1,T2 or --kv-dtype T (not both); undefined = f32. */
function kvDtypesFlag(list: unknown, one: unknown): KvDtype[] | undefined {
  const l = str(list), o = str(one);
  if (l !== undefined && o !== undefined) throw new UsageError('give --kv-dtypes or --kv-dtype, not both');
  const v = l ?? o;
  if (v === undefined) return undefined;
  const types = v.split(',').map((t) => t.trim());
  for (const t of types) if (!(KV_DTYPES as readonly string[]).includes(t)) throw new UsageError(`--kv-dtypes: unknown KV cache type "${t}"; expected ${KV_DTYPES.join(', ')} (auto has no meaning here: the references are f32)`);
  if (new Set(types).size !== types.length) throw new UsageError(`--kv-dtypes has a repeated type: "${v}"`);
  return types as KvDtype[];
}
