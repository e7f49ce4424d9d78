import type { DecodeInput } from './decode.js';
import { ApiError } from './errors.js';

/** A unit of work on the model: a request's prefill and decode steps, or a one-step compression. */
export interface Task {
  /** Runs one step (a prefill, or one decode step); returns true when the task is finished. */
  step(): boolean;
  /** The task was dropped unfinished (client gone, shutdown): release what it holds. */
  cancel(reason: string): void;
  /** A step threw. */
  fail(error: unknown): void;
  /** The single-row decode step the next step() starts with, if that is what it does (see DecodeBatch). */
  nextDecode?(): DecodeInput | null;
}

/**
 * While two or more tasks run, the event loop gets a turn at least this often, so that their
 * streams flush evenly, requests arrive and disconnects are seen.
 */
export const YIELD_MS = 2;

/**
 * A lone task has no one to be fair to, so its slices are longer once no other request has come
 * for LONE_SLICE_MS (requests come in bursts: the 8 of the benchmark's concurrent case reach the
 * server within a few milliseconds, and a first one running 10 ms ahead ended 15% before the
 * others instead of 5%). Then what a turn is needed for (a request arriving, a disconnect, a
 * stream's interval flush) waits at most this long plus one step. A turn between two steps of a
 * lone stories260K answer costs 15 µs at best and 75 µs at the median on the loaded machine (22
 * turns of 2 ms slices took 0.3 and 1.7 ms in all over 30 answers of 341 tokens, ≈ 42 ms each);
 * this way such an answer takes about 9 turns instead of 22.
 */
export const LONE_SLICE_MS = 10;

/**
 * One model, many requests: every admitted task runs one step in turn (round-robin over
 * single-row decode steps), so concurrent answers progress at the same rate. At most `maxQueue`
 * tasks are admitted (429 beyond); after `drain()` nothing new is admitted (503). Before each
 * round of two or more tasks `beforeRound` sees them (the server runs their decode steps
 * together there); a lone task's round is just its own step.
 */
export class Scheduler {
  private tasks: Task[] = [];
  private readonly cancelled = new Map<Task, string>();
  private running = false;
  /** The task whose turn is next. */
  private next = 0;
  private draining = false;
  private idle: (() => void)[] = [];
  /** Whether beforeRound has run for the round in progress (a finished task at index 0 does not start a new one). */
  private roundStarted = false;
  /** Steps run since start, for metrics. */
  steps = 0;
  /** When the slice in progress gives the event loop its turn (performance.now() time). */
  private until = 0;
  /** When the last task was submitted (performance.now() time). */
  private lastSubmit = -Infinity;

  constructor(readonly maxQueue: number, private readonly beforeRound?: (tasks: readonly Task[]) => void) {}

  /** Tasks admitted and not finished. */
  get depth(): number {
    return this.tasks.length;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  submit(task: Task): void {
    this.lastSubmit = performance.now();
    if (this.draining) throw new ApiError(503, 'the server is shutting down and accepts no new requests', null, 'shutting_down');
    if (this.tasks.length >= this.maxQueue) {
      throw new ApiError(429, `the server is busy: ${this.tasks.length} requests are in progress, the limit (--max-queue) is ${this.maxQueue}; retry later`, null, 'queue_full');
    }
    this.tasks.push(task);
    // Never inline: the caller finishes setting up (headers, listeners) before the first step.
    // setImmediate runs it in this very turn of the event loop (measured: 0.1 ms from submit to
    // the first step), not after a timer.
    if (!this.running) {
      this.running = true;
      setImmediate(this.run);
    }
  }

  /**
   * Ends the slice in progress after the step that is running, so that what that step queued
   * (a stream's first token) is written now rather than YIELD_MS later.
   */
  endSlice(): void {
    this.until = 0;
  }

  /** Drops a task before its next step (it gets cancel(reason)). */
  cancel(task: Task, reason: string): void {
    if (this.tasks.includes(task)) this.cancelled.set(task, reason);
  }

  /**
   * Stops admitting tasks and waits for the admitted ones; those still running after `graceMs`
   * are cancelled.
   */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    if (this.tasks.length === 0) return;
    const done = new Promise<void>((resolve) => this.idle.push(resolve));
    const timer = setTimeout(() => this.tasks.forEach((t) => this.cancel(t, 'the server is shutting down')), graceMs);
    await done;
    clearTimeout(timer);
  }

  /**
   * Runs steps round-robin for YIELD_MS (LONE_SLICE_MS for a lone task, see there), then gives
   * the event loop a turn and comes back. Tasks arrive only during turns, so the count at the slice's start
   * holds for all of it (a task finishing only shortens the round).
   */
  private readonly run = (): void => {
    const now = performance.now();
    this.until = now + (this.tasks.length > 1 || now - this.lastSubmit < LONE_SLICE_MS ? YIELD_MS : LONE_SLICE_MS);
    while (this.tasks.length > 0) {
      if (this.next >= this.tasks.length) {
        this.next = 0;
        this.roundStarted = false;
      }
      if (!this.roundStarted) {
        this.roundStarted = true;
        if (this.beforeRound && this.tasks.length > 1) guard(() => this.beforeRound!(this.tasks));
      }
      const task = this.tasks[this.next];
      const reason = this.cancelled.size === 0 ? undefined : this.cancelled.get(task);
      let finished = true;
      if (reason !== undefined) {
        this.cancelled.delete(task);
        guard(() => task.cancel(reason));
      } else {
        try {
          finished = task.step();
          this.steps++;
        } catch (e) {
          guard(() => task.fail(e));
        }
      }
      if (finished) this.tasks.splice(this.next, 1);
      else this.next++;
      if (performance.now() >= this.until) {
        if (this.tasks.length > 0) {
          setImmediate(this.run);
          return;
        }
      }
    }
    this.running = false;
    this.roundStarted = false;
    for (const resolve of this.idle.splice(0)) resolve();
  };
}

/** A task's own handler must not stop the loop for the others. */
function guard(f: () => void): void {
  try {
    f();
  } catch {
    // The task is dropped either way; its client has already been answered or is gone.
  }
}
