import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiError } from '../src/serve/errors.js';
import { LONE_SLICE_MS, Scheduler, YIELD_MS, type Task } from '../src/serve/scheduler.js';

/** A task of `steps` steps that logs each one as `name`; a step busy-waits `stepMs` (a decode step's length). */
function task(name: string, steps: number, log: string[], stepMs = 0, on: { first?: () => void; last?: () => void } = {}): Task {
  let left = steps;
  return {
    step() {
      if (left === steps) on.first?.();
      const until = performance.now() + stepMs;
      while (performance.now() < until);
      log.push(name);
      if (left === 1) on.last?.();
      return --left === 0;
    },
    cancel: (reason) => log.push(`${name} cancelled: ${reason}`),
    fail: (e) => log.push(`${name} failed: ${(e as Error).message}`),
  };
}

const idle = (s: Scheduler) => s.drain(60_000);

test('scheduler: admitted tasks take one step each in turn, in the order they came', async () => {
  const log: string[] = [];
  const s = new Scheduler(8);
  s.submit(task('a', 3, log));
  s.submit(task('b', 1, log));
  s.submit(task('c', 2, log));
  await idle(s);
  assert.deepEqual(log, ['a', 'b', 'c', 'a', 'c', 'a']);
  assert.equal(s.steps, 6);
});

test('scheduler: the batch round runs once per round of two or more tasks, never for a lone task', async () => {
  const log: string[] = [];
  const s = new Scheduler(8, (tasks) => log.push(`round of ${tasks.length}`));
  s.submit(task('a', 3, log));
  s.submit(task('b', 2, log));
  await idle(s);
  // Two rounds of both; then a alone, whose step needs no round.
  assert.deepEqual(log, ['round of 2', 'a', 'b', 'round of 2', 'a', 'b', 'a']);
});

test('scheduler: a lone long answer gives the event loop a turn every LONE_SLICE_MS, two answers every YIELD_MS', async () => {
  const log: string[] = [];
  const s = new Scheduler(8);
  const stepMs = 0.5;
  // 100 steps of 0.5 ms: 50 ms of work. The scheduler yields by time, so a timer set in the
  // first step runs after at most a slice's worth more; a loop that never yielded would let it
  // run after all 100.
  const timerAfter = (t: () => Task) => {
    let seen: (steps: number) => void;
    const seenAt = new Promise<number>((resolve) => (seen = resolve));
    const n = log.length;
    s.submit(t());
    return { setIn: () => setTimeout(() => seen(log.length - n), 0), seenAt };
  };
  const lone = timerAfter(() => task('a', 100, log, stepMs, { first: () => lone.setIn() }));
  const at = await lone.seenAt;
  assert.ok(at <= LONE_SLICE_MS / stepMs + 2, `the timer ran after ${at} of 100 steps`);
  // A request arriving mid-answer is admitted and interleaved at once; with two tasks the turns
  // come every YIELD_MS.
  let first = true;
  const two = timerAfter(() => task('b', 40, log, stepMs, { first: () => first && ((first = false), two.setIn()) }));
  const atTwo = await two.seenAt;
  assert.ok(atTwo <= YIELD_MS / stepMs + 2, `with two tasks the timer ran after ${atTwo} steps`);
  await idle(s);
  const firstB = log.indexOf('b');
  assert.deepEqual(log.slice(firstB, firstB + 4), ['b', 'a', 'b', 'a']);
  assert.equal(log.length, 140);
});

test('scheduler: a cancelled task is dropped before its next step; 429 past the queue, 503 after drain', async () => {
  const log: string[] = [];
  const s = new Scheduler(2);
  const a = task('a', 1000, log);
  s.submit(a);
  // b's last step cancels a (as a client's disconnect would, between two of a's steps).
  s.submit(task('b', 3, log, 0, { last: () => s.cancel(a, 'client disconnected') }));
  assert.throws(() => s.submit(task('c', 1, log)), (e: unknown) => e instanceof ApiError && e.status === 429);
  await idle(s);
  assert.deepEqual(log, ['a', 'b', 'a', 'b', 'a', 'b', 'a cancelled: client disconnected']);
  assert.throws(() => s.submit(task('d', 1, log)), (e: unknown) => e instanceof ApiError && e.status === 503);
});

test('scheduler: endSlice gives the event loop its turn right after the step that called it', async () => {
  const log: string[] = [];
  const s = new Scheduler(8);
  // Zero-length steps: all three would run in one 2 ms slice, before anything they queued.
  s.submit(task('a', 3, log, 0, {
    first: () => {
      setImmediate(() => log.push('queued by the first step'));
      s.endSlice();
    },
  }));
  await idle(s);
  assert.deepEqual(log, ['a', 'queued by the first step', 'a', 'a']);
});
