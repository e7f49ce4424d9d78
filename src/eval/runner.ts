/**
 * The evaluation grid: one dataset, every press × compression ratio plus the no-press
 * baseline, each run written to its own folder
 *
 *   DIR/<dataset>__<model>__<press>__<ratio>[__query_aware]/
 *     predictions.jsonl   one JSON object per item
 *     config.json         what was run
 *     metrics.json        the scores — written last, so a run is complete iff it exists
 *
 * Runs are independent: complete ones are skipped (resume), and `shard i/n` takes every n-th
 * run of the plan so machines sharing DIR split a grid without coordination.
 */
import { KV_DTYPES, type KvDtype } from '../cache/format.js';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { defaultModelPath, loadModel } from '../model/load.js';
import type { Model } from '../model/model.js';
import { presses as registry } from '../presses/index.js';
import type { Press } from '../presses/press.js';
import { closeMatches } from '../presses/registry.js';
import { DEFAULT_CONTEXT_FRACTION } from './fidelity.js';
import { cannotCompress, DEFAULT_LIMITS, makeTask, NIAH_DEPTHS } from './tasks.js';

/** The baseline run's press name; it always runs, at ratio 0. */
export const NO_PRESS = 'no_press';
export const DEFAULT_RATIOS: readonly number[] = [0.25, 0.5, 0.75, 0.875];
export const DEFAULT_SEED = 42;
export const DATASETS = ['continuation', 'name_recall', 'sampled_recall', 'ruler', 'niah', 'jsonl:PATH'] as const;

/** How the report shows one score. */
export interface ScoreInfo {
  label: string;
  /** Absent for descriptive numbers (token counts, achieved ratios). */
  better?: 'higher' | 'lower';
  /** Drawn as a plot (the headline scores); every score gets a table. */
  plot: boolean;
  /** Short y-axis label for the plot (default: the label). */
  axis?: string;
  /** Fixed plot range, e.g. [0, 100] for percentages. */
  range?: [number, number];
}

/** The content of metrics.json. */
export interface RunMetrics {
  dataset: string;
  model: string;
  press: string;
  compressionRatio: number;
  queryAware: boolean;
  /** KV cache type of the run; absent in runs written before the axis existed (f32). */
  kvDtype?: KvDtype;
  /** A decoding press's target size (entries per KV head after each compression); absent for the others. */
  targetSize?: number;
  /**
   * True when the press sets its own budget (a threshold: sim_layer_kv, dms_…) and took no ratio:
   * compressionRatio is 0 and the achieved_ratio score says what it removed.
   */
  ownBudget?: boolean;
  items: number;
  scores: Record<string, number>;
  scoreInfo: Record<string, ScoreInfo>;
  seconds: number;
}

/** One cell of the grid. `index` is its place in the full plan (the shard key). */
export interface RunSpec {
  index: number;
  press: string;
  ratio: number;
  /** Element type of the compressed run's KV cache (the references stay f32). */
  kvDtype: KvDtype;
  /** Entries per KV head a decoding press compresses to (presses with a targetSize option only). */
  targetSize?: number;
  dir: string;
}

/** A press option from the command line: `key=value` for every press that has `key`, or `press.key=value`. */
export interface PressOptionArg {
  press?: string;
  key: string;
  value: string;
}

export interface EvalOptions {
  /** continuation, name_recall, sampled_recall, ruler, niah or jsonl:PATH. */
  dataset: string;
  presses: readonly string[];
  ratios?: readonly number[];
  /**
   * KV cache types of the compressed runs (default ['f32']): the grid is repeated per type, each
   * with its own no-press run; the uncompressed references stay f32, so KL and ΔNLL measure
   * type and press together.
   */
  kvDtypes?: readonly KvDtype[];
  /**
   * Target sizes (entries per KV head after each compression) of the presses that compress to a
   * target while generating (those with a targetSize option, e.g. decoding_expected_attention):
   * such a press runs once per target size instead of per ratio (per ratio × target size when it
   * also compresses the prompt). Required when one of them is among `presses`.
   */
  targetSizes?: readonly number[];
  /** Model path (llama2.c .bin or Hugging Face directory); default the embedded stories260K. */
  model?: string;
  /** Items per run (RULER: samples per task). */
  limit?: number;
  /** Default "results". */
  output?: string;
  /** 1-based: shard `index` of `count` runs plan entries index, index+count, … (0-based: index−1, …). */
  shard?: { index: number; count: number };
  pressOptions?: readonly PressOptionArg[];
  /** continuation / name_recall / sampled_recall: share of the tokens compressed (default 0.6). */
  contextFraction?: number;
  /** ruler / niah: target context length in tokens (default min(4096, the model's window)). */
  contextLength?: number;
  /** ruler / niah / jsonl: append the question to the context before compression. */
  queryAware?: boolean;
  seed?: number;
  backend?: Backend;
  onProgress?: (p: EvalProgress) => void;
  /** Notices worth a line on stderr (skipped presses, finished runs). */
  onNotice?: (line: string) => void;
}

export interface EvalProgress {
  run: RunSpec;
  /** Runs finished by this invocation, and runs it will execute in all. */
  runsDone: number;
  runsTotal: number;
  item: number;
  items: number;
  elapsedMs: number;
  /** Estimated time left, null until the first item is done. */
  etaMs: number | null;
}

export interface EvalSummary {
  output: string;
  /** The whole grid, this shard's part of it, what was already complete and what ran now. */
  planned: RunSpec[];
  mine: RunSpec[];
  skipped: RunSpec[];
  ran: RunSpec[];
  /**
   * Presses left out of a continuation or recall set, each with a note saying why: decoding presses
   * (these tasks generate nothing) and presses that read the question (their items have none).
   */
  excluded: string[];
}

/** A mistake in what was asked (unknown dataset or press, bad ratio or shard): one line, exit 2. */
export class EvalError extends Error {}

// ───────────────────────────── names and the plan ─────────────────────────────

/** "0.25", "0.875", "0.00": at least two decimals (as the Python library's .2f), never lossy. */
export function formatRatio(r: number): string {
  let d = 2;
  while (d < 6 && Number(r.toFixed(d)) !== r) d++;
  return r.toFixed(d);
}

/** A name safe in a folder name (the path separators and oddities become "-"). */
function slug(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^-+|-+$/g, '') || 'x';
}

/** The model as named in run folders: the checkpoint's file name without extension, or the directory's name. */
export function modelName(path: string | undefined): string {
  const p = path ?? defaultModelPath();
  const isDir = existsSync(p) && statSync(p).isDirectory();
  return slug(isDir ? basename(p.replace(/[/\\]+$/, '')) : basename(p, extname(p)));
}

export interface DatasetRef {
  kind: 'continuation' | 'name_recall' | 'sampled_recall' | 'ruler' | 'niah' | 'jsonl';
  /** As it appears in folder names: jsonl:data/hotpotqa.jsonl → jsonl-hotpotqa. */
  label: string;
  path?: string;
}

export function parseDataset(name: string): DatasetRef {
  if (name.startsWith('jsonl:')) {
    const path = name.slice('jsonl:'.length);
    if (path === '') throw new EvalError('jsonl dataset needs a file: --dataset jsonl:PATH');
    if (!existsSync(path)) throw new EvalError(`${path}: no such dataset file`);
    return { kind: 'jsonl', label: `jsonl-${slug(basename(path, extname(path)))}`, path };
  }
  if (name === 'continuation' || name === 'name_recall' || name === 'sampled_recall' || name === 'ruler' || name === 'niah') return { kind: name, label: name };
  const close = closeMatches(name, ['continuation', 'name_recall', 'sampled_recall', 'ruler', 'niah', 'jsonl']);
  throw new EvalError(`unknown dataset "${name}"${close.length ? ` (did you mean ${close.join(', ')}?)` : ''}; datasets: ${DATASETS.join(', ')}`);
}

/**
 * The run's folder; a decoding press's target size adds `__target<N>`, a cache type other than
 * f32 `__kv_<type>` (f32 runs keep their old names).
 */
export function runDirName(dataset: string, model: string, press: string, ratio: number, queryAware = false, kvDtype: KvDtype = 'f32', targetSize?: number): string {
  return `${dataset}__${model}__${press}__${formatRatio(ratio)}${targetSize === undefined ? '' : `__target${targetSize}`}`
    + `${queryAware ? '__query_aware' : ''}${kvDtype === 'f32' ? '' : `__kv_${kvDtype}`}`;
}

/**
 * Per KV cache type: the baseline first, then each press at each ratio, in the order given; a
 * press in `ratioFree` (it sets its own budget) runs once, at ratio 0.
 */
export function planRuns(
  dataset: string, model: string, pressNames: readonly string[], ratios: readonly number[], queryAware = false, kvDtypes: readonly KvDtype[] = ['f32'],
  targetSizes: readonly number[] = [], ratioFree: ReadonlySet<string> = new Set(),
): RunSpec[] {
  const cellsOf = (press: string, kvDtype: KvDtype): { press: string; ratio: number; kvDtype: KvDtype; targetSize?: number }[] => {
    if (ratioFree.has(press)) return [{ press, ratio: 0, kvDtype }];
    if (targetSizes.length === 0 || !takesTargetSize(press)) return ratios.map((ratio) => ({ press, ratio, kvDtype }));
    // A press that compresses only while generating takes no ratio; one that also compresses the prompt takes both.
    const own = registry.get(press).phase === 'both' ? ratios : [0];
    return own.flatMap((ratio) => targetSizes.map((targetSize) => ({ press, ratio, kvDtype, targetSize })));
  };
  const cells = kvDtypes.flatMap((kvDtype) => [{ press: NO_PRESS, ratio: 0, kvDtype }, ...pressNames.flatMap((press) => cellsOf(press, kvDtype))]);
  return cells.map((c, index) => ({ index, ...c, dir: runDirName(dataset, model, c.press, c.ratio, queryAware, c.kvDtype, 'targetSize' in c ? c.targetSize : undefined) }));
}

/** Shard i of n (1-based) takes the runs whose plan index ≡ i − 1 (mod n). */
export function shardRuns(runs: readonly RunSpec[], shard: { index: number; count: number } | undefined): RunSpec[] {
  if (!shard) return [...runs];
  return runs.filter((r) => r.index % shard.count === shard.index - 1);
}

/** Parses "i/n" with 1 ≤ i ≤ n. */
export function parseShard(s: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(s.trim());
  const index = m ? Number(m[1]) : NaN, count = m ? Number(m[2]) : NaN;
  if (!m || !(count >= 1) || !(index >= 1 && index <= count)) throw new EvalError(`--shard must be i/n with 1 ≤ i ≤ n (e.g. 1/4), got "${s}"`);
  return { index, count };
}

/** Parses "256,1024": distinct integers ≥ 1. */
export function parseTargetSizes(s: string): number[] {
  const parts = s.split(',').map((p) => p.trim());
  const sizes = parts.map((p) => (/^\d+$/.test(p) ? Number(p) : NaN));
  const bad = parts.find((_, i) => !(sizes[i] >= 1));
  if (bad !== undefined) throw new EvalError(`--target-sizes must be comma-separated integers ≥ 1, got "${bad}" in "${s}"`);
  if (new Set(sizes).size !== sizes.length) throw new EvalError(`--target-sizes has a repeated value: "${s}"`);
  return sizes;
}

/** Parses "0.25,0.5": distinct numbers in [0, 1). */
export function parseRatios(s: string): number[] {
  const parts = s.split(',').map((p) => p.trim());
  const ratios = parts.map((p) => (p === '' ? NaN : Number(p)));
  const bad = parts.find((_, i) => !(ratios[i] >= 0 && ratios[i] < 1));
  if (bad !== undefined) throw new EvalError(`--ratios must be comma-separated numbers in [0, 1), got "${bad}" in "${s}"`);
  if (new Set(ratios).size !== ratios.length) throw new EvalError(`--ratios has a repeated value: "${s}"`);
  return ratios;
}

/** Parses "key=value" or "press.key=value". */
export function parsePressOption(s: string): PressOptionArg {
  const m = /^(?:([A-Za-z0-9_]+)\.)?([A-Za-z][A-Za-z0-9_]*)=(.*)$/.exec(s);
  if (!m) throw new EvalError(`--press-option must be key=value or press.key=value, got "${s}"`);
  return { press: m[1], key: m[2], value: m[3] };
}

// ───────────────────────────── files ─────────────────────────────

/** Writes through a temporary file and a rename, so readers never see half a file. */
function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

const json = (v: unknown): string => JSON.stringify(v, (_, x) => (typeof x === 'number' && !Number.isFinite(x) ? null : x), 2) + '\n';

/** A run is complete iff its metrics.json exists (it is written last). */
export function isComplete(output: string, run: RunSpec): boolean {
  return existsSync(join(output, run.dir, 'metrics.json'));
}

/** What must match for a complete run to be reused. */
interface Settings {
  limit: number | null;
  seed: number;
  contextFraction: number | null;
  contextLength: number | null;
  pressOptions: Record<string, string>;
}

function checkSameSettings(output: string, run: RunSpec, want: Settings): void {
  const file = join(output, run.dir, 'config.json');
  let have: Settings;
  try {
    have = (JSON.parse(readFileSync(file, 'utf8')) as { settings: Settings }).settings;
  } catch (e) {
    throw new EvalError(`${file}: unreadable (${(e as Error).message.split('\n')[0]}); delete the run folder to redo it`);
  }
  const diff = (Object.keys(want) as (keyof Settings)[]).filter((k) => JSON.stringify(have?.[k] ?? null) !== JSON.stringify(want[k]));
  if (diff.length) {
    const what = diff.map((k) => `${k} ${JSON.stringify(have?.[k] ?? null)} ≠ ${JSON.stringify(want[k])}`).join(', ');
    throw new EvalError(`${join(output, run.dir)} is complete but was run with other settings (${what}); use another --output or delete it`);
  }
}

// ───────────────────────────── presses ─────────────────────────────

/** Each press's options: unscoped ones go to every press that declares them. */
function resolvePressOptions(pressNames: readonly string[], args: readonly PressOptionArg[]): Map<string, Record<string, string>> {
  const out = new Map(pressNames.map((p) => [p, {} as Record<string, string>]));
  for (const a of args) {
    if (a.press !== undefined) {
      const o = out.get(a.press);
      if (!o) throw new EvalError(`--press-option ${a.press}.${a.key}: press "${a.press}" is not among --press (${pressNames.join(', ')})`);
      o[a.key] = a.value;
      continue;
    }
    const takers = pressNames.filter((p) => a.key in registry.get(p).options);
    if (takers.length === 0) throw new EvalError(`--press-option ${a.key}: none of ${pressNames.join(', ')} has an option "${a.key}"`);
    for (const p of takers) out.get(p)![a.key] = a.value;
  }
  return out;
}

function createPress(name: string, ratio: number, options: Record<string, string>, seed: number, targetSize?: number): Press {
  const entry = registry.get(name);
  // Random presses draw from the run's seed unless told otherwise, so reruns match.
  const withSeed = 'seed' in entry.options && !('seed' in options) ? { ...options, seed: String(seed) } : options;
  return registry.create(name, ratio, targetSize === undefined ? withSeed : { ...withSeed, targetSize: String(targetSize) });
}

/** Presses that compress to a target size while generating (their registry entry has a targetSize option). */
export function takesTargetSize(name: string): boolean {
  return 'targetSize' in registry.get(name).options;
}

/** Presses that act while generating, as their registry entry declares (see PressPhase). */
export function isDecodingName(name: string): boolean {
  const phase = registry.get(name).phase ?? 'prefill';
  return phase === 'decoding' || phase === 'both';
}

/**
 * Every name `kvpress presses` accepts, registered or composed (a wrapper's prefix before any
 * scorer's name: chunkkv_snapkv, cam_knorm); an unknown one is refused with the registry's reason.
 */
function checkPressNames(names: readonly string[]): void {
  if (names.length === 0) throw new EvalError('--press needs at least one press name');
  for (const n of names) {
    if (n === NO_PRESS) throw new EvalError(`"${NO_PRESS}" is the baseline and always runs; list only presses in --press`);
    try {
      registry.get(n);
    } catch (e) {
      throw new EvalError((e as Error).message);
    }
  }
  if (new Set(names).size !== names.length) throw new EvalError(`--press lists a press twice: ${names.join(',')}`);
}

/** True when the press, or a press it wraps, compresses the context with its question (Finch). */
export function readsQuestion(press: Press): boolean {
  for (let p: Press | undefined = press; p; p = (p as { inner?: Press }).inner) if (typeof p.setQuestionLength === 'function') return true;
  return false;
}

/**
 * Builds `name` at every ratio before any work starts. A press that is built at ratio 0 but
 * refuses every other ratio decides its own budget (a threshold: sim_layer_kv, dms_…) and runs
 * once, at ratio 0, with its achieved ratio reported; any other refusal is the press's own reason.
 */
function probePress(name: string, ratios: readonly number[], options: Record<string, string>, seed: number, targetSize?: number): { press: Press; ratioFree: boolean } {
  const build = (r: number): Press => {
    try {
      return createPress(name, r, options, seed, targetSize);
    } catch (e) {
      throw new EvalError((e as Error).message);
    }
  };
  const nonzero = ratios.filter((r) => r > 0);
  if (nonzero.length === 0) return { press: build(0), ratioFree: false };
  let first: Press;
  try {
    first = createPress(name, nonzero[0], options, seed, targetSize);
  } catch (e) {
    let atZero: Press;
    try {
      atZero = createPress(name, 0, options, seed, targetSize);
    } catch {
      throw new EvalError((e as Error).message);
    }
    return { press: atZero, ratioFree: true };
  }
  for (const r of nonzero.slice(1)) build(r);
  return { press: first, ratioFree: false };
}

// ───────────────────────────── the grid ─────────────────────────────

function formatMs(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/**
 * Runs this shard's incomplete runs of the grid. The model is loaded only when something is
 * left to run; uncompressed reference passes are shared by every run of the invocation.
 */
export async function runEval(opts: EvalOptions): Promise<EvalSummary> {
  const ds = parseDataset(opts.dataset);
  const ratios = opts.ratios ?? DEFAULT_RATIOS;
  if (ratios.length === 0) throw new EvalError('--ratios needs at least one ratio');
  for (const r of ratios) if (!(r >= 0 && r < 1)) throw new EvalError(`compression ratio must be in [0, 1), got ${r}`);
  checkPressNames(opts.presses);
  const fidelity = ds.kind === 'continuation' || ds.kind === 'name_recall' || ds.kind === 'sampled_recall';
  if (fidelity && opts.contextLength !== undefined) throw new EvalError('--context-length applies to ruler and niah; continuation and the recall sets use whole stories');
  if (!fidelity && opts.contextFraction !== undefined) throw new EvalError('--context-fraction applies to continuation, name_recall and sampled_recall');
  if (fidelity && opts.queryAware) throw new EvalError('--query-aware applies to ruler, niah and jsonl datasets (the fidelity tasks have no question)');
  if (opts.contextFraction !== undefined && !(opts.contextFraction > 0 && opts.contextFraction < 1)) {
    throw new EvalError(`--context-fraction must be in (0, 1), got ${opts.contextFraction}`);
  }
  if (opts.limit !== undefined && !(Number.isInteger(opts.limit) && opts.limit >= 1)) throw new EvalError(`--limit must be an integer ≥ 1, got ${opts.limit}`);
  const seed = opts.seed ?? DEFAULT_SEED;
  const optionsByPress = resolvePressOptions(opts.presses, opts.pressOptions ?? []);
  const output = opts.output ?? 'results';
  const notice = opts.onNotice ?? (() => {});
  // Notes (skipped tasks and presses) are also kept beside the runs, for the report to show.
  const note = (line: string): void => {
    notice(line);
    recordNote(output, line);
  };

  // Decoding presses compress while generating: the fidelity tasks generate nothing.
  const decoding = fidelity ? opts.presses.filter(isDecodingName) : [];
  if (decoding.length) note(`skipping decoding presses on the prefill-only ${ds.label} task: ${decoding.join(', ')}`);
  let pressNames = opts.presses.filter((p) => !decoding.includes(p));
  const targetSizes = opts.targetSizes ?? [];
  for (const t of targetSizes) if (!(Number.isInteger(t) && t >= 1)) throw new EvalError(`target sizes must be integers ≥ 1, got ${t}`);
  const targeted = pressNames.filter(takesTargetSize);
  if (targeted.length && targetSizes.length === 0) {
    throw new EvalError(`${targeted.join(', ')} ${targeted.length > 1 ? 'compress' : 'compresses'} to a target size while generating, not by a ratio: give --target-sizes N1,N2,… (entries per KV head after each compression)`);
  }
  if (targetSizes.length && targeted.length === 0) throw new EvalError(`--target-sizes applies to presses with a targetSize option (e.g. decoding_expected_attention); none of ${pressNames.join(', ') || 'the presses'} has one`);
  for (const p of targeted) {
    if ('targetSize' in optionsByPress.get(p)!) throw new EvalError(`${p}: give its target sizes with --target-sizes, not --press-option targetSize`);
  }
  // Every press is built at its ratios before anything runs, so a missing file or option is one
  // line now rather than an error hours into the grid.
  const ratioFree = new Set<string>();
  const questionReaders: string[] = [];
  for (const p of pressNames) {
    const isTargeted = targeted.includes(p);
    const own = isTargeted && registry.get(p).phase !== 'both' ? [0] : ratios;
    const probe = probePress(p, own, optionsByPress.get(p)!, seed, isTargeted ? targetSizes[0] : undefined);
    if (probe.ratioFree) ratioFree.add(p);
    if (fidelity && readsQuestion(probe.press)) questionReaders.push(p);
  }
  if (questionReaders.length) {
    note(`skipping ${questionReaders.join(', ')} on the ${ds.label} task: ${questionReaders.length > 1 ? 'they compress' : 'it compresses'} the context together with a question, and ${ds.label} items are stories with none (${questionReaders.length > 1 ? 'they run' : 'it runs'} on ruler, niah and jsonl)`);
  }
  for (const p of ratioFree) note(`${p} takes no compression ratio (its own settings set the budget): one run at ratio 0 on ${ds.label}, its achieved ratio in the report`);
  pressNames = pressNames.filter((p) => !questionReaders.includes(p));
  const excluded = [...decoding, ...questionReaders];

  const model = modelName(opts.model);
  const queryAware = opts.queryAware ?? false;
  const kvDtypes = opts.kvDtypes ?? ['f32'];
  if (kvDtypes.length === 0 || new Set(kvDtypes).size !== kvDtypes.length) throw new EvalError(`--kv-dtypes must list distinct types, got "${kvDtypes.join(',')}"`);
  for (const d of kvDtypes) if (!(KV_DTYPES as readonly string[]).includes(d)) throw new EvalError(`unknown KV cache type "${d}"; expected ${KV_DTYPES.join(', ')}`);
  const planned = planRuns(ds.label, model, pressNames, ratios, queryAware, kvDtypes, targetSizes, ratioFree);
  const mine = shardRuns(planned, opts.shard);
  const settingsFor = (run: RunSpec): Settings => ({
    // The resolved count, so that "--limit 100" and the default 100 are the same run.
    limit: opts.limit ?? (ds.kind === 'niah' ? NIAH_DEPTHS.length : DEFAULT_LIMITS[ds.kind] ?? null),
    seed,
    contextFraction: fidelity ? (opts.contextFraction ?? DEFAULT_CONTEXT_FRACTION) : null,
    contextLength: opts.contextLength ?? null,
    pressOptions: run.press === NO_PRESS ? {} : optionsByPress.get(run.press)!,
  });
  const skipped = mine.filter((r) => isComplete(output, r));
  for (const r of skipped) checkSameSettings(output, r, settingsFor(r));
  const todo = mine.filter((r) => !skipped.includes(r));
  const summary: EvalSummary = { output, planned, mine, skipped, ran: [], excluded };
  if (todo.length === 0) return summary;

  let loaded: Model;
  try {
    // The references run on an f32 cache whatever the checkpoint; each run picks its own type.
    loaded = await loadModel(opts.model, { backend: opts.backend, kvDtype: 'f32' });
  } catch (e) {
    throw new EvalError((e as Error).message);
  }
  // Every press must accept the model before hours of work start.
  const firstRun = new Map<string, RunSpec>();
  for (const r of todo) if (r.press !== NO_PRESS && !firstRun.has(r.press)) firstRun.set(r.press, r);
  for (const [p, r] of firstRun) createPress(p, r.ratio, optionsByPress.get(p)!, seed, r.targetSize).validate?.(loaded);
  const task = makeTask(ds, loaded, { ...opts, onNotice: note });
  // A decoding press that can never act on this task's answers would silently equal the baseline.
  for (const r of todo) {
    if (r.press === NO_PRESS || registry.get(r.press).phase === undefined || registry.get(r.press).phase === 'prefill') continue;
    const why = task.decodingReach && cannotCompress(createPress(r.press, r.ratio, optionsByPress.get(r.press)!, seed, r.targetSize), task.decodingReach());
    if (why) throw new EvalError(`${r.press}${r.targetSize === undefined ? '' : ` at target size ${r.targetSize}`} cannot compress ${ds.label}: ${why}`);
  }
  mkdirSync(output, { recursive: true });

  const start = performance.now();
  const unitsTotal = todo.length * task.size;
  let unitsDone = 0;
  for (const [k, run] of todo.entries()) {
    const t0 = performance.now();
    const press = run.press === NO_PRESS ? null : createPress(run.press, run.ratio, optionsByPress.get(run.press)!, seed, run.targetSize);
    const progress = (item: number) => {
      const elapsedMs = performance.now() - start;
      const done = unitsDone + item;
      opts.onProgress?.({
        run, runsDone: k, runsTotal: todo.length, item, items: task.size, elapsedMs,
        etaMs: done > 0 ? (elapsedMs / done) * (unitsTotal - done) : null,
      });
    };
    progress(0);
    const r = task.evaluate(press, progress, run.kvDtype);
    unitsDone += task.size;
    const seconds = (performance.now() - t0) / 1000;

    const dir = join(output, run.dir);
    mkdirSync(dir, { recursive: true });
    writeAtomic(join(dir, 'predictions.jsonl'), r.predictions.map((p) => JSON.stringify(p)).join('\n') + '\n');
    writeAtomic(join(dir, 'config.json'), json({
      dataset: opts.dataset, model, modelPath: opts.model ?? null, press: run.press, compressionRatio: run.ratio, targetSize: run.targetSize, queryAware, kvDtype: run.kvDtype,
      settings: settingsFor(run), backend: loaded.backend.name, planIndex: run.index, shard: opts.shard ?? null,
    }));
    const metrics: RunMetrics = {
      dataset: ds.label, model, press: run.press, compressionRatio: run.ratio, targetSize: run.targetSize, queryAware, kvDtype: run.kvDtype,
      ownBudget: ratioFree.has(run.press) || undefined,
      items: r.predictions.length, scores: r.scores, scoreInfo: r.scoreInfo, seconds,
    };
    writeAtomic(join(dir, 'metrics.json'), json(metrics));
    summary.ran.push(run);
    notice(`run ${k + 1}/${todo.length} ${run.dir} done in ${formatMs(seconds * 1000)}`);
  }
  return summary;
}

/** File of a results folder that holds its notes, one per line (see writeReport). */
export const NOTES_FILE = 'notes.txt';

function recordNote(dir: string, line: string): void {
  const file = join(dir, NOTES_FILE);
  const lines = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
  if (lines.includes(line)) return;
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, [...lines, line].join('\n') + '\n');
}
