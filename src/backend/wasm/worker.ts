/**
 * A worker thread of the WebAssembly backend: its own instance of the kernels on the shared
 * memory and its own stack, running its part of each task the main thread posts.
 */
import { workerData } from 'node:worker_threads';
import { ARGS_AT, ARGS_LEN, DONE, FAILED, GEN, PARTS, READY, TASK, runPart, type Exports } from './module.js';

interface Data {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  control: SharedArrayBuffer;
  /** This worker's part index (the main thread runs part 0). */
  part: number;
  stackTop: number;
}

const { module, memory, control, part, stackTop } = workerData as Data;
const ex = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as Exports;
ex.__stack_pointer.value = stackTop;
const ctrl = new Int32Array(control);
const args = new Float64Array(control, ARGS_AT, ARGS_LEN);

let seen = Atomics.load(ctrl, GEN);
Atomics.add(ctrl, READY, 1);
Atomics.notify(ctrl, READY);
for (;;) {
  Atomics.wait(ctrl, GEN, seen);
  seen = Atomics.load(ctrl, GEN);
  const parts = Atomics.load(ctrl, PARTS);
  if (part >= parts) continue;
  try {
    runPart(ex, Atomics.load(ctrl, TASK), args, part, parts);
  } catch {
    Atomics.store(ctrl, FAILED, 1);
  }
  Atomics.add(ctrl, DONE, 1);
  Atomics.notify(ctrl, DONE);
}
