/**
 * The plan of an evaluation: per KV cache type the no-press baseline, then every press at every
 * ratio (or target size), each cell numbered by its place in the plan. The number is the shard
 * key, so machines sharing a results folder split a grid without coordination.
 */
import type { KvDtype } from '../cache/format.js';
import { NO_PRESS, runDirName } from './names.js';
import { takesTargetSize, targetedRatios } from './press-setup.js';

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
    return targetedRatios(press, ratios).flatMap((ratio) => targetSizes.map((targetSize) => ({ press, ratio, kvDtype, targetSize })));
  };
  const cells = kvDtypes.flatMap((kvDtype) => [{ press: NO_PRESS, ratio: 0, kvDtype }, ...pressNames.flatMap((press) => cellsOf(press, kvDtype))]);
  return cells.map((c, index) => ({ index, ...c, dir: runDirName(dataset, model, c.press, c.ratio, queryAware, c.kvDtype, 'targetSize' in c ? c.targetSize : undefined) }));
}

/** Shard i of n (1-based) takes the runs whose plan index ≡ i − 1 (mod n). */
export function shardRuns(runs: readonly RunSpec[], shard: { index: number; count: number } | undefined): RunSpec[] {
  if (!shard) return [...runs];
  return runs.filter((r) => r.index % shard.count === shard.index - 1);
}
