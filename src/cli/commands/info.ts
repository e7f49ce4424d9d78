import { backendInfo, BACKEND_ENV, type BackendName } from '../../backend/index.js';
import { loadNative } from '../../backend/native/index.js';
import { describeModel } from '../../model/describe.js';
import { parse, str } from '../args.js';
import type { Command } from '../command.js';

export const infoCommand: Command = {
  name: 'info',
  summary: 'show which kernel backend is active and why, or describe a model (--model)',
  usage: `kvpress info [--json] [--model PATH]

Prints the active backend (native addon, WebAssembly or TypeScript), why it was chosen, its
kernels (instruction set, the GEMM micro-kernels for f32 and bf16 weights, the cache sizes
that block it), its thread count, and the state of every backend. ${BACKEND_ENV}=native|wasm|js
forces one. --json prints {"backend", "kernels", "reason", "threads", "backends", ...}.
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
        io.out(`memory: ${mib(d.storedBytes)} stored, ${mib(d.loadedBytes)} once loaded\n`);
      }
      return 0;
    }
    const info = backendInfo();
    const k = kernels(info.active);
    if (values.json === true) {
      io.out(JSON.stringify({ backend: info.active, kernels: k, ...info }) + '\n');
      return info.active ? 0 : 2;
    }
    io.out(`active backend: ${info.active ?? 'none'}${info.active ? ` (${info.threads} thread${info.threads > 1 ? 's' : ''})` : ''}\n`);
    if (k) io.out(`kernels: ${k.isa}; GEMM ${k.gemm.f32} (f32 weights), ${k.gemm.bf16} (bf16 weights)\n`);
    io.out(`reason: ${info.reason}\n`);
    for (const [name, st] of Object.entries(info.backends)) io.out(`  ${name.padEnd(6)} ${st.available ? 'available  ' : 'unavailable'}  ${st.detail}\n`);
    return info.active ? 0 : 2;
  },
};

interface Kernels {
  isa: string;
  /** The micro-kernel that runs prefill products, per weight format. */
  gemm: { f32: string; bf16: string };
  /** Native only: the data cache sizes read at load time and the GEMM blocks sized from them. */
  cacheBytes?: { l1: number; l2: number; l3: number };
  blocking?: { f32: { kc: number; mc: number; nc: number }; bf16: { kc: number; mc: number; nc: number } };
}

function kernels(active: BackendName | null): Kernels | null {
  if (active === 'native') {
    const n = loadNative();
    if (!n.ok) return null;
    const i = n.info;
    return { isa: i.isa, gemm: { f32: i.gemmF32, bf16: i.gemmBf16 }, cacheBytes: i.cacheBytes, blocking: { f32: i.blockingF32, bf16: i.blockingBf16 } };
  }
  if (active === 'wasm') return { isa: 'wasm-simd128', gemm: { f32: 'wasm simd128 6x8', bf16: 'wasm simd128 bf16 rows (gemv)' } };
  if (active === 'js') return { isa: 'js', gemm: { f32: 'js 1x4', bf16: 'js bf16 4-row blocks' } };
  return null;
}
