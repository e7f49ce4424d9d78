import { backendInfo, BACKEND_ENV } from '../../backend/index.js';
import { describeModel } from '../../model/describe.js';
import { parse, str } from '../args.js';
import type { Command } from '../command.js';

export const infoCommand: Command = {
  name: 'info',
  summary: 'show which kernel backend is active and why, or describe a model (--model)',
  usage: `kvpress info [--json] [--model PATH]

Prints the active backend (native addon, WebAssembly or TypeScript), why it was chosen, its
thread count, and the state of every backend. ${BACKEND_ENV}=native|wasm|js forces one.
With --model PATH (llama2.c .bin, .gguf or Hugging Face directory): the model's architecture,
tensor types, parameter count and the memory its weights take once loaded (a GGUF is read from
its header only).

Examples:
  kvpress info
  ${BACKEND_ENV}=js kvpress info --json
  kvpress info --model test/fixtures/gguf/mini-llama-q4_k_m.gguf`,
  options: { json: { type: 'boolean' }, model: { type: 'string' } },
  async run(argv, io) {
    const { values } = parse(argv, this.options);
    const modelPath = str(values.model);
    if (modelPath !== undefined) {
      const d = await describeModel(modelPath);
      if (values.json === true) io.out(JSON.stringify(d) + '\n');
      else {
        const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
        io.out(`model: ${d.path} (${d.format})\n`);
        io.out(`architecture: ${d.architecture}, ${d.layers} layers, hidden ${d.hiddenSize}, vocabulary ${d.vocabSize}\n`);
        io.out(`tensor types: ${Object.entries(d.tensorTypes).map(([t, n]) => `${t} ×${n}`).join(', ')}\n`);
        io.out(`parameters: ${d.parameters.toLocaleString('en-US')}\n`);
        io.out(`memory: ${mib(d.storedBytes)} stored, ${mib(d.loadedBytes)} once loaded (f32 weights)\n`);
      }
      return 0;
    }
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
