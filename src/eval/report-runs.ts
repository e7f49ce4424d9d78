/**
 * The complete runs of a results folder, read back from their metrics.json files, wherever they
 * were computed (one machine, or shards sharing the folder).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunMetrics } from './run-metrics.js';

export interface RunsFound {
  runs: RunMetrics[];
  /** Run folders without metrics.json (still running, failed, or another shard's). */
  incomplete: string[];
}

/** A metrics.json as written by the runner; anything else is a one-line error. */
function parseMetrics(file: string): RunMetrics {
  let m: RunMetrics;
  try {
    m = JSON.parse(readFileSync(file, 'utf8')) as RunMetrics;
  } catch (e) {
    throw new Error(`${file}: unreadable metrics (${(e as Error).message.split('\n')[0]})`);
  }
  const ok = m && typeof m.dataset === 'string' && typeof m.model === 'string' && typeof m.press === 'string'
    && typeof m.compressionRatio === 'number' && typeof m.scores === 'object' && typeof m.scoreInfo === 'object';
  if (!ok) throw new Error(`${file}: not a kvpress eval metrics file`);
  return m;
}

/** Every run folder under `dir` (one level, named <dataset>__<model>__<press>__<ratio>…). */
export function readRuns(dir: string): RunsFound {
  if (!existsSync(dir)) throw new Error(`${dir}: no such directory`);
  const runs: RunMetrics[] = [];
  const incomplete: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (!e.isDirectory() || !e.name.includes('__')) continue;
    const file = join(dir, e.name, 'metrics.json');
    if (existsSync(file)) runs.push(parseMetrics(file));
    else incomplete.push(e.name);
  }
  return { runs, incomplete };
}
