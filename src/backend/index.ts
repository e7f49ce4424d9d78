import type { Backend } from './backend.js';
import { JsBackend } from './js/kernels.js';
import { NativeBackend, clampThreads, loadNative, maxThreads } from './native/index.js';
import { WasmBackend, loadWasm } from './wasm/index.js';

export type { AttentionArgs, Backend } from './backend.js';

export type BackendName = 'native' | 'wasm' | 'js';
export type BackendChoice = BackendName | 'auto';

export interface BackendOptions {
  /** Which backend to use; 'auto' (the default) takes the fastest available: native → wasm → js. */
  prefer?: BackendChoice;
  /** Threads for the kernels (native and wasm); default: the cores available to this process. */
  threads?: number;
}

export interface BackendStatus {
  available: boolean;
  /** What the backend runs, or why it is unavailable. */
  detail: string;
}

export interface BackendInfo {
  /** The backend `createBackend(opts)` returns, or null when a forced choice is unavailable. */
  active: BackendName | null;
  /** Why that one: the order of preference, or the forcing variable, or the error. */
  reason: string;
  /** Threads the active backend uses by default. */
  threads: number;
  backends: Record<BackendName, BackendStatus>;
}

/**
 * Environment variable that overrides any `prefer` option: `KVPRESS_BACKEND=native|wasm|js|auto`.
 * Forcing a backend that is unavailable is an error, not a silent fallback.
 */
export const BACKEND_ENV = 'KVPRESS_BACKEND';

const ORDER: BackendName[] = ['native', 'wasm', 'js'];

function statuses(): Record<BackendName, BackendStatus> {
  const n = loadNative();
  const w = loadWasm();
  return {
    native: n.ok
      ? { available: true, detail: `${n.info.isa} kernels, GEMM ${n.info.gemmF32} (f32) / ${n.info.gemmBf16} (bf16)` }
      : { available: false, detail: n.reason },
    wasm: w.ok ? { available: true, detail: 'WebAssembly SIMD128 kernels, worker threads' } : { available: false, detail: w.reason },
    js: { available: true, detail: 'TypeScript reference kernels, single thread' },
  };
}

function requested(opts: BackendOptions): { choice: BackendChoice; source: string } {
  const env = process.env[BACKEND_ENV];
  if (env !== undefined && env !== '') {
    if (!isChoice(env)) throw new Error(`${BACKEND_ENV}=${env} is not one of native, wasm, js, auto`);
    return { choice: env, source: `${BACKEND_ENV}=${env}` };
  }
  const prefer = opts.prefer ?? 'auto';
  if (!isChoice(prefer)) throw new Error(`backend "${String(prefer)}" is not one of native, wasm, js, auto`);
  return { choice: prefer, source: `prefer: '${prefer}'` };
}

function isChoice(s: string): s is BackendChoice {
  return s === 'auto' || (ORDER as string[]).includes(s);
}

/** Resolves the choice against what is available; the reason names every skipped backend. */
function resolve(opts: BackendOptions): { name: BackendName; reason: string } | { error: string } {
  const { choice, source } = requested(opts);
  const st = statuses();
  if (choice !== 'auto') {
    if (!st[choice].available) return { error: `${source}: the ${choice} backend is unavailable: ${st[choice].detail}` };
    return { name: choice, reason: `forced by ${source}` };
  }
  const skipped: string[] = [];
  for (const name of ORDER) {
    if (st[name].available) {
      const why = skipped.length ? `; ${skipped.join('; ')}` : '';
      return { name, reason: `fastest available${why}` };
    }
    skipped.push(`${name}: ${st[name].detail}`);
  }
  throw new Error('unreachable: the js backend is always available');
}

/**
 * The kernels for this process: native when the addon is built, else WebAssembly, else the
 * TypeScript reference. Cheap after the first call (the addon and module load once).
 */
export function createBackend(opts: BackendOptions = {}): Backend {
  const r = resolve(opts);
  if ('error' in r) throw new Error(r.error);
  if (r.name === 'native') {
    const n = loadNative();
    if (!n.ok) throw new Error(n.reason);
    return new NativeBackend(n.addon, n.info, opts.threads ?? maxThreads());
  }
  if (r.name === 'wasm') {
    const w = loadWasm();
    if (!w.ok) throw new Error(w.reason);
    return new WasmBackend(w.module, opts.threads ?? maxThreads(), `WebAssembly SIMD128 kernels (${r.reason})`);
  }
  if (opts.threads !== undefined) clampThreads(opts.threads);
  return new JsBackend(`TypeScript reference kernels, single thread (${r.reason})`);
}

/** Which backend `createBackend(opts)` picks and why, plus the state of every backend. */
export function backendInfo(opts: BackendOptions = {}): BackendInfo {
  const backends = statuses();
  let r: ReturnType<typeof resolve>;
  try {
    r = resolve(opts);
  } catch (e) {
    r = { error: (e as Error).message };
  }
  if ('error' in r) return { active: null, reason: r.error, threads: 0, backends };
  const threads = r.name === 'js' ? 1 : clampThreads(opts.threads ?? maxThreads());
  return { active: r.name, reason: r.reason, threads, backends };
}
