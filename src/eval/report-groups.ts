/**
 * The report's view of the runs: grouped by dataset, model, query-awareness and KV cache type,
 * presses ranked by their mean headline score, and the values as the tables and plots show them.
 */
import { NO_PRESS } from './names.js';
import type { RunMetrics, ScoreInfo } from './run-metrics.js';

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

export const scoreOf = (run: RunMetrics | undefined, score: string): number | null => {
  const v = run?.scores[score];
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
};

/** Mean of a press's score over the group's ratios; null unless every ratio has a value. */
export function meanOver(g: RunGroup, press: string, score: string): number | null {
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

/** Groups that differ only in KV cache type, when more than one type ran: [family key, groups]. */
export function kvFamilies(groups: readonly RunGroup[]): RunGroup[][] {
  const fam = new Map<string, RunGroup[]>();
  for (const g of groups) {
    const key = `${g.dataset}\u0000${g.model}\u0000${g.queryAware}`;
    fam.set(key, [...(fam.get(key) ?? []), g]);
  }
  return [...fam.values()].filter((f) => f.length > 1 && f.every((g) => 'kv_bytes_per_token' in g.scoreInfo));
}

function allRuns(g: RunGroup): RunMetrics[] {
  return [g.baseline, ...[...g.presses.values()].flatMap((m) => [...m.values()]), ...g.ownBudget.values()].filter((r): r is RunMetrics => r !== null);
}

/** Distinct item counts of the group's runs, ascending (one value when the runs are comparable). */
export function itemCounts(g: RunGroup): number[] {
  return [...new Set(allRuns(g).map((r) => r.items))].sort((a, b) => a - b);
}

/** True when every run of the group has the same value (a count, a baseline): one line instead of a table. */
export function constantValue(g: RunGroup, score: string): number | null | undefined {
  const vals = allRuns(g).map((r) => scoreOf(r, score));
  return vals.every((v) => v === vals[0]) ? vals[0] : undefined;
}
