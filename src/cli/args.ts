import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A mistake in what the user asked for: printed as one line, exit code 2. */
export class UsageError extends Error {}

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;

/** Parses argv against `options`; unknown flags and missing values become UsageErrors. */
export function parse(argv: string[], options: OptionSpec): { values: Record<string, string | boolean | string[] | boolean[] | undefined>; positionals: string[] } {
  try {
    const r = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
    return { values: r.values as Record<string, string | boolean | string[] | undefined>, positionals: r.positionals };
  } catch (e) {
    const flags = Object.keys(options).map((k) => `--${k}`).join(', ');
    throw new UsageError(`${(e as Error).message.split('\n')[0].replace(/\. To specify a positional.*/, '')} (valid options: ${flags})`);
  }
}

export function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/**
 * `--weights f32|bf16`: the number format the model's matrices are held in (default: as the
 * checkpoint stores them). `--decode-weights` is its former name, still accepted; with `err`
 * given, a one-line notice says so.
 */
export function weightsFlag(values: Record<string, unknown>, err?: (text: string) => void): 'f32' | 'bf16' | undefined {
  const old = str(values['decode-weights']), now = str(values.weights);
  if (old !== undefined && now !== undefined) throw new UsageError('--decode-weights is the former name of --weights: give only --weights');
  const name = old !== undefined ? 'decode-weights' : 'weights', s = old ?? now;
  if (s === undefined) return undefined;
  if (s !== 'f32' && s !== 'bf16') throw new UsageError(`--${name} must be f32 or bf16, got "${s}"`);
  if (old !== undefined && err) err(`kvpress: --decode-weights is now --weights: the weights are held once, as ${s}, for prefill and decode\n`);
  return s;
}

/** A numeric flag: undefined when absent, UsageError when not a number in [min, max]. */
export function num(v: unknown, name: string, opts: { min?: number; max?: number; integer?: boolean } = {}): number | undefined {
  if (v === undefined) return undefined;
  const x = Number(v);
  const { min = -Infinity, max = Infinity, integer = false } = opts;
  if (typeof v !== 'string' || v.trim() === '' || !Number.isFinite(x) || x < min || x > max || (integer && !Number.isInteger(x))) {
    const range = `${integer ? 'an integer' : 'a number'}${min > -Infinity ? ` ≥ ${min}` : ''}${max < Infinity ? ` and ≤ ${max}` : ''}`;
    throw new UsageError(`--${name} must be ${range}, got "${String(v)}"`);
  }
  return x;
}
