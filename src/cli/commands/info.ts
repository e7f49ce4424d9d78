import { backendInfo, BACKEND_ENV } from '../../backend/index.js';
import { parse } from '../args.js';
import type { Command } from '../command.js';

export const infoCommand: Command = {
  name: 'info',
  summary: 'show which kernel backend is active and why',
  usage: `kvpress info [--json]

Prints the active backend (native addon, WebAssembly or TypeScript), why it was chosen, its
thread count, and the state of every backend. ${BACKEND_ENV}=native|wasm|js forces one.

Examples:
  kvpress info
  ${BACKEND_ENV}=js kvpress info --json`,
  options: { json: { type: 'boolean' } },
  async run(argv, io) {
    const { values } = parse(argv, this.options);
    const info = backendInfo();
    if (values.json === true) {
      io.out(JSON.stringify(info) + '\n');
      return info.active ? 0 : 2;
    }
    io.out(`active backend: ${info.active ?? 'none'}${info.active ? ` (${info.threads} thread${info.threads > 1 ? 's' : ''})` : ''}\n`);
    io.out(`reason: ${info.reason}\n`);
    for (const [name, st] of Object.entries(info.backends)) io.out(`  ${name.padEnd(6)} ${st.available ? 'available  ' : 'unavailable'}  ${st.detail}\n`);
    return info.active ? 0 : 2;
  },
};
