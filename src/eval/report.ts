/**
 * The report of an evaluation folder: merges whatever runs are complete (metrics.json
 * present, wherever they were computed) into a Markdown table per dataset and score —
 * press × compression ratio, with the no-press baseline — and a plot per headline score.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { niceTicks, renderSvg, svgToPng, type Series } from './plot.js';
import { formatRatio, NO_PRESS } from './names.js';
import { NOTES_FILE } from './run-files.js';
import type { RunMetrics, ScoreInfo } from './run-metrics.js';

export const REPORT_FILE = 'report.md';

export interface RunsFound {
  runs: RunMetrics[];
  /** Run folders without metrics.json (still running, failed, or another shard's). */
  incomplete: string[];
}

/** A metrics.json as written by the runner; anything else is a one-line error. */
function parseMetrics(file: string): RunMetrics {
  let m: RunMetrics;
  try {
    m = JSON.parse(readFileSync(file, 'utf8')) as RunMetrics;
  } catch (e) {
    throw new Error(`${file}: unreadable metrics (${(e as Error).message.split('\n')[0]})`);
  }
  const ok = m && typeof m.dataset === 'string' && typeof m.model === 'string' && typeof m.press === 'string'
    && typeof m.compressionRatio === 'number' && typeof m.scores === 'object' && typeof m.scoreInfo === 'object';
  if (!ok) throw new Error(`${file}: not a kvpress eval metrics file`);
  return m;
}

/** Every run folder under `dir` (one level, named <dataset>__<model>__<press>__<ratio>…). */
export function readRuns(dir: string): RunsFound {
  if (!existsSync(dir)) throw new Error(`${dir}: no such directory`);
  const runs: RunMetrics[] = [];
  const incomplete: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (!e.isDirectory() || !e.name.includes('__')) continue;
    const file = join(dir, e.name, 'metrics.json');
    if (existsSync(file)) runs.push(parseMetrics(file));
    else incomplete.push(e.name);
  }
  return { runs, incomplete };
}

/** Short, column-friendly numbers: 3 significant digits in plain notation, "—" for missing. */
export function formatValue(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(1);
  if (a >= 1e-6) return String(Number(v.toPrecision(3)));
  return v.toExponential(2);
}

/** Runs of one dataset on one model (query-aware runs apart: they answer another question). */
export interface RunGroup {
  dataset: string;
  model: string;
  queryAware: boolean;
  /** KV cache type of the group's runs (f32 for runs written before the axis existed). */
  kvDtype: string;
  baseline: RunMetrics | null;
  /** Press → ratio → run. */
  presses: Map<string, Map<number, RunMetrics>>;
  /** Presses that set their own budget: one run each, apart from the ratio columns. */
  ownBudget: Map<string, RunMetrics>;
  ratios: number[];
  scoreInfo: Record<string, ScoreInfo>;
}

export function groupRuns(runs: readonly RunMetrics[]): RunGroup[] {
  const groups = new Map<string, RunGroup>();
  for (const r of runs) {
    const kvDtype = r.kvDtype ?? 'f32';
    const key = `${r.dataset}\u0000${r.model}\u0000${r.queryAware === true}\u0000${kvDtype}`;
    let g = groups.get(key);
    if (!g) {
      g = { dataset: r.dataset, model: r.model, queryAware: r.queryAware === true, kvDtype, baseline: null, presses: new Map(), ownBudget: new Map(), ratios: [], scoreInfo: {} };
      groups.set(key, g);
    }
    // The union of every run's scores, in the order the runs declare them.
    for (const [k, info] of Object.entries(r.scoreInfo)) g.scoreInfo[k] ??= info;
    if (r.press === NO_PRESS) {
      g.baseline = r;
      continue;
    }
    // Its ratio 0 is not a point of the ratio axis: it would add a column every other press lacks.
    if (r.ownBudget === true) {
      g.ownBudget.set(r.press, r);
      continue;
    }
    // A decoding press's target sizes are rows of their own.
    const label = r.targetSize === undefined ? r.press : `${r.press} target=${r.targetSize}`;
    const byRatio = g.presses.get(label) ?? new Map<number, RunMetrics>();
    byRatio.set(r.compressionRatio, r);
    g.presses.set(label, byRatio);
    if (!g.ratios.includes(r.compressionRatio)) g.ratios.push(r.compressionRatio);
  }
  for (const g of groups.values()) g.ratios.sort((a, b) => a - b);
  return [...groups.values()];
}

const scoreOf = (run: RunMetrics | undefined, score: string): number | null => {
  const v = run?.scores[score];
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
};

/** Mean of a press's score over the group's ratios; null unless every ratio has a value. */
function meanOver(g: RunGroup, press: string, score: string): number | null {
  const byRatio = g.presses.get(press)!;
  const vals = g.ratios.map((r) => scoreOf(byRatio.get(r), score));
  if (vals.some((v) => v === null)) return null;
  return (vals as number[]).reduce((a, b) => a + b, 0) / vals.length;
}

/** The score that orders presses: the first headline score. */
function headline(g: RunGroup): string | null {
  return Object.entries(g.scoreInfo).find(([, i]) => i.plot)?.[0] ?? null;
}

/** Presses best first by the mean headline score (presses missing ratios last, by name). */
export function rankPresses(g: RunGroup): string[] {
  const score = headline(g);
  const names = [...g.presses.keys()].sort();
  if (score === null) return names;
  const sign = g.scoreInfo[score].better === 'lower' ? 1 : -1;
  const key = (p: string) => meanOver(g, p, score);
  return names.sort((a, b) => {
    const ka = key(a), kb = key(b);
    if (ka === null || kb === null) return ka === null ? (kb === null ? 0 : 1) : -1;
    return sign * (ka - kb);
  });
}

function groupTitle(g: RunGroup): string {
  return `${g.dataset} · ${g.model}${g.queryAware ? ' · query-aware' : ''}${g.kvDtype === 'f32' ? '' : ` · ${g.kvDtype} KV cache`}`;
}

function plotBase(g: RunGroup, score: string): string {
  return `${g.dataset}__${g.model}${g.queryAware ? '__query_aware' : ''}${g.kvDtype === 'f32' ? '' : `__kv_${g.kvDtype}`}__${score}`;
}

/** Groups that differ only in KV cache type, when more than one type ran: [family key, groups]. */
function kvFamilies(groups: readonly RunGroup[]): RunGroup[][] {
  const fam = new Map<string, RunGroup[]>();
  for (const g of groups) {
    const key = `${g.dataset}\u0000${g.model}\u0000${g.queryAware}`;
    fam.set(key, [...(fam.get(key) ?? []), g]);
  }
  return [...fam.values()].filter((f) => f.length > 1 && f.every((g) => 'kv_bytes_per_token' in g.scoreInfo));
}

function bytesPlotBase(g: RunGroup, score: string): string {
  return `${g.dataset}__${g.model}${g.queryAware ? '__query_aware' : ''}__${score}__vs_kv_bytes`;
}

/**
 * Quality against KV bytes per context token across cache types: a line per (press, type) over
 * the ratios, and a line through the no-press runs of every type (the uncompressed caches).
 */
export function bytesPlotSvg(family: readonly RunGroup[], score: string): string {
  const g0 = family[0], info = g0.scoreInfo[score];
  const order = ['f32', 'bf16', 'f16', 'q8_0', 'q4_0'];
  const groups = [...family].sort((a, b) => order.indexOf(a.kvDtype) - order.indexOf(b.kvDtype));
  const point = (r: RunMetrics | undefined) => {
    const x = scoreOf(r, 'kv_bytes_per_token'), y = scoreOf(r, score);
    return x === null || y === null ? [] : [{ x, y }];
  };
  const series: Series[] = [{ label: `no press (${groups.map((g) => g.kvDtype).join(', ')})`, points: groups.flatMap((g) => point(g.baseline ?? undefined)) }];
  for (const g of groups) {
    for (const p of rankPresses(g)) series.push({ label: `${p} · ${g.kvDtype}`, points: [...g.ratios].reverse().flatMap((r) => point(g.presses.get(p)!.get(r))) });
  }
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const hi = Math.max(...xs) * 1.05;
  return renderSvg({
    title: `${g0.dataset}: ${info.label} against KV bytes`,
    subtitle: `${g0.model} · lines over compression ratios, one per press and cache type · ${info.better ? `${info.better} is better` : ''}`,
    xLabel: 'KV bytes per context token (compressed context, all layers)',
    yLabel: info.axis ?? info.label,
    series,
    xTicks: niceTicks(0, hi),
    xDomain: [0, hi],
    yDomain: info.range,
  });
}

/** The table of one score: presses × ratios, best value per ratio in bold (headline scores). */
function scoreTable(g: RunGroup, score: string, order: readonly string[]): string[] {
  const info = g.scoreInfo[score];
  const best = new Map<number, number>();
  if (info.plot) {
    for (const r of g.ratios) {
      const vals = order.map((p) => scoreOf(g.presses.get(p)!.get(r), score)).filter((v): v is number => v !== null);
      if (vals.length > 1) best.set(r, info.better === 'higher' ? Math.max(...vals) : Math.min(...vals));
    }
  }
  const lines = [
    `| press | ${g.ratios.map(formatRatio).join(' | ')} | mean |`,
    `|---|${g.ratios.map(() => '---:').join('|')}|---:|`,
  ];
  for (const p of order) {
    const byRatio = g.presses.get(p)!;
    const cells = g.ratios.map((r) => {
      const v = scoreOf(byRatio.get(r), score);
      const s = formatValue(v);
      return v !== null && best.get(r) === v ? `**${s}**` : s;
    });
    lines.push(`| ${p} | ${cells.join(' | ')} | ${formatValue(meanOver(g, p, score))} |`);
  }
  return lines;
}

function allRuns(g: RunGroup): RunMetrics[] {
  return [g.baseline, ...[...g.presses.values()].flatMap((m) => [...m.values()]), ...g.ownBudget.values()].filter((r): r is RunMetrics => r !== null);
}

/** Distinct item counts of the group's runs, ascending (one value when the runs are comparable). */
function itemCounts(g: RunGroup): number[] {
  return [...new Set(allRuns(g).map((r) => r.items))].sort((a, b) => a - b);
}

/** True when every run of the group has the same value (a count, a baseline): one line instead of a table. */
function constantValue(g: RunGroup, score: string): number | null | undefined {
  const vals = allRuns(g).map((r) => scoreOf(r, score));
  return vals.every((v) => v === vals[0]) ? vals[0] : undefined;
}

/** Presses that set their own budget: one row each, its achieved ratio beside the headline scores. */
function ownBudgetTable(g: RunGroup): string[] {
  const scores = Object.entries(g.scoreInfo).filter(([, i]) => i.plot).map(([k]) => k);
  const ratio = 'achieved_ratio' in g.scoreInfo ? ['achieved_ratio'] : [];
  const cols = [...ratio, ...scores];
  return [
    '### Presses that set their own budget (no ratio: one run each)', '',
    `| press | ${cols.map((c) => (c === 'achieved_ratio' ? 'achieved ratio' : g.scoreInfo[c].axis ?? g.scoreInfo[c].label)).join(' | ')} |`,
    `|---|${cols.map(() => '---:').join('|')}|`,
    ...[...g.ownBudget].sort(([a], [b]) => (a < b ? -1 : 1)).map(([p, r]) => `| ${p} | ${cols.map((c) => formatValue(scoreOf(r, c))).join(' | ')} |`),
  ];
}

/** The Markdown of every group; plots are referenced by file name (PNG, with the SVG linked). */
export function renderMarkdown(found: RunsFound, source: string): string {
  const out: string[] = ['# Evaluation report', ''];
  out.push(`Generated by \`kvpress report ${source}\` from ${found.runs.length} complete run${found.runs.length === 1 ? '' : 's'}` +
    (found.incomplete.length ? ` (${found.incomplete.length} incomplete run folder${found.incomplete.length === 1 ? '' : 's'} left out: ${found.incomplete.join(', ')})` : '') + '.');
  out.push('Rows are ordered by the mean of the first headline score over the ratios, best first; the best value at each ratio is in bold.', '');
  for (const g of groupRuns(found.runs)) {
    out.push(`## ${groupTitle(g)}`, '');
    const items = itemCounts(g);
    out.push(items.length === 1 ? `${items[0]} items per run.` : `**Runs differ in item count** (${items.join(', ')}): scores are not comparable across them.`);
    if (!g.baseline) out.push('', `No \`${NO_PRESS}\` run: the baseline is missing.`);
    out.push('');
    const order = rankPresses(g);
    const constants: string[] = [];
    for (const [score, info] of Object.entries(g.scoreInfo)) {
      const c = constantValue(g, score);
      if (c !== undefined && !info.plot) {
        constants.push(`${info.label}: ${formatValue(c)}`);
        continue;
      }
      out.push(`### ${info.label}${info.better ? ` — ${info.better} is better` : ''}`, '');
      out.push(`No press: ${formatValue(scoreOf(g.baseline ?? undefined, score))}`, '');
      if (order.length) out.push(...scoreTable(g, score, order), '');
      if (info.plot && order.length) out.push(`![${info.label}](${plotBase(g, score)}.png) ([SVG](${plotBase(g, score)}.svg))`, '');
    }
    if (constants.length) out.push('The same in every run: ' + constants.join('; ') + '.', '');
    if (g.ownBudget.size) out.push(...ownBudgetTable(g), '');
  }
  for (const f of kvFamilies(groupRuns(found.runs))) {
    out.push(`## ${f[0].dataset} · ${f[0].model}: quality against KV bytes per context token`, '');
    out.push(`Cache types ${f.map((g) => g.kvDtype).join(', ')}; every run is compared with the uncompressed f32 cache.`, '');
    for (const [score, info] of Object.entries(f[0].scoreInfo)) {
      if (info.plot) out.push(`![${info.label} against KV bytes](${bytesPlotBase(f[0], score)}.png) ([SVG](${bytesPlotBase(f[0], score)}.svg))`, '');
    }
  }
  return out.join('\n');
}

/** The plot of one headline score: a line per press (best first in the legend), dashed baseline. */
export function scorePlotSvg(g: RunGroup, score: string): string {
  const info = g.scoreInfo[score];
  const order = rankPresses(g);
  const series: Series[] = order.map((p) => ({
    label: p,
    points: g.ratios.flatMap((r) => {
      const v = scoreOf(g.presses.get(p)!.get(r), score);
      return v === null ? [] : [{ x: r, y: v }];
    }),
  }));
  const base = scoreOf(g.baseline ?? undefined, score);
  const items = itemCounts(g).join('/');
  return renderSvg({
    title: `${g.dataset}: ${info.label}`,
    subtitle: `${g.model}${g.queryAware ? ', query-aware' : ''} · ${items} items per run${info.better ? ` · ${info.better} is better` : ''} · legend ordered best first`,
    xLabel: 'compression ratio (share of KV entries removed)',
    yLabel: info.axis ?? info.label,
    series,
    baseline: base === null ? undefined : { label: `no press (${formatValue(base)})`, y: base },
    xTicks: [0, ...g.ratios, 1],
    xDomain: [0, 1],
    yDomain: info.range,
  });
}

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
  for (const g of groupRuns(found.runs)) {
    if (g.presses.size === 0) continue;
    for (const [score, info] of Object.entries(g.scoreInfo)) {
      if (!info.plot) continue;
      const svg = scorePlotSvg(g, score);
      const base = join(outDir, plotBase(g, score));
      writeFileSync(`${base}.svg`, svg);
      writeFileSync(`${base}.png`, await svgToPng(svg));
      plots.push(`${base}.svg`, `${base}.png`);
    }
  }
  for (const f of kvFamilies(groupRuns(found.runs))) {
    for (const [score, info] of Object.entries(f[0].scoreInfo)) {
      if (!info.plot) continue;
      const svg = bytesPlotSvg(f, score);
      const base = join(outDir, bytesPlotBase(f[0], score));
      writeFileSync(`${base}.svg`, svg);
      writeFileSync(`${base}.png`, await svgToPng(svg));
      plots.push(`${base}.svg`, `${base}.png`);
    }
  }
  const markdown = join(outDir, REPORT_FILE);
  const notesFile = join(dir, NOTES_FILE);
  const notes = existsSync(notesFile) ? readFileSync(notesFile, 'utf8').split('\n').filter(Boolean) : [];
  const body = renderMarkdown(found, opts.source ?? dir) + (notes.length ? `\n\n## Notes\n\n${notes.map((n) => `- ${n}`).join('\n')}` : '');
  writeFileSync(markdown, body + '\n');
  return { markdown, plots, runs: found.runs.length, incomplete: found.incomplete.length };
}
