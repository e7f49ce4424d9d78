import { Worker } from 'node:worker_threads';
import { ARGS_AT, ARGS_LEN, CONTROL_BYTES, DONE, FAILED, GEN, PARTS, READY, TASK, WORKER_STACK, runPart, type Exports } from './module.js';

/** How long the main thread waits for workers to boot before it runs alone. */
const BOOT_TIMEOUT_MS = 10_000;

/**
 * Worker threads that run parts of a task on the shared memory while the main thread runs
 * part 0 and then blocks until they finish: the kernels stay synchronous for the caller.
 * Workers are unreferenced, so they never keep the process alive.
 */
export class Pool {
  readonly args: Float64Array;
  readonly #ctrl: Int32Array;
  readonly #workers: Worker[] = [];
  /** Why threading was given up, once it has been. */
  #broken: string | null = null;

  constructor(
    private readonly module: WebAssembly.Module,
    private readonly memory: WebAssembly.Memory,
    private readonly main: Exports,
    /** First byte of the worker stacks (one WORKER_STACK each, worker i above worker i−1). */
    private readonly stackBase: number,
    /** Most workers the stack area holds. */
    readonly maxWorkers: number,
  ) {
    const control = new SharedArrayBuffer(CONTROL_BYTES);
    this.#ctrl = new Int32Array(control);
    this.args = new Float64Array(control, ARGS_AT, ARGS_LEN);
  }

  get broken(): string | null {
    return this.#broken;
  }

  /** Parts a task can be split into now, starting workers (and waiting for them) as needed. */
  parts(threads: number): number {
    const want = Math.min(threads - 1, this.maxWorkers);
    if (this.#broken || want <= 0) return 1;
    while (this.#workers.length < want) {
      const part = this.#workers.length + 1;
      const w = new Worker(new URL('./worker.js', import.meta.url), {
        workerData: { module: this.module, memory: this.memory, control: this.#ctrl.buffer, part, stackTop: this.stackBase + part * WORKER_STACK },
      });
      w.unref();
      this.#workers.push(w);
    }
    const deadline = Date.now() + BOOT_TIMEOUT_MS;
    for (;;) {
      const ready = Atomics.load(this.#ctrl, READY);
      if (ready >= want) break;
      const left = deadline - Date.now();
      if (left <= 0) return this.#giveUp(`worker threads did not start within ${BOOT_TIMEOUT_MS / 1000} s`);
      Atomics.wait(this.#ctrl, READY, ready, left);
    }
    return want + 1;
  }

  /** Runs `task` (arguments already in `args`) in `parts` parts; returns when all are done. */
  run(task: number, parts: number): void {
    const c = this.#ctrl;
    Atomics.store(c, TASK, task);
    Atomics.store(c, PARTS, parts);
    Atomics.store(c, DONE, 0);
    Atomics.store(c, FAILED, 0);
    Atomics.add(c, GEN, 1);
    Atomics.notify(c, GEN);
    runPart(this.main, task, this.args, 0, parts);
    for (;;) {
      const done = Atomics.load(c, DONE);
      if (done >= parts - 1) break;
      Atomics.wait(c, DONE, done);
    }
    if (Atomics.load(c, FAILED)) throw new Error('wasm backend: a worker thread failed its part of the kernel');
  }

  #giveUp(reason: string): number {
    this.#broken = reason;
    for (const w of this.#workers) void w.terminate();
    this.#workers.length = 0;
    return 1;
  }
}
