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
 * run of the plan so machines sharing DIR split a grid without coordination. The request is
 * checked and planned in grid.ts, presses built in press-setup.ts, files written by run-files.ts.
 */
import { mkdirSync } from 'node:fs';
import { loadModel } from '../model/load.js';
import type { Model } from '../model/model.js';
import { planGrid } from './grid.js';
import { NO_PRESS } from './names.js';
import { EvalError, type EvalOptions, type EvalSummary } from './options.js';
import { shardRuns, type RunSpec } from './plan.js';
import { createPress, isDecodingName } from './press-setup.js';
import { checkSameSettings, isComplete, writeRun } from './run-files.js';
import type { RunMetrics } from './run-metrics.js';
import { cannotCompress } from './task.js';
import { makeTask } from './tasks.js';

function formatMs(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/**
 * Runs this shard's incomplete runs of the grid. The model is loaded only when something is
 * left to run; uncompressed reference passes are shared by every run of the invocation.
 */
export async function runEval(opts: EvalOptions): Promise<EvalSummary> {
  const grid = planGrid(opts);
  const { ds, seed, output, model, queryAware, optionsByPress, planned } = grid;
  const notice = opts.onNotice ?? (() => {});
  const mine = shardRuns(planned, opts.shard);
  const skipped = mine.filter((r) => isComplete(output, r));
  for (const r of skipped) checkSameSettings(output, r, grid.settingsFor(r));
  const todo = mine.filter((r) => !skipped.includes(r));
  const summary: EvalSummary = { output, planned, mine, skipped, ran: [], excluded: grid.excluded };
  if (todo.length === 0) return summary;

  let loaded: Model;
  try {
    // The references run on an f32 cache whatever the checkpoint; each run picks its own type.
    loaded = await loadModel(opts.model, { backend: opts.backend, kvDtype: 'f32' });
  } catch (e) {
    throw new EvalError((e as Error).message);
  }
  const pressOf = (run: RunSpec) => createPress(run.press, run.ratio, optionsByPress.get(run.press)!, seed, run.targetSize);
  // Every press must accept the model before hours of work start.
  const firstRun = new Map<string, RunSpec>();
  for (const r of todo) if (r.press !== NO_PRESS && !firstRun.has(r.press)) firstRun.set(r.press, r);
  for (const r of firstRun.values()) pressOf(r).validate?.(loaded);
  const task = makeTask(ds, loaded, { ...opts, onNotice: grid.note });
  // A decoding press that can never act on this task's answers would silently equal the baseline.
  for (const r of todo) {
    if (r.press === NO_PRESS || !isDecodingName(r.press)) continue;
    const why = task.decodingReach && cannotCompress(pressOf(r), task.decodingReach());
    if (why) throw new EvalError(`${r.press}${r.targetSize === undefined ? '' : ` at target size ${r.targetSize}`} cannot compress ${ds.label}: ${why}`);
  }
  mkdirSync(output, { recursive: true });

  const start = performance.now();
  const unitsTotal = todo.length * task.size;
  let unitsDone = 0;
  for (const [k, run] of todo.entries()) {
    const t0 = performance.now();
    const press = run.press === NO_PRESS ? null : pressOf(run);
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

    const metrics: RunMetrics = {
      dataset: ds.label, model, press: run.press, compressionRatio: run.ratio, targetSize: run.targetSize, queryAware, kvDtype: run.kvDtype,
      ownBudget: grid.ratioFree.has(run.press) || undefined,
      items: r.predictions.length, scores: r.scores, scoreInfo: r.scoreInfo, seconds,
    };
    writeRun(output, run, r.predictions, {
      dataset: opts.dataset, model, modelPath: opts.model ?? null, press: run.press, compressionRatio: run.ratio, targetSize: run.targetSize, queryAware, kvDtype: run.kvDtype,
      settings: grid.settingsFor(run), backend: loaded.backend.name, planIndex: run.index, shard: opts.shard ?? null,
    }, metrics);
    summary.ran.push(run);
    notice(`run ${k + 1}/${todo.length} ${run.dir} done in ${formatMs(seconds * 1000)}`);
  }
  return summary;
}
