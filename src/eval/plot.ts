/**
 * A small line-plot renderer: score vs compression ratio, one line per press, a dashed
 * horizontal baseline. It writes SVG by hand (no browser, no plotting stack) and rasterises it
 * with resvg, a Rust renderer shipped as prebuilt binaries inside its npm packages.
 */

export interface Point {
  x: number;
  y: number;
}

export interface Series {
  label: string;
  points: Point[];
}

export interface LinePlot {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Drawn dashed across the whole x range (the no-press score). */
  baseline?: { label: string; y: number };
  /** Tick positions on the x axis; by default every distinct x of the data. */
  xTicks?: number[];
  /** Fixed x range; by default [0, 1] widened to the data. */
  xDomain?: [number, number];
  /** Fixed y range (e.g. [0, 1] for an accuracy); by default nice bounds around the data. */
  yDomain?: [number, number];
}

/**
 * Categorical palette: Tableau 10 followed by ten darker or purer companions; from the 11th
 * line on the stroke is dashed too, and markers cycle independently, so lines that share a
 * hue still differ in two other ways.
 */
const COLOURS = [
  '#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac',
  '#1f3b73', '#a0522d', '#8c1c13', '#2a7f62', '#9467bd', '#c49c00', '#17becf', '#d62728', '#7f7f7f', '#bcbd22',
];
const MARKERS = ['circle', 'square', 'triangle', 'diamond', 'down'] as const;
const dash = (i: number): string => (i >= COLOURS.length / 2 ? ' stroke-dasharray="7 3"' : '');
const FONT = "DejaVu Sans, Helvetica, Arial, sans-serif";

/** About `count` ticks at 1, 2 or 5 × 10ᵏ covering [lo, hi] (d3's step rule). */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    return niceTicks(lo - pad, hi + pad, count);
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const err = raw / mag;
  const step = (err >= Math.sqrt(50) ? 10 : err >= Math.sqrt(10) ? 5 : err >= Math.sqrt(2) ? 2 : 1) * mag;
  const first = Math.floor(lo / step + 1e-9) * step;
  const ticks: number[] = [];
  for (let t = first; t <= hi + step * 1e-9 || ticks.length < 2; t += step) ticks.push(roundTo(t, step));
  if (ticks[ticks.length - 1] < hi - step * 1e-9) ticks.push(roundTo(ticks[ticks.length - 1] + step, step));
  return ticks;
}

/** Removes float noise (0.30000000000000004) using the step's decimals. */
function roundTo(v: number, step: number): number {
  const d = Math.max(0, -Math.floor(Math.log10(step)) + 2);
  return Number(v.toFixed(d));
}

/** Shortest label that tells ticks apart (0.25, 0.5, 1, 1e-4). */
export function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e5) return v.toExponential(0).replace('e+', 'e');
  return String(Number(v.toPrecision(4)));
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function marker(kind: (typeof MARKERS)[number], x: number, y: number, colour: string): string {
  const r = 3.6, f = (n: number) => n.toFixed(1);
  switch (kind) {
    case 'circle':
      return `<circle cx="${f(x)}" cy="${f(y)}" r="${r}" fill="${colour}"/>`;
    case 'square':
      return `<rect x="${f(x - r)}" y="${f(y - r)}" width="${2 * r}" height="${2 * r}" fill="${colour}"/>`;
    case 'triangle':
      return `<path d="M${f(x)},${f(y - r * 1.2)} L${f(x + r * 1.1)},${f(y + r * 0.8)} L${f(x - r * 1.1)},${f(y + r * 0.8)} Z" fill="${colour}"/>`;
    case 'down':
      return `<path d="M${f(x)},${f(y + r * 1.2)} L${f(x + r * 1.1)},${f(y - r * 0.8)} L${f(x - r * 1.1)},${f(y - r * 0.8)} Z" fill="${colour}"/>`;
    case 'diamond':
      return `<path d="M${f(x)},${f(y - r * 1.3)} L${f(x + r)},${f(y)} L${f(x)},${f(y + r * 1.3)} L${f(x - r)},${f(y)} Z" fill="${colour}"/>`;
  }
}

/** Renders the plot as a standalone SVG document (white background, legend on the right). */
export function renderSvg(plot: LinePlot, size: { width?: number; height?: number } = {}): string {
  const width = size.width ?? 860;
  const entries = plot.series.length + (plot.baseline ? 1 : 0);
  // Tall enough for the legend, which lists every line.
  const height = Math.max(size.height ?? 520, (plot.subtitle ? 62 : 46) + 18 * entries + 64);
  const longest = Math.max(0, ...plot.series.map((s) => s.label.length), plot.baseline ? plot.baseline.label.length + 2 : 0);
  const legendW = Math.min(260, 44 + longest * 6.6);
  const m = { left: 74, right: legendW + 24, top: plot.subtitle ? 62 : 46, bottom: 58 };
  const pw = width - m.left - m.right, ph = height - m.top - m.bottom;

  const xs = plot.series.flatMap((s) => s.points.map((p) => p.x));
  const ys = plot.series.flatMap((s) => s.points.map((p) => p.y)).filter(Number.isFinite);
  if (plot.baseline) ys.push(plot.baseline.y);
  const [x0, x1] = plot.xDomain ?? [Math.min(0, ...xs), Math.max(1, ...xs)];
  const yTicks = plot.yDomain ? niceTicks(plot.yDomain[0], plot.yDomain[1]) : niceTicks(Math.min(...ys, Infinity), Math.max(...ys, -Infinity));
  const [y0, y1] = plot.yDomain ?? [yTicks[0], yTicks[yTicks.length - 1]];
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.top + ph - ((y - y0) / (y1 - y0)) * ph;
  const xTicks = plot.xTicks ?? [...new Set(xs)].sort((a, b) => a - b);

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT}">`);
  out.push(`<rect width="100%" height="100%" fill="#ffffff"/>`);
  // Bold DejaVu Sans averages ~0.62 em per character: shrink a long title to fit the width.
  const titleSize = Math.min(16, (width - m.left - 12) / (0.62 * plot.title.length)).toFixed(1);
  out.push(`<text x="${m.left}" y="24" font-size="${titleSize}" font-weight="bold" fill="#222">${esc(plot.title)}</text>`);
  if (plot.subtitle) out.push(`<text x="${m.left}" y="44" font-size="12" fill="#555">${esc(plot.subtitle)}</text>`);

  // Grid and ticks.
  for (const t of yTicks) {
    if (t < y0 - 1e-12 || t > y1 + 1e-12) continue;
    const y = sy(t).toFixed(1);
    out.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${y}" y2="${y}" stroke="#e6e6e6" stroke-width="1"/>`);
    out.push(`<text x="${m.left - 8}" y="${y}" font-size="11" fill="#444" text-anchor="end" dominant-baseline="middle">${formatTick(t)}</text>`);
  }
  for (const t of xTicks) {
    const x = sx(t).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="${m.top}" y2="${m.top + ph}" stroke="#f0f0f0" stroke-width="1"/>`);
    out.push(`<line x1="${x}" x2="${x}" y1="${m.top + ph}" y2="${m.top + ph + 5}" stroke="#444" stroke-width="1"/>`);
    out.push(`<text x="${x}" y="${m.top + ph + 19}" font-size="11" fill="#444" text-anchor="middle">${formatTick(t)}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#444" stroke-width="1"/>`);
  out.push(`<text x="${m.left + pw / 2}" y="${height - 14}" font-size="13" fill="#222" text-anchor="middle">${esc(plot.xLabel)}</text>`);
  out.push(`<text transform="translate(18 ${m.top + ph / 2}) rotate(-90)" font-size="13" fill="#222" text-anchor="middle">${esc(plot.yLabel)}</text>`);

  // Data, clipped to the plotting area so a fixed y range cannot spill over the axes.
  out.push(`<defs><clipPath id="plot-area"><rect x="${m.left}" y="${m.top - 6}" width="${pw}" height="${ph + 12}"/></clipPath></defs>`);
  out.push(`<g clip-path="url(#plot-area)">`);
  if (plot.baseline) {
    const y = sy(plot.baseline.y).toFixed(1);
    out.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${y}" y2="${y}" stroke="#222" stroke-width="1.5" stroke-dasharray="6 4"/>`);
  }
  plot.series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const pts = s.points.filter((p) => Number.isFinite(p.y)).sort((a, b) => a.x - b.x);
    if (pts.length > 1) {
      const d = pts.map((p, j) => `${j ? 'L' : 'M'}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${colour}" stroke-width="1.8" stroke-linejoin="round" opacity="0.9"${dash(i)}/>`);
    }
    for (const p of pts) out.push(marker(MARKERS[i % MARKERS.length], sx(p.x), sy(p.y), colour));
  });
  out.push(`</g>`);

  // Legend, in series order (callers sort it best first).
  const lx = m.left + pw + 16;
  let ly = m.top + 6;
  if (plot.baseline) {
    out.push(`<line x1="${lx}" x2="${lx + 24}" y1="${ly}" y2="${ly}" stroke="#222" stroke-width="1.5" stroke-dasharray="6 4"/>`);
    out.push(`<text x="${lx + 30}" y="${ly}" font-size="11" fill="#222" dominant-baseline="middle">${esc(plot.baseline.label)}</text>`);
    ly += 18;
  }
  plot.series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    out.push(`<line x1="${lx}" x2="${lx + 24}" y1="${ly}" y2="${ly}" stroke="${colour}" stroke-width="1.8"${dash(i)}/>`);
    out.push(marker(MARKERS[i % MARKERS.length], lx + 12, ly, colour));
    out.push(`<text x="${lx + 30}" y="${ly}" font-size="11" fill="#222" dominant-baseline="middle">${esc(s.label)}</text>`);
    ly += 18;
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Rasterises an SVG to PNG at `scale`× its size (2 for crisp text on high-density screens). */
export async function svgToPng(svg: string, scale = 2): Promise<Buffer> {
  let Resvg: typeof import('@resvg/resvg-js').Resvg;
  try {
    ({ Resvg } = await import('@resvg/resvg-js'));
  } catch (e) {
    throw new Error(`cannot load @resvg/resvg-js to write PNG plots (${(e as Error).message.split('\n')[0]}); reinstall with npm install`);
  }
  const r = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: scale },
    background: '#ffffff',
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' },
  });
  return r.render().asPng();
}
