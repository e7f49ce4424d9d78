/**
 * The files of a results folder: per run predictions.jsonl, config.json and metrics.json —
 * metrics.json written last, so a run is complete iff it exists — and the folder's notes.txt.
 * Every file is written whole through a rename, so a reader (or a crash) never sees half of one.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EvalError } from './options.js';
import type { RunSpec } from './plan.js';
import type { RunMetrics } from './run-metrics.js';

/** File of a results folder that holds its notes, one per line (see writeReport). */
export const NOTES_FILE = 'notes.txt';

/** What must match for a complete run to be reused. */
export interface RunSettings {
  limit: number | null;
  seed: number;
  contextFraction: number | null;
  contextLength: number | null;
  pressOptions: Record<string, string>;
}

/** Writes through a temporary file and a rename, so readers never see half a file. */
function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** JSON as the runs store it: indented, non-finite numbers as null. */
const json = (v: unknown): string => JSON.stringify(v, (_, x) => (typeof x === 'number' && !Number.isFinite(x) ? null : x), 2) + '\n';

/** A run is complete iff its metrics.json exists (it is written last). */
export function isComplete(output: string, run: RunSpec): boolean {
  return existsSync(join(output, run.dir, 'metrics.json'));
}

/** Refuses to reuse a complete run whose config.json records other settings than `want`. */
export function checkSameSettings(output: string, run: RunSpec, want: RunSettings): void {
  const file = join(output, run.dir, 'config.json');
  let have: RunSettings;
  try {
    have = (JSON.parse(readFileSync(file, 'utf8')) as { settings: RunSettings }).settings;
  } catch (e) {
    throw new EvalError(`${file}: unreadable (${(e as Error).message.split('\n')[0]}); delete the run folder to redo it`);
  }
  const diff = (Object.keys(want) as (keyof RunSettings)[]).filter((k) => JSON.stringify(have?.[k] ?? null) !== JSON.stringify(want[k]));
  if (diff.length) {
    const what = diff.map((k) => `${k} ${JSON.stringify(have?.[k] ?? null)} ≠ ${JSON.stringify(want[k])}`).join(', ');
    throw new EvalError(`${join(output, run.dir)} is complete but was run with other settings (${what}); use another --output or delete it`);
  }
}

/** Writes one finished run's folder: predictions and config first, metrics.json last. */
export function writeRun(output: string, run: RunSpec, predictions: readonly unknown[], config: Record<string, unknown>, metrics: RunMetrics): void {
  const dir = join(output, run.dir);
  mkdirSync(dir, { recursive: true });
  writeAtomic(join(dir, 'predictions.jsonl'), predictions.map((p) => JSON.stringify(p)).join('\n') + '\n');
  writeAtomic(join(dir, 'config.json'), json(config));
  writeAtomic(join(dir, 'metrics.json'), json(metrics));
}

/** Adds a line to the folder's notes unless it is already there. */
export function recordNote(dir: string, line: string): void {
  const file = join(dir, NOTES_FILE);
  const lines = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
  if (lines.includes(line)) return;
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, [...lines, line].join('\n') + '\n');
}
