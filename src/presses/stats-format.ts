import { readFileSync, writeFileSync } from 'node:fs';
import { extname } from 'node:path';
import { readSafetensors, writeSafetensors } from '../model/loaders/safetensors.js';

/**
 * Query statistics of a model, written by `kvpress calibrate` and read by the presses that use
 * offline statistics (`expected_attention_stats`, `qfilter`).
 *
 * Per layer, for every query head h (numHeads of them, head dimension d):
 * - `mean` [numHeads][d]: mean of the **pre-RoPE** queries (x·W_qᵀ + bias, then q-norm where the
 *   architecture has one), over every calibration token except the first `nSink` of each sample.
 * - `cov` [numHeads][d][d]: their **sample** covariance (divided by N − 1), as kvpress's
 *   ExpectedAttentionStatsPress collection does (spec §2.5).
 * - `qfilter` [numHeads][d]: the Q-Filters direction of head h (Godey et al., arXiv 2503.02812),
 *   from the **post-RoPE** queries (the space of the cached keys it is dotted with), same tokens:
 *   u = the top right singular vector of the stacked queries Q (the top eigenvector of QᵀQ),
 *   its sign readjusted so that the queries project positively on it (mean_t ⟨q_t, u⟩ > 0, the
 *   paper's Observation 3.1 as its authors clarify in NathanGodey/qfilters#6). The file stores
 *   **qfilter = −u**, the orientation kvpress's QFilterPress expects: its score is
 *   s_j = −(qfilter · k_j) (spec §3.1), which then equals ⟨u, k_j⟩, proportional to the expected
 *   logit E_q⟨q, k_j⟩ of the mean query, so the keys the queries attend to most are kept.
 *   Unit length. For a KV head, average the filters of its query heads (`kvHeadFilters`).
 *
 * Files:
 * - `.safetensors`: F32 tensors `query_mean` [L, H, d], `query_cov` [L, H, d, d] (the names and
 *   shapes of kvpress's statistics) and `query_filters` [L, H, d]; metadata `format` =
 *   "kvpress-query-stats", `version` = "1", `model`, `nSink`, `tokens`.
 * - `.json`: {"format": "kvpress-query-stats", "version": 1, "model", "nSink", "tokens",
 *   "numLayers", "numHeads", "headDim", "layers": [{"mean": [H][d], "cov": [H][d][d],
 *   "qfilter": [H][d]}]} (nested arrays of numbers).
 */
export interface LayerQueryStats {
  /** [numHeads][headDim] mean pre-RoPE query. */
  mean: Float32Array;
  /** [numHeads][headDim][headDim] sample covariance of the pre-RoPE queries. */
  cov: Float32Array;
  /** [numHeads][headDim] Q-Filters direction in kvpress's orientation (score −(qfilter·k)). */
  qfilter: Float32Array;
}

export interface QueryStats {
  /** Where the statistics come from (the model path or name), for messages. */
  model: string;
  numHeads: number;
  headDim: number;
  /** Leading tokens of each sample left out. */
  nSink: number;
  /** Query vectors per head the statistics were computed from. */
  tokens: number;
  layers: LayerQueryStats[];
}

export const STATS_FORMAT = 'kvpress-query-stats';

/** Writes `stats` as safetensors or JSON, chosen by the extension of `path`. */
export function writeQueryStats(path: string, stats: QueryStats): void {
  checkStats(stats, path);
  const L = stats.layers.length, H = stats.numHeads, d = stats.headDim;
  if (formatOf(path) === 'safetensors') {
    const cat = (key: keyof LayerQueryStats, per: number) => {
      const out = new Float32Array(L * per);
      stats.layers.forEach((l, i) => out.set(l[key], i * per));
      return out;
    };
    writeSafetensors(path, {
      query_mean: { dtype: 'F32', shape: [L, H, d], data: cat('mean', H * d) },
      query_cov: { dtype: 'F32', shape: [L, H, d, d], data: cat('cov', H * d * d) },
      query_filters: { dtype: 'F32', shape: [L, H, d], data: cat('qfilter', H * d) },
    }, { format: STATS_FORMAT, version: '1', model: stats.model, nSink: String(stats.nSink), tokens: String(stats.tokens) });
    return;
  }
  const nest = (a: Float32Array, ...shape: number[]): unknown => {
    if (shape.length === 1) return Array.from(a.subarray(0, shape[0]));
    const step = a.length / shape[0];
    return Array.from({ length: shape[0] }, (_, i) => nest(a.subarray(i * step, (i + 1) * step), ...shape.slice(1)));
  };
  const json = {
    format: STATS_FORMAT, version: 1, model: stats.model, nSink: stats.nSink, tokens: stats.tokens,
    numLayers: L, numHeads: H, headDim: d,
    layers: stats.layers.map((l) => ({ mean: nest(l.mean, H, d), cov: nest(l.cov, H, d, d), qfilter: nest(l.qfilter, H, d) })),
  };
  writeFileSync(path, JSON.stringify(json));
}

/** Reads a file written by `writeQueryStats`; one-line errors naming the file and what is wrong. */
export function readQueryStats(path: string): QueryStats {
  return formatOf(path) === 'safetensors' ? readSafetensorsStats(path) : readJsonStats(path);
}

/**
 * Q-Filters of the KV heads of one layer: [numKvHeads][headDim], the mean of the filters of each
 * group's query heads (mean_h −(f_h·k) = −(mean_h f_h)·k, the group-averaged score).
 */
export function kvHeadFilters(stats: QueryStats, layer: number, numKvHeads: number): Float32Array {
  const H = stats.numHeads, d = stats.headDim, G = H / numKvHeads;
  if (!Number.isInteger(G)) throw new Error(`${H} query heads do not split into ${numKvHeads} KV heads`);
  const f = stats.layers[layer].qfilter, out = new Float32Array(numKvHeads * d);
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / G);
    for (let i = 0; i < d; i++) out[g * d + i] += f[h * d + i] / G;
  }
  return out;
}

function formatOf(path: string): 'safetensors' | 'json' {
  const ext = extname(path).toLowerCase();
  if (ext === '.safetensors') return 'safetensors';
  if (ext === '.json') return 'json';
  throw new Error(`${path}: query statistics must be a .json or .safetensors file`);
}

function checkStats(s: QueryStats, path: string): void {
  const H = s.numHeads, d = s.headDim;
  if (!(Number.isInteger(H) && H > 0 && Number.isInteger(d) && d > 0)) throw new Error(`${path}: invalid statistics shape ${H} heads × ${d}`);
  if (s.layers.length === 0) throw new Error(`${path}: statistics hold no layer`);
  s.layers.forEach((l, i) => {
    const want: [keyof LayerQueryStats, number][] = [['mean', H * d], ['cov', H * d * d], ['qfilter', H * d]];
    for (const [k, n] of want) {
      if (l[k].length !== n) throw new Error(`${path}: layer ${i} ${k} has ${l[k].length} values, expected ${n}`);
      for (const v of l[k]) if (!Number.isFinite(v)) throw new Error(`${path}: layer ${i} ${k} holds a non-finite value`);
    }
  });
}

function readSafetensorsStats(path: string): QueryStats {
  const { tensors, metadata } = readSafetensors(path);
  if (metadata.format !== STATS_FORMAT) throw new Error(`${path}: not a query statistics file (metadata format is "${metadata.format ?? ''}", expected "${STATS_FORMAT}"; write one with \`kvpress calibrate\`)`);
  const get = (name: string, rank: number) => {
    const t = tensors[name];
    if (!t) throw new Error(`${path}: missing tensor ${name}`);
    if (t.shape.length !== rank) throw new Error(`${path}: tensor ${name} has shape [${t.shape.join(', ')}], expected rank ${rank}`);
    return t;
  };
  const mean = get('query_mean', 3), cov = get('query_cov', 4), filt = get('query_filters', 3);
  const [L, H, d] = mean.shape;
  const same = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);
  if (!same(cov.shape, [L, H, d, d])) throw new Error(`${path}: query_cov has shape [${cov.shape.join(', ')}], expected [${L}, ${H}, ${d}, ${d}]`);
  if (!same(filt.shape, [L, H, d])) throw new Error(`${path}: query_filters has shape [${filt.shape.join(', ')}], expected [${L}, ${H}, ${d}]`);
  const stats: QueryStats = {
    model: metadata.model ?? '', numHeads: H, headDim: d, nSink: Number(metadata.nSink ?? 0), tokens: Number(metadata.tokens ?? 0),
    layers: Array.from({ length: L }, (_, l) => ({
      mean: mean.data.slice(l * H * d, (l + 1) * H * d),
      cov: cov.data.slice(l * H * d * d, (l + 1) * H * d * d),
      qfilter: filt.data.slice(l * H * d, (l + 1) * H * d),
    })),
  };
  checkStats(stats, path);
  return stats;
}

function readJsonStats(path: string): QueryStats {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Error(`${path}: ${err.code === 'ENOENT' ? 'no such file' : err.code ?? `not valid JSON (${err.message})`}`);
  }
  const o = raw as Record<string, unknown>;
  if (typeof o !== 'object' || o === null || o.format !== STATS_FORMAT) throw new Error(`${path}: not a query statistics file (expected "format": "${STATS_FORMAT}"; write one with \`kvpress calibrate\`)`);
  const H = o.numHeads as number, d = o.headDim as number;
  if (!(Number.isInteger(H) && H > 0 && Number.isInteger(d) && d > 0)) throw new Error(`${path}: "numHeads" and "headDim" must be positive integers`);
  if (!Array.isArray(o.layers)) throw new Error(`${path}: "layers" must be an array`);
  const flat = (v: unknown, n: number, what: string): Float32Array => {
    const out = new Float32Array(n);
    let i = 0;
    const walk = (x: unknown): void => {
      if (Array.isArray(x)) x.forEach(walk);
      else {
        if (typeof x !== 'number' || i >= n) throw new Error(`${path}: ${what} must be nested arrays of ${n} numbers`);
        out[i++] = x;
      }
    };
    walk(v);
    if (i !== n) throw new Error(`${path}: ${what} holds ${i} numbers, expected ${n}`);
    return out;
  };
  const stats: QueryStats = {
    model: String(o.model ?? ''), numHeads: H, headDim: d, nSink: Number(o.nSink ?? 0), tokens: Number(o.tokens ?? 0),
    layers: (o.layers as Record<string, unknown>[]).map((l, i) => ({
      mean: flat(l?.mean, H * d, `layer ${i} mean`),
      cov: flat(l?.cov, H * d * d, `layer ${i} cov`),
      qfilter: flat(l?.qfilter, H * d, `layer ${i} qfilter`),
    })),
  };
  checkStats(stats, path);
  return stats;
}
