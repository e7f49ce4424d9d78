import { coerceOption, type OptionSpec, type OptionValues } from './options.js';
import { PressError, requireScorer, type Press, type PressPhase } from './press.js';
import type { ScorerPress } from './scorer.js';

export { PressError };

export type { OptionSpec, OptionValues } from './options.js';

/** A registered press: its name, a one-line description, its options and a factory. */
export interface PressEntry {
  name: string;
  description: string;
  options: Record<string, OptionSpec>;
  /** When the press acts ('prefill' when absent), known before building it (`kvpress eval` sorts by it). */
  phase?: PressPhase;
  /** Builds the press; `options` holds every option (defaults filled in, types checked). */
  create(compressionRatio: number, options: OptionValues): Press;
}

/**
 * A wrapper over any scorer press: registered once, it composes with every registered scorer as
 * `<prefix>_<scorer name>` (chunkkv_snapkv, dms_knorm, merging_expected_attention), taking the
 * options of both (the wrapper's win when a name is shared).
 */
export interface WrapperEntry {
  prefix: string;
  description: string;
  options: Record<string, OptionSpec>;
  /** When the composed press acts, if not when its scorer does (CaM: decoding). */
  phase?: PressPhase;
  wrap(inner: ScorerPress, compressionRatio: number, options: OptionValues): Press;
}

export class PressRegistry {
  private readonly entries = new Map<string, PressEntry>();
  private readonly wrapperEntries = new Map<string, WrapperEntry>();

  registerWrapper(...wrappers: WrapperEntry[]): this {
    for (const w of wrappers) {
      if (this.wrapperEntries.has(w.prefix)) throw new Error(`wrapper "${w.prefix}" is registered twice`);
      this.wrapperEntries.set(w.prefix, w);
    }
    return this;
  }

  /** The registered wrappers (`kvpress presses` lists them apart from the presses). */
  wrappers(): WrapperEntry[] {
    return [...this.wrapperEntries.values()];
  }

  /** `<prefix>_<scorer>` as an entry, or null when `name` is not such a composition. */
  private composed(name: string): PressEntry | null {
    for (const w of this.wrapperEntries.values()) {
      if (!name.startsWith(`${w.prefix}_`)) continue;
      const innerName = name.slice(w.prefix.length + 1), inner = this.entries.get(innerName);
      if (!inner) continue;
      return {
        name,
        description: `${w.description}, over ${innerName}`,
        options: { ...inner.options, ...w.options },
        phase: w.phase ?? inner.phase,
        create: (r, o) => {
          const innerValues: OptionValues = {}, own: OptionValues = {};
          for (const [k, v] of Object.entries(o)) (k in w.options ? own : innerValues)[k] = v;
          const press = inner.create(r, innerValues);
          return w.wrap(requireScorer(press as ScorerPress, `the ${w.prefix} wrapper`), r, own);
        },
      };
    }
    return null;
  }

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
    const e = this.entries.get(name) ?? this.composed(name);
    if (e) return e;
    const close = closeMatches(name, this.names());
    const prefixes = this.wrappers().map((w) => `${w.prefix}_`).join(', ');
    throw new PressError(`unknown press "${name}"${close.length ? ` (did you mean ${close.join(', ')}?)` : ''}; \`kvpress presses\` lists them all${prefixes ? ` (the wrappers ${prefixes} go before any scorer's name)` : ''}`);
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
      throw new PressError(`compression ratio must be in [0, 1), got ${typeof compressionRatio === 'string' ? `the string "${compressionRatio}"` : String(compressionRatio)}`);
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
      const press = e.create(compressionRatio, values);
      // Reports name the registered configuration, not the chain of classes it is built from.
      press.name = e.name;
      return press;
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
