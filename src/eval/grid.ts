/**
 * What `runEval` was asked, checked and resolved into a grid before anything runs: the dataset,
 * each press's options, the presses a task cannot run (with a note saying why), the presses that
 * set their own budget, and the full plan. Every mistake is one EvalError line here rather than
 * an error hours into the grid.
 */
import { KV_DTYPES } from '../cache/format.js';
import { DEFAULT_CONTEXT_FRACTION } from './fidelity.js';
import { modelName, NO_PRESS, parseDataset, type DatasetRef } from './names.js';
import { DEFAULT_RATIOS, DEFAULT_SEED, EvalError, type EvalOptions } from './options.js';
import { planRuns, type RunSpec } from './plan.js';
import { checkPressNames, isDecodingName, probePress, readsQuestion, resolvePressOptions, takesTargetSize, targetedRatios } from './press-setup.js';
import { recordNote, type RunSettings } from './run-files.js';
import { DEFAULT_LIMITS, NIAH_DEPTHS } from './tasks.js';

/** The resolved request: everything the runner needs besides the model. */
export interface Grid {
  ds: DatasetRef;
  /** Continuation or a recall set: stories, no question, nothing generated. */
  fidelity: boolean;
  seed: number;
  output: string;
  /** The model as named in run folders. */
  model: string;
  queryAware: boolean;
  optionsByPress: Map<string, Record<string, string>>;
  /** Presses that set their own budget and run once, at ratio 0. */
  ratioFree: Set<string>;
  /** Presses left out of this dataset (a note says why). */
  excluded: string[];
  planned: RunSpec[];
  /** A notice that is also kept in the results folder's notes, for the report. */
  note(line: string): void;
  /** The settings a complete run must have been made with to be reused. */
  settingsFor(run: RunSpec): RunSettings;
}

/** Checks `opts` and plans the grid; emits the notes about skipped presses. */
export function planGrid(opts: EvalOptions): Grid {
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
    const probe = probePress(p, isTargeted ? targetedRatios(p, ratios) : ratios, optionsByPress.get(p)!, seed, isTargeted ? targetSizes[0] : undefined);
    if (probe.ratioFree) ratioFree.add(p);
    if (fidelity && readsQuestion(probe.press)) questionReaders.push(p);
  }
  if (questionReaders.length) {
    note(`skipping ${questionReaders.join(', ')} on the ${ds.label} task: ${questionReaders.length > 1 ? 'they compress' : 'it compresses'} the context together with a question, and ${ds.label} items are stories with none (${questionReaders.length > 1 ? 'they run' : 'it runs'} on ruler, niah and jsonl)`);
  }
  for (const p of ratioFree) note(`${p} takes no compression ratio (its own settings set the budget): one run at ratio 0 on ${ds.label}, its achieved ratio in the report`);
  pressNames = pressNames.filter((p) => !questionReaders.includes(p));

  const model = modelName(opts.model);
  const queryAware = opts.queryAware ?? false;
  const kvDtypes = opts.kvDtypes ?? ['f32'];
  if (kvDtypes.length === 0 || new Set(kvDtypes).size !== kvDtypes.length) throw new EvalError(`--kv-dtypes must list distinct types, got "${kvDtypes.join(',')}"`);
  for (const d of kvDtypes) if (!(KV_DTYPES as readonly string[]).includes(d)) throw new EvalError(`unknown KV cache type "${d}"; expected ${KV_DTYPES.join(', ')}`);
  return {
    ds, fidelity, seed, output, model, queryAware, optionsByPress, ratioFree, note,
    excluded: [...decoding, ...questionReaders],
    planned: planRuns(ds.label, model, pressNames, ratios, queryAware, kvDtypes, targetSizes, ratioFree),
    settingsFor: (run) => ({
      // The resolved count, so that "--limit 100" and the default 100 are the same run.
      limit: opts.limit ?? (ds.kind === 'niah' ? NIAH_DEPTHS.length : DEFAULT_LIMITS[ds.kind] ?? null),
      seed,
      contextFraction: fidelity ? (opts.contextFraction ?? DEFAULT_CONTEXT_FRACTION) : null,
      contextLength: opts.contextLength ?? null,
      pressOptions: run.press === NO_PRESS ? {} : optionsByPress.get(run.press)!,
    }),
  };
}
