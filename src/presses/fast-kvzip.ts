import type { LayerContext, ModelParts } from '../model/layer-context.js';
import { readSafetensors, writeSafetensors, type TensorData } from '../model/loaders/safetensors.js';
import { requirePrefillCache } from './common.js';
import { lowestOut } from './kvzip.js';
import { tensorGetter, type SurrogateData } from './kvzip-surrogate.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import { mulberry32 } from './random.js';
import { checkRatio, PressError, type KeepIndices, type Press, type ScoreObserver } from './press.js';
import type { PressEntry } from './registry.js';

export const fastKVzipOptions = defineOptions({
  gates: { type: 'string', default: '', description: 'gate file (.safetensors) from `kvpress calibrate fast-kvzip` (required)' },
  layerwise: { type: 'boolean', default: false, description: 'each layer evicts floor(kvHeads·T·ratio) of its own entries (false: one budget over every layer and head)' },
  nSink: { type: 'integer', default: 4, min: 0, description: 'first entries always kept' },
  windowRatio: { type: 'number', default: 0.02, min: 0, max: 1, description: 'fraction of the most recent entries always kept (4096 entries once T ≥ 32000)' },
});

/**
 * One layer's gate (Fast KVzip, Jang-Hyun Kim et al.; kvpress `FastKVzipPress`): from a token's
 * attention-input hidden state h, per query head h′ a gate query q = RMSNorm(W_q h + b_q) ⊙ n_q and
 * per KV head g a gate key k = RMSNorm(W_k h) ⊙ n_k (width `dim`); against `numBase` learned base
 * keys K_g, the score is the token's softmax weight among its own key and the base keys,
 * 1 / (1 + Σ_s exp(q·K_{g,s}/√dim − (q·k/√dim + bias_h′))), averaged over the group.
 *
 * File (safetensors, F32), per layer i: `layers.{i}.q_proj.weight` [heads·dim, hidden],
 * `layers.{i}.q_proj.bias` [heads·dim], `layers.{i}.q_norm` [dim], `layers.{i}.k_proj.weight`
 * [kv_heads·dim, hidden], `layers.{i}.k_norm` [dim], `layers.{i}.base_keys` [kv_heads, num_base, dim],
 * `layers.{i}.bias` [heads]; metadata format = "kvpress-fast-kvzip", version = "1", model, tokens.
 * The authors' released gates (hub `Jang-Hyun/Fast-KVzip`) are not in this layout; their tensor
 * names are not known here, so they are not read.
 */
export interface GateLayer {
  wq: Float32Array;
  bq: Float32Array;
  qNorm: Float32Array;
  wk: Float32Array;
  kNorm: Float32Array;
  base: Float32Array;
  bias: Float32Array;
}

export interface Gates {
  hiddenSize: number;
  numHeads: number;
  numKvHeads: number;
  dim: number;
  numBase: number;
  layers: GateLayer[];
  model: string;
  tokens: number;
}

export const GATES_FORMAT = 'kvpress-fast-kvzip';
const EPS = 1e-6;

/** Working buffers of one token through one gate layer (forward values kept for the backward pass). */
interface Trace {
  q: Float64Array; qHat: Float64Array; rq: Float64Array; k: Float64Array; kHat: Float64Array; rk: Float64Array;
  /** [heads][1 + numBase]: softmax over (own key, base keys). */
  pi: Float64Array;
}

function newTrace(s: Gates): Trace {
  const H = s.numHeads, K = s.numKvHeads, d = s.dim;
  return { q: new Float64Array(H * d), qHat: new Float64Array(H * d), rq: new Float64Array(H), k: new Float64Array(K * d), kHat: new Float64Array(K * d), rk: new Float64Array(K), pi: new Float64Array(H * (1 + s.numBase)) };
}

/** Per-head gate probabilities of one token x (length hidden) into `tr`; returns nothing. */
function gateForward(s: Gates, p: { [K in keyof GateLayer]: ArrayLike<number> }, x: ArrayLike<number>, xo: number, tr: Trace): void {
  const { hiddenSize: D, numHeads: H, numKvHeads: K, dim: d, numBase: S } = s, G = H / K, sc = 1 / Math.sqrt(d);
  const norm = (w: ArrayLike<number>, b: ArrayLike<number> | null, heads: number, out: Float64Array, hat: Float64Array, r: Float64Array, n: ArrayLike<number>) => {
    for (let h = 0; h < heads; h++) {
      let ss = 0;
      for (let j = 0; j < d; j++) {
        let v = b ? b[h * d + j] : 0;
        const wo = (h * d + j) * D;
        for (let i = 0; i < D; i++) v += w[wo + i] * x[xo + i];
        hat[h * d + j] = v;
        ss += v * v;
      }
      r[h] = Math.sqrt(ss / d + EPS);
      for (let j = 0; j < d; j++) { hat[h * d + j] /= r[h]; out[h * d + j] = hat[h * d + j] * n[j]; }
    }
  };
  norm(p.wq, p.bq, H, tr.q, tr.qHat, tr.rq, p.qNorm);
  norm(p.wk, null, K, tr.k, tr.kHat, tr.rk, p.kNorm);
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / G), pi = tr.pi.subarray(h * (1 + S), (h + 1) * (1 + S));
    let z0 = p.bias[h];
    for (let j = 0; j < d; j++) z0 += tr.q[h * d + j] * tr.k[g * d + j] * sc;
    pi[0] = z0;
    let max = z0;
    for (let s2 = 0; s2 < S; s2++) {
      let z = 0;
      for (let j = 0; j < d; j++) z += tr.q[h * d + j] * p.base[(g * S + s2) * d + j] * sc;
      pi[1 + s2] = z;
      if (z > max) max = z;
    }
    let sum = 0;
    for (let i = 0; i <= S; i++) sum += pi[i] = Math.exp(pi[i] - max);
    for (let i = 0; i <= S; i++) pi[i] /= sum;
  }
}

/** Gate scores [kvHeads][rows] of layer l for hidden states [rows][hidden]. */
export function gateScores(s: Gates, l: number, hidden: ArrayLike<number>, rows: number): Float64Array[] {
  const G = s.numHeads / s.numKvHeads, out = Array.from({ length: s.numKvHeads }, () => new Float64Array(rows)), tr = newTrace(s);
  for (let r = 0; r < rows; r++) {
    gateForward(s, s.layers[l], hidden, r * s.hiddenSize, tr);
    for (let h = 0; h < s.numHeads; h++) out[Math.floor(h / G)][r] += tr.pi[h * (1 + s.numBase)] / G;
  }
  return out;
}

/**
 * Fast KVzip (kvpress `FastKVzipPress`): KVzip's selection (one budget over every layer and head,
 * or per layer with `layerwise`) from learned gates that predict the KVzip score of each entry from
 * its token's hidden state alone — no repeat pass. The first nSink and the last
 * floor(windowRatio·T) entries (4096 once T ≥ 32000) score 1. kvpress downloads the gates; here
 * `kvpress calibrate fast-kvzip` trains them on the model's own KVzip scores over local text.
 * Deviation: when floor(windowRatio·T) is 0 no recent entry is protected (the library's `[-0:]`
 * slice then protects every entry and evicts nothing). Real eviction, ties evict the later
 * position first (as kvzip). Prefill only. The gates read the pass's own float32 hidden states
 * and no cached key or value.
 */
export class FastKVzipPress implements Press {
  name = 'fast_kvzip';
  readonly phase = 'prefill' as const;
  observer: ScoreObserver | null = null;
  readonly options: OptionsOf<typeof fastKVzipOptions>;
  private ratio = 0;
  private gates: Gates | null;
  private pending: Float64Array[][] = [];

  constructor(compressionRatio = 0, options: Partial<OptionsOf<typeof fastKVzipOptions>> = {}, gates: Gates | null = null) {
    this.compressionRatio = compressionRatio;
    this.options = resolveOptions(fastKVzipOptions, options, 'FastKVzipPress');
    if (!gates && !this.options.gates) throw new PressError('FastKVzipPress needs gates: pass --press-option gates=PATH, a file written by `kvpress calibrate fast-kvzip`');
    this.gates = gates;
  }

  get compressionRatio(): number {
    return this.ratio;
  }

  set compressionRatio(r: number) {
    this.ratio = checkRatio(r);
  }

  validate(model: ModelParts): void {
    this.load(model);
  }

  private load(model: ModelParts): Gates {
    const c = model.config;
    if (!this.gates) {
      try {
        this.gates = readGates(this.options.gates, c.numLayers, c.hiddenSize, c.numHeads, c.numKvHeads);
      } catch (e) {
        throw new PressError(`FastKVzipPress: ${(e as Error).message}`);
      }
    }
    const s = this.gates;
    if (s.layers.length !== c.numLayers || s.hiddenSize !== c.hiddenSize || s.numHeads !== c.numHeads || s.numKvHeads !== c.numKvHeads) {
      throw new PressError(`FastKVzipPress: the gates fit ${s.layers.length} layers, ${s.numHeads}/${s.numKvHeads} heads of hidden size ${s.hiddenSize}; the model has ${c.numLayers}, ${c.numHeads}/${c.numKvHeads} of ${c.hiddenSize}`);
    }
    return s;
  }

  /** Gate scores of one layer with the protected ends set to 1. */
  score(ctx: LayerContext): Float64Array[] {
    const T = requirePrefillCache(ctx, this.name), o = this.options;
    const window = T >= 32000 ? 4096 : Math.floor(o.windowRatio * T);
    return gateScores(this.load(ctx.model), ctx.layer, ctx.hidden, T).map((s) => {
      s.fill(1, 0, Math.min(o.nSink, T));
      s.fill(1, T - Math.min(window, T), T);
      return s;
    });
  }

  /** Scores every layer as it passes; the selection over all of them is made at the last one. */
  compress(ctx: LayerContext): KeepIndices | null {
    if (!ctx.isPrefill || (this.ratio === 0 && !this.observer)) return null;
    if (ctx.layer === 0) this.pending = [];
    const s = this.score(ctx);
    this.pending[ctx.layer] = s;
    this.observer?.onScores(ctx.layer, s, false);
    if (this.ratio === 0 || ctx.layer !== ctx.config.numLayers - 1) return null;
    const scores = this.pending;
    this.pending = [];
    const keep = this.options.layerwise ? scores.map((x) => lowestOut([x], this.ratio)[0]) : lowestOut(scores, this.ratio);
    for (let l = 0; l < keep.length - 1; l++) ctx.kvCache.layers[l].keep(keep[l]);
    return keep[keep.length - 1];
  }
}

export function writeGates(path: string, s: Gates): void {
  const t: Record<string, TensorData> = {}, { hiddenSize: D, numHeads: H, numKvHeads: K, dim: d, numBase: S } = s;
  const f = (shape: number[], data: Float32Array): TensorData => ({ dtype: 'F32', shape, data });
  s.layers.forEach((p, i) => {
    t[`layers.${i}.q_proj.weight`] = f([H * d, D], p.wq);
    t[`layers.${i}.q_proj.bias`] = f([H * d], p.bq);
    t[`layers.${i}.q_norm`] = f([d], p.qNorm);
    t[`layers.${i}.k_proj.weight`] = f([K * d, D], p.wk);
    t[`layers.${i}.k_norm`] = f([d], p.kNorm);
    t[`layers.${i}.base_keys`] = f([K, S, d], p.base);
    t[`layers.${i}.bias`] = f([H], p.bias);
  });
  writeSafetensors(path, t, { format: GATES_FORMAT, version: '1', model: s.model, tokens: String(s.tokens) });
}

export function readGates(path: string, numLayers: number, hiddenSize: number, numHeads: number, numKvHeads: number): Gates {
  const { tensors, metadata } = readSafetensors(path);
  if (metadata.format !== GATES_FORMAT) throw new Error(`${path}: not a Fast KVzip gate file (metadata format "${metadata.format ?? ''}", expected "${GATES_FORMAT}"; write one with \`kvpress calibrate fast-kvzip\`)`);
  const base0 = tensors['layers.0.base_keys'];
  if (!base0 || base0.shape.length !== 3) throw new Error(`${path}: missing tensor layers.0.base_keys [kv_heads, num_base, dim]`);
  const [, S, d] = base0.shape;
  const get = tensorGetter(path, tensors, numLayers);
  const H = numHeads, K = numKvHeads, D = hiddenSize;
  const layers = Array.from({ length: numLayers }, (_, i): GateLayer => ({
    wq: get(`layers.${i}.q_proj.weight`, [H * d, D]), bq: get(`layers.${i}.q_proj.bias`, [H * d]), qNorm: get(`layers.${i}.q_norm`, [d]),
    wk: get(`layers.${i}.k_proj.weight`, [K * d, D]), kNorm: get(`layers.${i}.k_norm`, [d]), base: get(`layers.${i}.base_keys`, [K, S, d]), bias: get(`layers.${i}.bias`, [H]),
  }));
  return { hiddenSize: D, numHeads: H, numKvHeads: K, dim: d, numBase: S, layers, model: metadata.model ?? path, tokens: Number(metadata.tokens ?? 0) };
}

export interface GateTrainOptions {
  /** Gate width (default 16) and base keys per KV head (default 16), as the paper's gates. */
  dim?: number;
  numBase?: number;
  epochs?: number;
  learningRate?: number;
  seed?: number;
}

type Params = { [K in keyof GateLayer]: Float64Array };

/**
 * Squared error of log(group-mean gate score) against the log KVzip score, averaged over tokens and
 * KV heads, and its gradient (into `grad` when given).
 */
export function gateLoss(s: Gates, p: Params, d: SurrogateData, grad?: Params): number {
  const { hiddenSize: D, numHeads: H, numKvHeads: K, dim: dg, numBase: S } = s, G = H / K, sc = 1 / Math.sqrt(dg), tr = newTrace(s);
  const dq = new Float64Array(H * dg), dk = new Float64Array(K * dg), P = new Float64Array(K);
  let loss = 0;
  for (let n = 0; n < d.n; n++) {
    const x = d.x[n];
    gateForward(s, p, x, 0, tr);
    P.fill(0);
    for (let h = 0; h < H; h++) P[Math.floor(h / G)] += tr.pi[h * (1 + S)] / G;
    for (let g = 0; g < K; g++) loss += (Math.log(P[g]) - d.y[n][g]) ** 2 / (d.n * K);
    if (!grad) continue;
    dq.fill(0);
    dk.fill(0);
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / G), pi = tr.pi.subarray(h * (1 + S), (h + 1) * (1 + S)), ph = pi[0];
      const dp = ((2 * (Math.log(P[g]) - d.y[n][g])) / (d.n * K) / P[g]) / G;
      const dz0 = dp * ph * (1 - ph);
      grad.bias[h] += dz0;
      for (let j = 0; j < dg; j++) {
        dq[h * dg + j] += dz0 * tr.k[g * dg + j] * sc;
        dk[g * dg + j] += dz0 * tr.q[h * dg + j] * sc;
      }
      for (let b = 0; b < S; b++) {
        const dz = -dp * ph * pi[1 + b];
        for (let j = 0; j < dg; j++) {
          dq[h * dg + j] += dz * p.base[(g * S + b) * dg + j] * sc;
          grad.base[(g * S + b) * dg + j] += dz * tr.q[h * dg + j] * sc;
        }
      }
    }
    const back = (dOut: Float64Array, hat: Float64Array, r: Float64Array, nw: Float64Array, dn: Float64Array, dw: Float64Array, db: Float64Array | null, heads: number) => {
      for (let h = 0; h < heads; h++) {
        let m = 0;
        for (let j = 0; j < dg; j++) { dn[j] += dOut[h * dg + j] * hat[h * dg + j]; m += dOut[h * dg + j] * nw[j] * hat[h * dg + j]; }
        m /= dg;
        for (let j = 0; j < dg; j++) {
          const du = (dOut[h * dg + j] * nw[j] - hat[h * dg + j] * m) / r[h];
          if (db) db[h * dg + j] += du;
          const wo = (h * dg + j) * D;
          for (let i = 0; i < D; i++) dw[wo + i] += du * x[i];
        }
      }
    };
    back(dq, tr.qHat, tr.rq, p.qNorm, grad.qNorm, grad.wq, grad.bq, H);
    back(dk, tr.kHat, tr.rk, p.kNorm, grad.kNorm, grad.wk, null, K);
  }
  return loss;
}

/** Trains one gate per layer on `data` (targets: log KVzip scores) with full-batch Adam. */
export function trainGates(data: readonly SurrogateData[], numHeads: number, numKvHeads: number, hiddenSize: number, model: string, opts: GateTrainOptions = {}): Gates {
  const dim = opts.dim ?? 16, numBase = opts.numBase ?? 16, epochs = opts.epochs ?? 200, lr = opts.learningRate ?? 1e-2;
  const shape: Gates = { hiddenSize, numHeads, numKvHeads, dim, numBase, layers: [], model, tokens: data[0]?.n ?? 0 };
  const rand = mulberry32(opts.seed ?? 0), normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const D = hiddenSize;
  for (const d of data) {
    if (d.n < 1) throw new Error('fast-kvzip training needs at least one token per layer');
    const p: Params = {
      wq: Float64Array.from({ length: numHeads * dim * D }, () => normal() / Math.sqrt(D)), bq: new Float64Array(numHeads * dim), qNorm: new Float64Array(dim).fill(1),
      wk: Float64Array.from({ length: numKvHeads * dim * D }, () => normal() / Math.sqrt(D)), kNorm: new Float64Array(dim).fill(1),
      base: Float64Array.from({ length: numKvHeads * numBase * dim }, normal), bias: new Float64Array(numHeads),
    };
    const keys = Object.keys(p) as (keyof Params)[];
    const zeros = () => Object.fromEntries(keys.map((k) => [k, new Float64Array(p[k].length)])) as Params;
    const m = zeros(), v = zeros();
    for (let e = 1; e <= epochs; e++) {
      const g = zeros();
      gateLoss(shape, p, d, g);
      const c1 = 1 - 0.9 ** e, c2 = 1 - 0.999 ** e;
      for (const k of keys) {
        for (let i = 0; i < p[k].length; i++) {
          m[k][i] = 0.9 * m[k][i] + 0.1 * g[k][i];
          v[k][i] = 0.999 * v[k][i] + 0.001 * g[k][i] ** 2;
          p[k][i] -= (lr * m[k][i]) / c1 / (Math.sqrt(v[k][i] / c2) + 1e-8);
        }
      }
    }
    shape.layers.push(Object.fromEntries(keys.map((k) => [k, Float32Array.from(p[k])])) as unknown as GateLayer);
  }
  return shape;
}

export const fastKVzipEntry: PressEntry = {
  name: 'fast_kvzip',
  description: 'Fast KVzip: learned gates predict KVzip scores from hidden states (no repeat pass), trained by `kvpress calibrate fast-kvzip`; KVzip\'s global budget',
  options: fastKVzipOptions,
  phase: 'prefill',
  create: (r, o) => new FastKVzipPress(r, o as OptionsOf<typeof fastKVzipOptions>),
};
