import { REPORT_FILE, writeReport } from '../../eval/report.js';
import { parse, str, UsageError } from '../args.js';
import type { Command } from '../command.js';

export const reportCommand: Command = {
  name: 'report',
  summary: 'merge complete eval runs into Markdown tables and score-vs-ratio plots',
  usage: `kvpress report DIR [--output OUTDIR]

Reads every complete run under DIR (folders with a metrics.json, from any number of shards)
and writes OUTDIR/${REPORT_FILE}: per dataset and score a table of press × compression ratio
with the no-press baseline, and for each headline score a plot (score vs ratio, one line per
press, dashed baseline) as SVG and PNG.

Options:
  --output OUTDIR   where to write the report and plots (default: DIR)

Examples:
  kvpress report results
  kvpress report results --output docs/results`,
  options: {
    output: { type: 'string' },
  },
  async run(argv, io) {
    const { values, positionals } = parse(argv, this.options);
    if (positionals.length !== 1) throw new UsageError(`expected one results folder, got ${positionals.length ? positionals.join(' ') : 'none'} (kvpress report DIR)`);
    const dir = positionals[0];
    const out = str(values.output) ?? dir;
    const r = await writeReport(dir, out, { source: dir });
    io.out(`${r.markdown}\n${r.plots.map((p) => p + '\n').join('')}`);
    io.err(`${r.runs} complete run${r.runs === 1 ? '' : 's'}${r.incomplete ? `, ${r.incomplete} incomplete left out` : ''}; report in ${r.markdown}\n`);
    return 0;
  },
};
