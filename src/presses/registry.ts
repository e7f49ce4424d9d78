import { coerceOption, type OptionSpec, type OptionValues } from './options.js';
import { PressError, type Press } from './press.js';

export { PressError };

export type { OptionSpec, OptionValues } from './options.js';

/** A registered press: its name, a one-line description, its options and a factory. */
export interface PressEntry {
  name: string;
  description: string;
  options: Record<string, OptionSpec>;
  /** Builds the press; `options` holds every option (defaults filled in, types checked). */
  create(compressionRatio: number, options: OptionValues): Press;
}

export class PressRegistry {
  private readonly entries = new Map<string, PressEntry>();

  register(...entries: PressEntry[]): this {
    for (const e of entries) {
      if (this.entries.has(e.name)) throw new Error(`press "${e.name}" is registered twice`);
      this.entries.set(e.name, e);
    }
    return this;
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  list(): PressEntry[] {
    return [...this.entries.values()];
  }

  get(name: string): PressEntry {
    const e = this.entries.get(name);
    if (e) return e;
    const close = closeMatches(name, this.names());
    throw new PressError(`unknown press "${name}"${close.length ? ` (did you mean ${close.join(', ')}?)` : ''}; \`kvpress presses\` lists them all`);
  }

  /**
   * Creates a press by name. `options` values may be strings (from the CLI's key=value) or
   * typed values (from the API); unknown keys and mistyped values are PressErrors.
   */
  create(name: string, compressionRatio = 0, options: Record<string, unknown> = {}): Press {
    if (typeof name !== 'string') throw new PressError(`a press name must be a string, got ${name === null ? 'null' : typeof name}; \`kvpress presses\` lists them`);
    const e = this.get(name);
    if (options === null || typeof options !== 'object' || Array.isArray(options)) {
      throw new PressError(`press "${name}": options must be an object of option → value (e.g. { windowSize: 32 }), got ${options === null ? 'null' : Array.isArray(options) ? 'an array' : typeof options}`);
    }
    if (typeof compressionRatio !== 'number' || !(compressionRatio >= 0 && compressionRatio < 1)) {
      throw new PressError(`compression ratio must be a number in [0, 1), got ${typeof compressionRatio === 'string' ? `the string "${compressionRatio}"` : String(compressionRatio)}`);
    }
    const values: OptionValues = {};
    for (const [k, spec] of Object.entries(e.options)) values[k] = spec.default;
    for (const [k, raw] of Object.entries(options)) {
      const spec = Object.hasOwn(e.options, k) ? e.options[k] : undefined;
      if (!spec) {
        const valid = Object.keys(e.options);
        throw new PressError(`press "${name}" has no option "${k}" (${valid.length ? `options: ${valid.join(', ')}` : 'it takes no options'})`);
      }
      values[k] = coerceOption(`press "${name}"`, k, spec, raw);
    }
    try {
      return e.create(compressionRatio, values);
    } catch (err) {
      throw new PressError(`press "${name}": ${(err as Error).message}`);
    }
  }
}

/** Names within edit distance ≤ 3 or sharing a prefix/substring, best first. */
export function closeMatches(name: string, names: readonly string[], max = 3): string[] {
  const scored = names.map((n) => ({ n, d: n.includes(name) || name.includes(n) ? 0.5 : levenshtein(name, n) }));
  return scored.filter((s) => s.d <= 3).sort((a, b) => a.d - b.d).slice(0, max).map((s) => s.n);
}

function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length];
}
