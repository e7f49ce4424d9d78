/**
 * Names of an evaluation: the datasets it accepts, and the run folders
 * `<dataset>__<model>__<press>__<ratio>[__target<N>][__query_aware][__kv_<type>]` built from the
 * dataset's label, the model's file name and the ratio written without loss.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, extname } from 'node:path';
import type { KvDtype } from '../cache/format.js';
import { defaultModelPath } from '../model/load.js';
import { closeMatches } from '../presses/registry.js';
import { EvalError } from './options.js';

/** The baseline run's press name; it always runs, at ratio 0. */
export const NO_PRESS = 'no_press';

/** The datasets known by name; a local file is `jsonl:PATH`. */
const NAMED_DATASETS = ['continuation', 'name_recall', 'sampled_recall', 'ruler', 'niah'] as const;
export const DATASETS = [...NAMED_DATASETS, 'jsonl:PATH'] as const;

export interface DatasetRef {
  kind: (typeof NAMED_DATASETS)[number] | 'jsonl';
  /** As it appears in folder names: jsonl:data/hotpotqa.jsonl → jsonl-hotpotqa. */
  label: string;
  path?: string;
}

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

export function parseDataset(name: string): DatasetRef {
  if (name.startsWith('jsonl:')) {
    const path = name.slice('jsonl:'.length);
    if (path === '') throw new EvalError('jsonl dataset needs a file: --dataset jsonl:PATH');
    if (!existsSync(path)) throw new EvalError(`${path}: no such dataset file`);
    return { kind: 'jsonl', label: `jsonl-${slug(basename(path, extname(path)))}`, path };
  }
  const named = NAMED_DATASETS.find((d) => d === name);
  if (named !== undefined) return { kind: named, label: named };
  const close = closeMatches(name, [...NAMED_DATASETS, 'jsonl']);
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
