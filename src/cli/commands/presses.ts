import type { ModelParts } from '../../model/layer-context.js';
import { presses, PressError, type Press } from '../../presses/index.js';
import type { OptionSpec } from '../../presses/registry.js';
import { parse, str, UsageError } from '../args.js';
import type { Command } from '../command.js';

/** The flags every command that runs a press accepts (generate, scores). */
export const pressFlags = {
  press: { type: 'string' },
  ratio: { type: 'string' },
  'press-option': { type: 'string', multiple: true },
} as const;

export const pressFlagsUsage = `  --press NAME           compress the KV cache with this press (\`kvpress presses\` lists them)
  --ratio R              fraction of the prompt's entries to remove, in [0, 1) (default 0)
  --press-option K=V     set a press option (camelCase, repeatable), e.g. --press-option epsilon=0.01`;

/**
 * The press the flags ask for, or null without --press. Unknown names, options or values and a
 * ratio outside [0, 1) are one-line PressErrors; `model`, when given, is checked for what the
 * press needs.
 */
export function pressFromFlags(values: Record<string, unknown>, model?: ModelParts): Press | null {
  const name = str(values.press);
  const rawRatio = values.ratio;
  const rawOptions = (values['press-option'] as string[] | undefined) ?? [];
  if (name === undefined) {
    if (rawRatio !== undefined || rawOptions.length > 0) throw new UsageError('--ratio and --press-option need --press NAME');
    return null;
  }
  let ratio = 0;
  if (rawRatio !== undefined) {
    ratio = typeof rawRatio === 'string' && rawRatio.trim() !== '' ? Number(rawRatio) : NaN;
    if (!(ratio >= 0 && ratio < 1)) throw new PressError(`--ratio must be a number in [0, 1), got "${String(rawRatio)}"`);
  }
  const options: Record<string, string> = Object.create(null);
  for (const kv of rawOptions) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new UsageError(`--press-option must be key=value, got "${kv}"`);
    const key = kv.slice(0, eq);
    // Names every object inherits (__proto__, constructor…) are never press options.
    if (key in Object.prototype) throw new UsageError(`--press-option ${key} is not an option name; \`kvpress presses ${name}\` lists the options`);
    if (Object.hasOwn(options, key)) throw new UsageError(`--press-option ${key} is given twice`);
    options[key] = kv.slice(eq + 1);
  }
  const press = presses.create(name, ratio, options);
  if (model) press.validate?.(model);
  return press;
}

function describeOption(name: string, o: OptionSpec): string {
  const values = o.type === 'string' && o.values ? ` (${o.values.join(' | ')})` : '';
  const def = o.type === 'string' && o.default === '' ? '' : `=${String(o.default)}`;
  return `${name}${def}  [${o.type}${values}] ${o.description}`;
}

export const pressesCommand: Command = {
  name: 'presses',
  summary: 'list every press with its options and defaults',
  usage: `kvpress presses [--json | --markdown] [NAME]

Lists every registered press: its name, a one-line description and its options with their
defaults (set them with --press-option key=value on generate and scores). With NAME, only that
press. --json prints [{"name", "description", "options": {key: {type, default, description}}}];
--markdown prints the README's tables of presses and wrappers (from the same declarations).
A wrapper composes with any scorer: its name before the scorer's, e.g. chunkkv_snapkv.

Examples:
  kvpress presses
  kvpress presses expected_attention
  kvpress presses --markdown`,
  options: { json: { type: 'boolean' }, markdown: { type: 'boolean' } },
  async run(argv, io) {
    const { values, positionals } = parse(argv, this.options);
    if (positionals.length > 1) throw new UsageError(`expected at most one press name, got ${positionals.length}`);
    const entries = positionals.length ? [presses.get(positionals[0])] : presses.list();
    if (values.json === true && values.markdown === true) throw new UsageError('give at most one of --json and --markdown');
    const wrappers = positionals.length ? [] : presses.wrappers();
    if (values.markdown === true) {
      io.out(pressTable(entries) + (wrappers.length ? '\n' + wrapperTable(wrappers) : ''));
      return 0;
    }
    if (values.json === true) {
      io.out(JSON.stringify(entries.map((e) => ({ name: e.name, description: e.description, options: e.options }))) + '\n');
      // The wrappers compose with every scorer; `kvpress presses <prefix>_<scorer>` shows one composition.
      return 0;
    }
    const width = Math.max(...entries.map((e) => e.name.length));
    for (const e of entries) {
      io.out(`${e.name.padEnd(width)}  ${e.description}\n`);
      for (const [k, o] of Object.entries(e.options)) io.out(`    ${describeOption(k, o)}\n`);
    }
    if (wrappers.length) {
      io.out(`\nWrappers: put one before any scorer's name (chunkkv_snapkv, dms_knorm, merging_expected_attention);\nthe options of both apply.\n`);
      const w = Math.max(...wrappers.map((x) => x.prefix.length + 2));
      for (const x of wrappers) {
        io.out(`${(x.prefix + '_…').padEnd(w)}  ${x.description}\n`);
        for (const [k, o] of Object.entries(x.options)) io.out(`    ${describeOption(k, o)}\n`);
      }
    }
    return 0;
  },
};

/** The README's table of presses: name, description, options with their defaults. */
export function pressTable(entries: readonly { name: string; description: string; options: Record<string, OptionSpec> }[]): string {
  const rows = entries.map((e) => `| \`${e.name}\` | ${e.description} | ${Object.entries(e.options).map(([k, o]) => `\`${k}=${String(o.default)}\``).join(', ')} |`);
  return ['| name | what it does | options (defaults) |', '|---|---|---|', ...rows].join('\n') + '\n';
}

/** The README's table of wrappers (each composes with any scorer as `<prefix>_<scorer>`). */
export function wrapperTable(wrappers: readonly { prefix: string; description: string; options: Record<string, OptionSpec> }[]): string {
  const rows = wrappers.map((w) => `| \`${w.prefix}_<scorer>\` | ${w.description} | ${Object.entries(w.options).map(([k, o]) => `\`${k}=${String(o.default)}\``).join(', ')} |`);
  return ['| wrapper | what it does | options (defaults) |', '|---|---|---|', ...rows].join('\n') + '\n';
}
