import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, statSync, unlinkSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A mistake in what the user asked for: printed as one line, exit code 2. */
export class UsageError extends Error {}

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;

/** A value that parseArgs would take for a flag: a negative number (`--ratio -0.5`). */
const NEGATIVE_NUMBER = /^-(\d|\.\d|Infinity$|NaN$)/;

/**
 * Parses argv against `options`; unknown flags, missing values and a single-value flag given
 * twice become UsageErrors. A negative number after a flag that takes a value is that value, so
 * `--ratio -0.5` reaches the flag's own range check.
 */
export function parse(argv: string[], options: OptionSpec): { values: Record<string, string | boolean | string[] | boolean[] | undefined>; positionals: string[] } {
  const all: OptionSpec = { ...options, help: { type: 'boolean', short: 'h' } };
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i], spec = a.startsWith('--') && !a.includes('=') && Object.hasOwn(all, a.slice(2)) ? all[a.slice(2)] : undefined;
    if (spec?.type === 'string' && i + 1 < argv.length && NEGATIVE_NUMBER.test(argv[i + 1])) args.push(`${a}=${argv[++i]}`);
    else args.push(a);
  }
  let r;
  try {
    r = parseArgs({ args, options: all, allowPositionals: true, strict: true, tokens: true });
  } catch (e) {
    const flags = Object.keys(options).map((k) => `--${k}`).join(', ');
    throw new UsageError(`${(e as Error).message.split('\n')[0].replace(/\. To specify a positional.*/, '')} (valid options: ${flags})`);
  }
  const seen = new Map<string, string | undefined>();
  for (const t of r.tokens) {
    if (t.kind !== 'option' || all[t.name].multiple) continue;
    if (seen.has(t.name)) {
      const show = (v: string | undefined) => (v === undefined ? '' : ` ${JSON.stringify(v)}`);
      throw new UsageError(`--${t.name} is given twice (${`--${t.name}${show(seen.get(t.name))}`} and ${`--${t.name}${show(t.value)}`}); give it once`);
    }
    seen.set(t.name, t.value);
  }
  return { values: r.values as Record<string, string | boolean | string[] | undefined>, positionals: r.positionals };
}

export function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/**
 * `--weights f32|bf16|q8_0|q4_k`: the number format the model's matrices are held in (default: as
 * the checkpoint stores them; q8_0/q4_k quantize in memory). `--decode-weights` is its former name, still accepted; with `err`
 * given, a one-line notice says so.
 */
export function weightsFlag(values: Record<string, unknown>, err?: (text: string) => void): 'f32' | 'bf16' | 'q8_0' | 'q4_k' | undefined {
  const old = str(values['decode-weights']), now = str(values.weights);
  if (old !== undefined && now !== undefined) throw new UsageError('--decode-weights is the former name of --weights: give only --weights');
  const name = old !== undefined ? 'decode-weights' : 'weights', s = old ?? now;
  if (s === undefined) return undefined;
  if (s !== 'f32' && s !== 'bf16' && s !== 'q8_0' && s !== 'q4_k') throw new UsageError(`--${name} must be f32, bf16, q8_0 or q4_k, got "${s}"`);
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
  // Past 2^53 a decimal integer is silently rounded (99999999999999999999 reads as 1e20).
  if (integer && !Number.isSafeInteger(x)) throw new UsageError(`--${name} must be at most ${Number.MAX_SAFE_INTEGER} (2^53 − 1), got "${String(v)}"`);
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

/** `--threads`: refused above the cores this machine has rather than silently capped. */
export function threadsFlag(v: unknown): number | undefined {
  const cores = availableParallelism();
  const t = num(v, 'threads', { min: 1, integer: true });
  if (t !== undefined && t > cores) throw new UsageError(`--threads ${t} is more than the ${cores} cores of this machine; use 1 to ${cores}`);
  return t;
}

const ERRNO_WORDS: Record<string, string> = {
  ENOENT: 'its folder does not exist',
  ENOTDIR: 'part of the path is a file, not a folder',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EROFS: 'the file system is read-only',
  EISDIR: 'it is a folder',
  EEXIST: 'it already exists',
  ENOSPC: 'the disk is full',
  EMFILE: 'too many open files',
  ENAMETOOLONG: 'the name is too long',
};

/** An errno (`EACCES`) in words, the code kept in parentheses for searching. */
export function errnoWords(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return code && Object.hasOwn(ERRNO_WORDS, code) ? `${ERRNO_WORDS[code]} (${code})` : code ?? String((e as Error)?.message ?? e);
}

/**
 * Checks before any work that `path` can be written as a file: an existing file is kept as it
 * is (opened for append), a probe file is removed again.
 */
export function checkOutputFile(flag: string, path: string): void {
  let existed = false;
  try {
    existed = existsSync(path);
    if (existed && statSync(path).isDirectory()) throw new UsageError(`--${flag} ${path} is a folder; name a file`);
    closeSync(openSync(path, 'a'));
    if (!existed) unlinkSync(path);
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`--${flag} ${path}: cannot write there: ${errnoWords(e)}; choose another path`);
  }
}

/** Checks before any work that `path` is, or can be created as, a writable folder. */
export function checkOutputDir(flag: string, path: string): void {
  if (existsSync(path) && !statSync(path).isDirectory()) throw new UsageError(`--${flag} ${path} is a file, not a folder; name a results folder`);
  try {
    mkdirSync(path, { recursive: true });
    accessSync(path, constants.W_OK);
  } catch (e) {
    throw new UsageError(`--${flag} ${path}: cannot create or write this folder: ${errnoWords(e)}; choose another path`);
  }
}
