import type { Backend } from '../backend/backend.js';
import type { OptionSpec } from './args.js';

/** What a command can use besides its arguments (so tests can capture output). */
export interface CommandIO {
  out(text: string): void;
  err(text: string): void;
  /** The backend chosen for this process (created on first use). */
  backend(): Backend;
  /** True when stderr is an interactive terminal (progress bars only then). */
  isTTY: boolean;
}

export interface Command {
  name: string;
  /** One line for `kvpress --help`. */
  summary: string;
  /** Full `--help` text with examples. */
  usage: string;
  options: OptionSpec;
  run(argv: string[], io: CommandIO): Promise<number>;
}
