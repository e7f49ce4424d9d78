import { statSync } from 'node:fs';
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

/** `--decode-weights`: which copy of the weights decode steps read (default f32). */
export function decodeWeightsFlag(v: unknown): 'f32' | 'bf16' {
  const s = str(v) ?? 'f32';
  if (s !== 'f32' && s !== 'bf16') throw new UsageError(`--decode-weights must be f32 or bf16, got "${s}"`);
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

/** The error for a model that came without a tokenizer: the fix differs between the two formats. */
export function noTokenizer(model: string | undefined, alternative = ''): UsageError {
  let dir = false;
  try {
    dir = model !== undefined && statSync(model).isDirectory();
  } catch {
    // A path that vanished since loading is reported as a llama2.c file.
  }
  if (dir) return new UsageError(`${model}: no tokenizer.json in the directory; copy the model's tokenizer.json (and tokenizer_config.json) into it${alternative}`);
  return new UsageError(`${model}: no tokenizer found beside the checkpoint (tok<vocab>.bin or tokenizer.bin); pass --tokenizer PATH${alternative}`);
}
