import { JsBackend } from '../../src/backend/js/kernels.js';
import { main } from '../../src/cli/main.js';
import type { CommandIO } from '../../src/cli/command.js';

/** Runs the CLI in-process and captures what it prints. */
export async function runCli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '', stderr = '';
  const backend = new JsBackend();
  const io: CommandIO = {
    out: (t) => { stdout += t; },
    err: (t) => { stderr += t; },
    backend: () => backend,
    isTTY: false,
  };
  const code = await main(argv, io);
  return { code, stdout, stderr };
}
