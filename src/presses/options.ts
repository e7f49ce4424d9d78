import { PressError } from './press.js';

/**
 * A press's options, declared once: name → { type, default, range, description }. The option
 * values' TypeScript type (`OptionsOf`), their validation (`resolveOptions`), the registry entry,
 * `kvpress presses` and the README table all derive from this one declaration.
 */
export type OptionSpec =
  | { type: 'number'; default: number; description: string; min?: number; max?: number; exclusiveMin?: boolean }
  | { type: 'integer'; default: number; description: string; min?: number; max?: number }
  | { type: 'boolean'; default: boolean; description: string }
  | { type: 'string'; default: string; description: string; values?: readonly string[] };

export type OptionSpecs = Record<string, OptionSpec>;

type ValueOf<S extends OptionSpec> = S extends { type: 'boolean' } ? boolean
  : S extends { type: 'string'; values: readonly (infer V)[] } ? V
  : S extends { type: 'string' } ? string
  : number;

/** The resolved option values of a declaration: every option present, typed by its spec. */
export type OptionsOf<S extends OptionSpecs> = { -readonly [K in keyof S]: ValueOf<S[K]> };

export type OptionValues = Record<string, number | boolean | string>;

/** Declares a press's options (keeps literal types so `OptionsOf` can derive the value types). */
export function defineOptions<const S extends OptionSpecs>(specs: S): S {
  return specs;
}

/** The same declaration with other defaults (a registered configuration such as epsilon = 1e-2). */
export function withDefaults<S extends OptionSpecs>(specs: S, defaults: Partial<OptionsOf<S>>): S {
  const out = { ...specs } as Record<string, OptionSpec>;
  for (const [k, v] of Object.entries(defaults)) out[k] = { ...out[k], default: v } as OptionSpec;
  return out as S;
}

/**
 * Every option of `specs` from `given` (typed values, or strings as the CLI passes them), defaults
 * filled in. An unknown key, a mistyped or out-of-range value is a one-line PressError naming
 * `who` and the valid range.
 */
export function resolveOptions<S extends OptionSpecs>(specs: S, given: object | null | undefined, who: string): OptionsOf<S> {
  if (given !== undefined && (given === null || typeof given !== 'object' || Array.isArray(given))) {
    throw new PressError(`${who}: options must be an object of option → value, got ${given === null ? 'null' : Array.isArray(given) ? 'an array' : typeof given}`);
  }
  const out: OptionValues = {};
  for (const [k, spec] of Object.entries(specs)) out[k] = spec.default;
  for (const [k, raw] of Object.entries(given ?? {})) {
    if (raw === undefined) continue;
    const spec = Object.hasOwn(specs, k) ? specs[k] : undefined;
    if (!spec) {
      const valid = Object.keys(specs);
      throw new PressError(`${who} has no option "${k}" (${valid.length ? `options: ${valid.join(', ')}` : 'it takes no options'})`);
    }
    out[k] = coerceOption(who, k, spec, raw);
  }
  return out as OptionsOf<S>;
}

/** One option value from a typed value or a CLI string; a PressError when it does not fit the spec. */
export function coerceOption(who: string, key: string, spec: OptionSpec, raw: unknown): number | boolean | string {
  const bad = (want: string) => new PressError(`${who} option ${key} must be ${want}, got ${typeof raw === 'string' ? `"${raw}"` : String(raw)}`);
  switch (spec.type) {
    case 'boolean': {
      if (typeof raw === 'boolean') return raw;
      if (raw === 'true' || raw === '1') return true;
      if (raw === 'false' || raw === '0') return false;
      throw bad('true or false');
    }
    case 'string': {
      if (typeof raw !== 'string') throw bad('a string');
      if (spec.values && !spec.values.includes(raw)) throw bad(`one of ${spec.values.join(', ')}`);
      return raw;
    }
    default: {
      const x = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
      const integer = spec.type === 'integer';
      const min = spec.min ?? -Infinity, max = spec.max ?? Infinity, open = spec.type === 'number' && spec.exclusiveMin === true;
      if (!Number.isFinite(x) || (integer && !Number.isInteger(x)) || (open ? x <= min : x < min) || x > max) {
        throw bad(`${integer ? 'an integer' : 'a finite number'}${min > -Infinity ? ` ${open ? '>' : '≥'} ${min}` : ''}${max < Infinity ? ` and ≤ ${max}` : ''}`);
      }
      return x;
    }
  }
}

/** `name=default` list of a declaration, as `kvpress presses` and the README show it. */
export function describeDefaults(specs: OptionSpecs): string[] {
  return Object.entries(specs).map(([k, o]) => `${k}=${String(o.default)}`);
}

/**
 * The budget of a press that takes it as an option (ThinK's channel ratio, DuoAttention's head
 * ratio): a registry compression ratio sets it, as kvpress's evaluation does; giving both,
 * different, is an error.
 */
export function ratioOption(ratio: number, given: number, name: string): number {
  if (ratio !== 0 && given !== 0 && ratio !== given) throw new Error(`got the ratio ${ratio} and ${name} ${given}: give one`);
  return ratio || given;
}
