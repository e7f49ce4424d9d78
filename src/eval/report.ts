/**
 * The report of an evaluation folder: merges whatever runs are complete (metrics.json
 * present, wherever they were computed) into a Markdown table per dataset and score —
 * press × compression ratio, with the no-press baseline — and a plot per headline score.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { svgToPng } from './plot.js';
import { groupRuns, kvFamilies } from './report-groups.js';
import { renderMarkdown } from './report-markdown.js';
import { bytesPlotBase, bytesPlotSvg, plotBase, scorePlotSvg } from './report-plots.js';
import { readRuns } from './report-runs.js';
import { NOTES_FILE } from './run-files.js';

export const REPORT_FILE = 'report.md';

export interface ReportResult {
  markdown: string;
  /** Plot files written (SVG and PNG). */
  plots: string[];
  runs: number;
  incomplete: number;
}

/**
 * Writes OUT/report.md and OUT/<dataset>__<model>__<score>.{svg,png} for the complete runs in
 * `dir`; `source` is how the Markdown names the command's argument (default `dir`).
 */
export async function writeReport(dir: string, outDir: string = dir, opts: { source?: string } = {}): Promise<ReportResult> {
  const found = readRuns(dir);
  if (found.runs.length === 0) {
    throw new Error(`${dir}: no complete runs (a run is complete when its metrics.json exists)${found.incomplete.length ? `; ${found.incomplete.length} incomplete` : ''}`);
  }
  mkdirSync(outDir, { recursive: true });
  const plots: string[] = [];
  const writePlot = async (name: string, svg: string): Promise<void> => {
    const base = join(outDir, name);
    writeFileSync(`${base}.svg`, svg);
    writeFileSync(`${base}.png`, await svgToPng(svg));
    plots.push(`${base}.svg`, `${base}.png`);
  };
  for (const g of groupRuns(found.runs)) {
    if (g.presses.size === 0) continue;
    for (const [score, info] of Object.entries(g.scoreInfo)) if (info.plot) await writePlot(plotBase(g, score), scorePlotSvg(g, score));
  }
  for (const f of kvFamilies(groupRuns(found.runs))) {
    for (const [score, info] of Object.entries(f[0].scoreInfo)) if (info.plot) await writePlot(bytesPlotBase(f[0], score), bytesPlotSvg(f, score));
  }
  const markdown = join(outDir, REPORT_FILE);
  const notesFile = join(dir, NOTES_FILE);
  const notes = existsSync(notesFile) ? readFileSync(notesFile, 'utf8').split('\n').filter(Boolean) : [];
  const body = renderMarkdown(found, opts.source ?? dir) + (notes.length ? `\n\n## Notes\n\n${notes.map((n) => `- ${n}`).join('\n')}` : '');
  writeFileSync(markdown, body + '\n');
  return { markdown, plots, runs: found.runs.length, incomplete: found.incomplete.length };
}
