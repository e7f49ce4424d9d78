import { backendInfo, BACKEND_ENV, type BackendName } from '../../backend/index.js';
import { loadNative } from '../../backend/native/index.js';
import { parse } from '../args.js';
import type { Command } from '../command.js';

export const infoCommand: Command = {
  name: 'info',
  summary: 'show which kernel backend is active and why',
  usage: `kvpress info [--json]

Prints the active backend (native addon, WebAssembly or TypeScript), why it was chosen, its
kernels (instruction set, the GEMM micro-kernels for f32 and bf16 weights, the cache sizes
that block it), its thread count, and the state of every backend. ${BACKEND_ENV}=native|wasm|js
forces one. --json prints {"backend", "kernels", "reason", "threads", "backends", ...}.

Examples:
  kvpress info
  ${BACKEND_ENV}=js kvpress info --json`,
  options: { json: { type: 'boolean' } },
  async run(argv, io) {
    const { values } = parse(argv, this.options);
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
