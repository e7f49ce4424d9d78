/**
 * The report's plots: one headline score against the compression ratio (a line per press, the
 * no-press baseline dashed), and, when several KV cache types ran, the score against KV bytes per
 * context token. File names follow the run folders' naming.
 */
import { niceTicks, renderSvg, type Series } from './plot.js';
import { formatValue, itemCounts, rankPresses, scoreOf, type RunGroup } from './report-groups.js';
import type { RunMetrics } from './run-metrics.js';

/** File name (no extension) of a group's plot of `score`, after the run folders' naming. */
export function plotBase(g: RunGroup, score: string): string {
  return `${g.dataset}__${g.model}${g.queryAware ? '__query_aware' : ''}${g.kvDtype === 'f32' ? '' : `__kv_${g.kvDtype}`}__${score}`;
}

/** File name (no extension) of a family's plot of `score` against KV bytes. */
export function bytesPlotBase(g: RunGroup, score: string): string {
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
