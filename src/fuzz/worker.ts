/**
 * Runs one family's inputs [from, to) in a worker thread: each mutant is written to a private
 * folder and parsed. The index being parsed and the counts live in shared memory, so the
 * parent's watchdog reads them without a message, even after it had to kill the worker.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { FAMILIES, writeSideFiles } from './families.js';
import { classify, type WorkerJob, type WorkerMessage } from './outcome.js';
import { mutate } from './mutate.js';

const job = workerData as WorkerJob;
const family = FAMILIES.find((f) => f.name === job.family)!;
const progress = new Int32Array(job.progress);
const dir = mkdtempSync(join(tmpdir(), 'kvpress-fuzz-'));
writeSideFiles(family, dir);
const path = join(dir, family.file);
const seeds = family.seeds();
// Shared with the runner: [index being parsed, ok, typed, crash].
const SLOT = { ok: 1, typed: 2, crash: 3 } as const;
try {
  for (let i = job.from; i < job.to; i++) {
    Atomics.store(progress, 0, i);
    writeFileSync(path, mutate(seeds, job.seed, i, family.text));
    let outcome: { kind: 'ok' } | ReturnType<typeof classify>;
    try {
      family.parse(path);
      outcome = { kind: 'ok' };
    } catch (e) {
      outcome = classify(e, dir);
    }
    if (outcome.kind === 'crash') parentPort!.postMessage({ type: 'crash', index: i, message: outcome.message } satisfies WorkerMessage);
    Atomics.add(progress, SLOT[outcome.kind], 1);
  }
  parentPort!.postMessage({ type: 'done' } satisfies WorkerMessage);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
