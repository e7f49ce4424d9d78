/** How one fuzz input ended, and the messages between the runner and its workers. */

export interface Counts {
  /** Parsed and used without error. */
  ok: number;
  /** Rejected with a one-line Error naming the file: what a bad file should get. */
  typed: number;
  /** Anything else: a TypeError/RangeError from deep inside, a multi-line message, a dead worker. */
  crash: number;
  /** No progress for the watchdog's period. */
  hang: number;
}

export interface WorkerJob {
  family: string;
  seed: number;
  from: number;
  to: number;
  /** SharedArrayBuffer of four Int32: the index being parsed, then the ok, typed and crash counts. */
  progress: SharedArrayBuffer;
}

export type WorkerMessage = { type: 'done' } | { type: 'crash'; index: number; message: string };

const ENGINE_ERRORS = [TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError];

/** A thrown value is a typed rejection when it is a plain Error, on one line, naming the input's folder. */
export function classify(e: unknown, dir: string): { kind: 'typed' } | { kind: 'crash'; message: string } {
  const message = e instanceof Error ? `${e.constructor.name}: ${e.message}` : `non-Error thrown: ${String(e)}`;
  if (!(e instanceof Error) || ENGINE_ERRORS.some((c) => e instanceof c)) return { kind: 'crash', message: message.slice(0, 300) };
  if (e.message.includes('\n') || !e.message.includes(dir)) return { kind: 'crash', message: message.slice(0, 300) };
  return { kind: 'typed' };
}
