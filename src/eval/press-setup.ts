/**
 * Presses as the evaluation builds them: names checked against the registry, command-line
 * options routed to the presses that declare them, the run's seed given to random presses, and
 * every press built at its ratios before any work starts.
 */
import { presses as registry } from '../presses/index.js';
import type { Press } from '../presses/press.js';
import { NO_PRESS } from './names.js';
import { EvalError, type PressOptionArg } from './options.js';

/** Each press's options: unscoped ones go to every press that declares them. */
export function resolvePressOptions(pressNames: readonly string[], args: readonly PressOptionArg[]): Map<string, Record<string, string>> {
  const out = new Map(pressNames.map((p) => [p, {} as Record<string, string>]));
  for (const a of args) {
    if (a.press !== undefined) {
      const o = out.get(a.press);
      if (!o) throw new EvalError(`--press-option ${a.press}.${a.key}: press "${a.press}" is not among --press (${pressNames.join(', ')})`);
      o[a.key] = a.value;
      continue;
    }
    const takers = pressNames.filter((p) => a.key in registry.get(p).options);
    if (takers.length === 0) throw new EvalError(`--press-option ${a.key}: none of ${pressNames.join(', ')} has an option "${a.key}"`);
    for (const p of takers) out.get(p)![a.key] = a.value;
  }
  return out;
}

export function createPress(name: string, ratio: number, options: Record<string, string>, seed: number, targetSize?: number): Press {
  const entry = registry.get(name);
  // Random presses draw from the run's seed unless told otherwise, so reruns match.
  const withSeed = 'seed' in entry.options && !('seed' in options) ? { ...options, seed: String(seed) } : options;
  return registry.create(name, ratio, targetSize === undefined ? withSeed : { ...withSeed, targetSize: String(targetSize) });
}

/** Presses that compress to a target size while generating (their registry entry has a targetSize option). */
export function takesTargetSize(name: string): boolean {
  return 'targetSize' in registry.get(name).options;
}

/**
 * The ratios a press that compresses to a target size runs at: one that compresses only while
 * generating takes no ratio (0); one that also compresses the prompt takes every ratio.
 */
export function targetedRatios(name: string, ratios: readonly number[]): readonly number[] {
  return registry.get(name).phase === 'both' ? ratios : [0];
}

/** Presses that act while generating, as their registry entry declares (see PressPhase). */
export function isDecodingName(name: string): boolean {
  const phase = registry.get(name).phase ?? 'prefill';
  return phase === 'decoding' || phase === 'both';
}

/**
 * Every name `kvpress presses` accepts, registered or composed (a wrapper's prefix before any
 * scorer's name: chunkkv_snapkv, cam_knorm); an unknown one is refused with the registry's reason.
 */
export function checkPressNames(names: readonly string[]): void {
  if (names.length === 0) throw new EvalError('--press needs at least one press name');
  for (const n of names) {
    if (n === NO_PRESS) throw new EvalError(`"${NO_PRESS}" is the baseline and always runs; list only presses in --press`);
    try {
      registry.get(n);
    } catch (e) {
      throw new EvalError((e as Error).message);
    }
  }
  if (new Set(names).size !== names.length) throw new EvalError(`--press lists a press twice: ${names.join(',')}`);
}

/** True when the press, or a press it wraps, compresses the context with its question (Finch). */
export function readsQuestion(press: Press): boolean {
  for (let p: Press | undefined = press; p; p = (p as { inner?: Press }).inner) if (typeof p.setQuestionLength === 'function') return true;
  return false;
}

/**
 * Builds `name` at every ratio before any work starts. A press that is built at ratio 0 but
 * refuses every other ratio decides its own budget (a threshold: sim_layer_kv, dms_…) and runs
 * once, at ratio 0, with its achieved ratio reported; any other refusal is the press's own reason.
 */
export function probePress(name: string, ratios: readonly number[], options: Record<string, string>, seed: number, targetSize?: number): { press: Press; ratioFree: boolean } {
  const build = (r: number): Press => {
    try {
      return createPress(name, r, options, seed, targetSize);
    } catch (e) {
      throw new EvalError((e as Error).message);
    }
  };
  const nonzero = ratios.filter((r) => r > 0);
  if (nonzero.length === 0) return { press: build(0), ratioFree: false };
  let first: Press;
  try {
    first = createPress(name, nonzero[0], options, seed, targetSize);
  } catch (e) {
    let atZero: Press;
    try {
      atZero = createPress(name, 0, options, seed, targetSize);
    } catch {
      throw new EvalError((e as Error).message);
    }
    return { press: atZero, ratioFree: true };
  }
  for (const r of nonzero.slice(1)) build(r);
  return { press: first, ratioFree: false };
}
