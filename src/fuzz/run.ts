/**
 * `npm run fuzz`: mutational fuzzing of every file parser (src/fuzz/families.ts). Each family
 * runs in a worker thread under a watchdog: an input that makes no progress for `hangMs` is a
 * hang (the worker is terminated and restarted after it), a worker that dies (out of memory) is a
 * crash at the input it was parsing. Prints successes, typed errors, crashes and hangs per family.
 *
 *   node dist/src/fuzz/run.js [--count N] [--seed S] [--family NAME] [--json FILE]
 */
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { FAMILIES } from './families.js';
import type { Counts, WorkerMessage } from './outcome.js';

export interface FamilyResult extends Counts {
  family: string;
  inputs: number;
  seconds: number;
  /** First few crashes and hangs: input index (reproducible with the seed) and message. */
  examples: { index: number; message: string }[];
}

export interface FuzzOptions {
  count: number;
  seed: number;
  /** No progress for this long is a hang. Default 10 s. */
  hangMs?: number;
  /** Old-space limit of a worker, so a parser asked to allocate absurd memory dies as a crash. */
  memoryMb?: number;
  onProgress?: (done: number) => void;
}

export async function fuzzFamily(family: string, opts: FuzzOptions): Promise<FamilyResult> {
  if (!FAMILIES.some((f) => f.name === family)) throw new Error(`unknown fuzz family "${family}" (known: ${FAMILIES.map((f) => f.name).join(', ')})`);
  const hangMs = opts.hangMs ?? 10_000;
  const total: Counts = { ok: 0, typed: 0, crash: 0, hang: 0 };
  const examples: FamilyResult['examples'] = [];
  const note = (index: number, message: string) => { if (examples.length < 20) examples.push({ index, message }); };
  const t0 = performance.now();
  let from = 0;
  while (from < opts.count) {
    // [index being parsed, ok, typed, crash]: exact even when the worker is killed mid-input.
    const shared = new SharedArrayBuffer(16);
    const view = new Int32Array(shared);
    view[0] = from;
    const worker = new Worker(new URL('./worker.js', import.meta.url), {
      workerData: { family, seed: opts.seed, from, to: opts.count, progress: shared },
      resourceLimits: { maxOldGenerationSizeMb: opts.memoryMb ?? 512 },
      stderr: true,
    });
    worker.stderr.resume();
    from = await new Promise<number>((resolve) => {
      let seen = view[0], since = Date.now(), settled = false;
      const finish = (next: number) => {
        if (settled) return;
        settled = true;
        clearInterval(timer);
        resolve(next);
      };
      const timer = setInterval(() => {
        const now = Atomics.load(view, 0);
        if (now !== seen) {
          seen = now;
          since = Date.now();
          opts.onProgress?.(now);
        } else if (Date.now() - since > hangMs) {
          total.hang++;
          note(now, `hang: no progress for ${hangMs} ms`);
          finish(now + 1);
        }
      }, Math.min(250, hangMs / 4));
      worker.on('message', (m: WorkerMessage) => {
        if (m.type === 'crash') note(m.index, m.message);
        else if (m.type === 'done') finish(opts.count);
      });
      worker.on('error', (e) => {
        const at = Atomics.load(view, 0);
        total.crash++;
        note(at, `worker died: ${e.message}`);
        finish(at + 1);
      });
      worker.on('exit', () => finish(opts.count));
    });
    await worker.terminate();
    total.ok += view[1];
    total.typed += view[2];
    total.crash += view[3];
  }
  const seconds = (performance.now() - t0) / 1000;
  return { family, inputs: total.ok + total.typed + total.crash + total.hang, ...total, seconds, examples };
}

async function main(): Promise<void> {
  const usage = `usage: npm run fuzz -- [--count N] [--seed S] [--family NAME]... [--json FILE] (families: ${FAMILIES.map((f) => f.name).join(', ')})`;
  let parsed;
  try {
    parsed = parseArgs({ options: { count: { type: 'string' }, seed: { type: 'string' }, family: { type: 'string', multiple: true }, json: { type: 'string' }, help: { type: 'boolean' } } });
  } catch (e) {
    console.error(`fuzz: ${(e as Error).message}\n${usage}`);
    process.exit(2);
  }
  const { values } = parsed;
  if (values.help) {
    console.log(usage);
    return;
  }
  const count = Number(values.count ?? 20000), seed = Number(values.seed ?? 1);
  if (!Number.isSafeInteger(count) || count < 1 || !Number.isSafeInteger(seed)) {
    console.error(`fuzz: --count must be an integer ≥ 1 and --seed an integer, got ${values.count ?? 20000} and ${values.seed ?? 1}`);
    process.exit(2);
  }
  const names = values.family ?? FAMILIES.map((f) => f.name);
  const unknown = names.filter((n) => !FAMILIES.some((f) => f.name === n));
  if (unknown.length) {
    console.error(`fuzz: unknown family ${unknown.join(', ')} (known: ${FAMILIES.map((f) => f.name).join(', ')})`);
    process.exit(2);
  }
  const results: FamilyResult[] = [];
  console.log(`family               inputs   success     typed   crashes  hangs   seconds`);
  for (const name of names) {
    const r = await fuzzFamily(name, { count, seed, onProgress: (d) => process.stderr.isTTY && process.stderr.write(`\r${name}: ${d}/${count}`) });
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    results.push(r);
    console.log(`${name.padEnd(20)} ${String(r.inputs).padStart(7)} ${String(r.ok).padStart(9)} ${String(r.typed).padStart(9)} ${String(r.crash).padStart(9)} ${String(r.hang).padStart(6)} ${r.seconds.toFixed(1).padStart(9)}`);
    for (const e of r.examples.slice(0, 5)) console.log(`  input ${e.index}: ${e.message}`);
  }
  if (values.json) writeFileSync(values.json, JSON.stringify({ seed, count, node: process.version, results }, null, 2) + '\n');
  process.exitCode = results.some((r) => r.crash + r.hang > 0) ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
