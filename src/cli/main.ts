import { createBackend } from '../backend/index.js';
import type { Backend } from '../backend/backend.js';
import { printable } from '../tokenizer/tokenizer.js';
import { errnoWords, UsageError } from './args.js';
import type { Command, CommandIO } from './command.js';
import { benchCommand } from './commands/bench.js';
import { calibrateCommand } from './commands/calibrate.js';
import { chatCommand } from './commands/chat.js';
import { evalCommand } from './commands/eval.js';
import { generateCommand } from './commands/generate.js';
import { infoCommand } from './commands/info.js';
import { logitsCommand } from './commands/logits.js';
import { pressesCommand } from './commands/presses.js';
import { reportCommand } from './commands/report.js';
import { scoresCommand } from './commands/scores.js';
import { serveCommand } from './commands/serve.js';

/** Every subcommand; each lives in commands/<name>.ts. */
const commands: Command[] = [generateCommand, chatCommand, pressesCommand, scoresCommand, logitsCommand, calibrateCommand, evalCommand, reportCommand, serveCommand, benchCommand, infoCommand];

function helpText(): string {
  const w = Math.max(...commands.map((c) => c.name.length));
  return `kvpress — KV-cache compression for LLM inference (kvpress-ts)

Usage: kvpress <command> [options]     (kvpress <command> --help for details)

Commands:
${commands.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`).join('\n')}
`;
}

export function defaultIO(): CommandIO {
  let backend: Backend | null = null;
  // A reader that stops early (`kvpress presses | head`) is not an error.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  return {
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
    backend: () => (backend ??= createBackend()),
    isTTY: process.stderr.isTTY === true,
  };
}

/** Runs the CLI; returns the exit code (errors are one line on stderr, exit code 2). */
export async function main(argv: string[], io: CommandIO = defaultIO()): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.out(helpText());
    return name === undefined ? 2 : 0;
  }
  const cmd = commands.find((c) => c.name === name);
  if (!cmd) {
    io.err(`kvpress: unknown command "${name}" (commands: ${commands.map((c) => c.name).join(', ')})\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(cmd.usage + '\n');
    return 0;
  }
  try {
    return await cmd.run(rest, io);
  } catch (e) {
    if (process.env.KVPRESS_DEBUG) io.err(`${(e as Error).stack}\n`);
    io.err(`kvpress ${name}: ${oneLine(e)}\n`);
    return e instanceof UsageError || e instanceof Error ? 2 : 1;
  }
}

/**
 * An error as one printable line: a bare errno error from the file system says what failed in
 * words, and control bytes (from a binary file quoted in a message) are shown escaped.
 */
function oneLine(e: unknown): string {
  const x = e as NodeJS.ErrnoException;
  let msg = e instanceof Error ? e.message : String(e);
  if (e instanceof Error && typeof x.code === 'string' && typeof x.syscall === 'string' && msg.startsWith(`${x.code}:`)) {
    msg = `${x.path ?? x.syscall}: cannot ${x.syscall}: ${errnoWords(e)}`;
  }
  return printable(msg.replace(/\s*\n\s*/g, ' '));
}
