import { readSafetensors, writeSafetensors, type TensorData } from '../model/loaders/safetensors.js';
import type { Backend } from '../backend/backend.js';
import type { Compressor } from '../model/layer-context.js';
import type { Model } from '../model/model.js';
import { kvzipScores, runnableModel, templateFrame } from './kvzip-scores.js';
import { mulberry32 } from './random.js';
import { cholesky } from './quadratic-forms.js';

/**
 * KVzap's surrogate (Jegou & Jeblick, "KVzap: Fast, Adaptive and Faithful KV Cache Pruning",
 * arXiv 2601.07891): per layer, a small network maps each token's attention-input hidden state
 * h ∈ R^D to the predicted log KVzip+ score of its entry in every KV head — `linear`: W h + b,
 * `mlp`: W₂ GELU(W₁ h + b₁) + b₂ (exact erf GELU, as torch's nn.GELU).
 *
 * File (safetensors, F32), the tensor names of the library's `KVzapModel` (a ModuleList of
 * nn.Linear or nn.Sequential(Linear, GELU, Linear)), so the authors' `model.safetensors` loads too:
 * - linear: `layers.{i}.weight` [kvHeads, D], `layers.{i}.bias` [kvHeads];
 * - mlp: `layers.{i}.0.weight` [hidden, D], `layers.{i}.0.bias` [hidden], `layers.{i}.2.weight`
 *   [kvHeads, hidden], `layers.{i}.2.bias` [kvHeads];
 * for every layer i = 0 … L − 1. Metadata (written by `kvpress calibrate kvzap`, optional on
 * reading): `format` = "kvpress-kvzap", `version` = "1", `type`, `model`, `tokens`.
 */
export interface SurrogateLayer {
  /** [out][in] row-major, as nn.Linear.weight. */
  w1: Float32Array;
  b1: Float32Array;
  /** MLP only: the second linear layer. */
  w2?: Float32Array;
  b2?: Float32Array;
}

export interface KVzipSurrogate {
  type: 'linear' | 'mlp';
  hiddenSize: number;
  numKvHeads: number;
  /** MLP width (0 for linear). */
  width: number;
  layers: SurrogateLayer[];
  /** Where it was trained (model source), and on how many tokens. */
  model: string;
  tokens: number;
}

export const SURROGATE_FORMAT = 'kvpress-kvzap';

/** erf to 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), for the exact GELU. */
function erf(x: number): number {
  const z = Math.abs(x), t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? 1 - r : r - 1;
}

const gelu = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));
const geluGrad = (x: number): number => 0.5 * (1 + erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);

/**
 * Predicted log-scores [kvHeads][rows] of layer `l` for hidden states [rows][D]. With a backend,
 * the first linear layer (rows × D × width, the whole cost) is its float32 GEMM, bias included,
 * and the rest float64 here; without, every sum is float64.
 */
export function predictSurrogate(s: KVzipSurrogate, l: number, hidden: Float32Array, rows: number, backend?: Backend): Float64Array[] {
  const { hiddenSize: D, numKvHeads: H, width } = s, p = s.layers[l], n1 = s.type === 'linear' ? H : width;
  const out = Array.from({ length: H }, () => new Float64Array(rows));
  let pre: Float32Array | null = null;
  if (backend && rows > 0) {
    pre = new Float32Array(rows * n1);
    backend.matmul(pre, hidden, p.w1, rows, n1, D, p.b1);
  }
  const a = new Float64Array(Math.max(width, 1));
  for (let r = 0; r < rows; r++) {
    const x = r * D;
    const first = (j: number) => (pre ? pre[r * n1 + j] : p.b1[j] + dot(p.w1, j * D, hidden, x, D));
    if (s.type === 'linear') {
      for (let g = 0; g < H; g++) out[g][r] = first(g);
      continue;
    }
    for (let j = 0; j < width; j++) a[j] = gelu(first(j));
    for (let g = 0; g < H; g++) out[g][r] = p.b2![g] + dot(p.w2!, g * width, a, 0, width);
  }
  return out;
}

function dot(w: ArrayLike<number>, wo: number, x: ArrayLike<number>, xo: number, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += w[wo + i] * x[xo + i];
  return s;
}

/** Writes a surrogate as safetensors (format above). */
export function writeSurrogate(path: string, s: KVzipSurrogate): void {
  const t: Record<string, TensorData> = {};
  const D = s.hiddenSize, H = s.numKvHeads, W = s.width;
  s.layers.forEach((p, i) => {
    if (s.type === 'linear') {
      t[`layers.${i}.weight`] = { dtype: 'F32', shape: [H, D], data: p.w1 };
      t[`layers.${i}.bias`] = { dtype: 'F32', shape: [H], data: p.b1 };
    } else {
      t[`layers.${i}.0.weight`] = { dtype: 'F32', shape: [W, D], data: p.w1 };
      t[`layers.${i}.0.bias`] = { dtype: 'F32', shape: [W], data: p.b1 };
      t[`layers.${i}.2.weight`] = { dtype: 'F32', shape: [H, W], data: p.w2! };
      t[`layers.${i}.2.bias`] = { dtype: 'F32', shape: [H], data: p.b2! };
    }
  });
  writeSafetensors(path, t, { format: SURROGATE_FORMAT, version: '1', type: s.type, model: s.model, tokens: String(s.tokens) });
}

/**
 * Reads a surrogate file (ours, or the library's KVzapModel weights); one-line errors naming the
 * file. `numLayers`, `hiddenSize`, `numKvHeads`: the model it must fit.
 */
export function readSurrogate(path: string, numLayers: number, hiddenSize: number, numKvHeads: number): KVzipSurrogate {
  const { tensors, metadata } = readSafetensors(path);
  if (metadata.format !== undefined && metadata.format !== SURROGATE_FORMAT) throw new Error(`${path}: not a KVzap surrogate (metadata format "${metadata.format}", expected "${SURROGATE_FORMAT}")`);
  const type = 'layers.0.0.weight' in tensors ? 'mlp' : 'layers.0.weight' in tensors ? 'linear' : null;
  if (!type) throw new Error(`${path}: no tensor layers.0.weight (linear) or layers.0.0.weight (mlp); write one with \`kvpress calibrate kvzap\``);
  const get = tensorGetter(path, tensors, numLayers);
  const D = hiddenSize, H = numKvHeads;
  const width = type === 'mlp' ? tensors['layers.0.0.weight'].shape[0] : 0;
  const layers = Array.from({ length: numLayers }, (_, i): SurrogateLayer => type === 'linear'
    ? { w1: get(`layers.${i}.weight`, [H, D]), b1: get(`layers.${i}.bias`, [H]) }
    : { w1: get(`layers.${i}.0.weight`, [width, D]), b1: get(`layers.${i}.0.bias`, [width]), w2: get(`layers.${i}.2.weight`, [H, width]), b2: get(`layers.${i}.2.bias`, [H]) });
  return { type, hiddenSize: D, numKvHeads: H, width, layers, model: metadata.model ?? path, tokens: Number(metadata.tokens ?? 0) };
}

/** A reader of `tensors` by name and expected shape, with one-line errors naming the file (finite values only). */
export function tensorGetter(path: string, tensors: Record<string, TensorData>, numLayers: number): (name: string, shape: number[]) => Float32Array {
  return (name, shape) => {
    const x = tensors[name];
    if (!x) throw new Error(`${path}: missing tensor ${name} (the model has ${numLayers} layers)`);
    if (x.shape.length !== shape.length || x.shape.some((n, i) => n !== shape[i])) throw new Error(`${path}: ${name} has shape [${x.shape.join(', ')}], the model needs [${shape.join(', ')}]`);
    for (const v of x.data) if (!Number.isFinite(v)) throw new Error(`${path}: ${name} holds a non-finite value`);
    return x.data;
  };
}

/** Training pairs of one layer: hidden states [n][D] and target log-scores [n][kvHeads]. */
export interface SurrogateData {
  x: Float32Array[];
  y: Float32Array[];
  /** Tokens collected. */
  n: number;
}

/** Floor of a KVzip+ score before its logarithm (a probability that underflowed). */
const FLOOR = 1e-30;

/**
 * KVzap's training pairs from `samples` (token ids, BOS included): each sample is prefilled, its
 * KVzip+ scores (plain KVzip scores with kvzipPlusNormalization false, Fast KVzip's target) computed by the repeat pass (kvzip-scores.ts), and every layer's attention-input
 * hidden state of token t is paired with log(score) of entry t in each KV head. A chat-template
 * prefix (scored 0/1 by rule, not by attention) is left out.
 */
export function collectSurrogateData(model: Model, samples: readonly (readonly number[])[], opts: { nSink?: number; chunkSize?: number; kvzipPlusNormalization?: boolean; onSample?: (done: number, total: number) => void } = {}): SurrogateData[] {
  const c = model.config, D = c.hiddenSize, H = c.numKvHeads;
  const data: SurrogateData[] = Array.from({ length: c.numLayers }, () => ({ x: [], y: [], n: 0 }));
  samples.forEach((tokens, i) => {
    const hidden: Float32Array[] = [];
    let scores: Float64Array[][] | null = null;
    const probe: Compressor = {
      compress(ctx) {
        hidden[ctx.layer] = ctx.hidden.slice(0, ctx.rows * D);
        if (ctx.layer === c.numLayers - 1) scores = kvzipScores(runnableModel(ctx, 'kvzap training'), ctx.kvCache, tokens, { nSink: opts.nSink ?? 4, kvzipPlusNormalization: opts.kvzipPlusNormalization ?? true, chunkSize: opts.chunkSize ?? 2048 });
      },
    };
    model.forward(tokens, model.newCache(), { press: probe, logits: 'none' });
    const s = scores as Float64Array[][] | null;
    if (!s) throw new Error('kvzap training: the prefill produced no scores');
    const from = templateFrame(model.tokenizer!, tokens).prefixLength;
    for (let l = 0; l < c.numLayers; l++) {
      for (let t = from; t < tokens.length; t++) {
        const y = new Float32Array(H);
        for (let g = 0; g < H; g++) y[g] = Math.log(Math.max(s[l][g][t], FLOOR));
        data[l].x.push(hidden[l].slice(t * D, (t + 1) * D));
        data[l].y.push(y);
        data[l].n++;
      }
    }
    opts.onSample?.(i + 1, samples.length);
  });
  return data;
}

export interface TrainOptions {
  type: 'linear' | 'mlp';
  /** Ridge penalty of the linear fit, relative to the mean diagonal of XᵀX (default 1e-3). */
  ridge?: number;
  /** MLP width (default 32), epochs of full-batch Adam (default 300), learning rate (default 1e-2), seed (default 0). */
  width?: number;
  epochs?: number;
  learningRate?: number;
  seed?: number;
}

/** Fits one surrogate layer per entry of `data` (see TrainOptions). */
export function trainSurrogate(data: readonly SurrogateData[], hiddenSize: number, numKvHeads: number, model: string, opts: TrainOptions): KVzipSurrogate {
  if (data.some((d) => d.n < 2)) throw new Error('kvzap training needs at least two tokens per layer');
  const layers = data.map((d) => (opts.type === 'linear' ? fitLinear(d, hiddenSize, numKvHeads, opts.ridge ?? 1e-3) : fitMlp(d, hiddenSize, numKvHeads, opts)));
  return { type: opts.type, hiddenSize, numKvHeads, width: opts.type === 'mlp' ? opts.width ?? 32 : 0, layers, model, tokens: data[0].n };
}

/** Ridge least squares on [h, 1]: (XᵀX + λI)w = Xᵀy per KV head (bias unpenalised), float64 Cholesky. */
function fitLinear(d: SurrogateData, D: number, H: number, ridge: number): SurrogateLayer {
  const n = D + 1, A = new Float64Array(n * n), B = new Float64Array(n * H);
  const row = new Float64Array(n);
  for (let s = 0; s < d.n; s++) {
    row.set(d.x[s]);
    row[D] = 1;
    for (let i = 0; i < n; i++) {
      const ri = row[i];
      if (ri === 0) continue;
      for (let j = 0; j <= i; j++) A[i * n + j] += ri * row[j];
      for (let g = 0; g < H; g++) B[i * H + g] += ri * d.y[s][g];
    }
  }
  let trace = 0;
  for (let i = 0; i < D; i++) trace += A[i * n + i];
  const lambda = (ridge * trace) / D + 1e-12;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < i; j++) A[j * n + i] = A[i * n + j];
    if (i < D) A[i * n + i] += lambda;
  }
  const L = cholesky(A, n);
  if (!L) throw new Error('kvzap training: the hidden states are degenerate (raise the ridge penalty)');
  const w = new Float32Array(H * D), b = new Float32Array(H), z = new Float64Array(n), sol = new Float64Array(n);
  for (let g = 0; g < H; g++) {
    for (let i = 0; i < n; i++) {
      let v = B[i * H + g];
      for (let j = 0; j < i; j++) v -= L[i * n + j] * z[j];
      z[i] = v / L[i * n + i];
    }
    for (let i = n - 1; i >= 0; i--) {
      let v = z[i];
      for (let j = i + 1; j < n; j++) v -= L[j * n + i] * sol[j];
      sol[i] = v / L[i * n + i];
    }
    for (let i = 0; i < D; i++) w[g * D + i] = sol[i];
    b[g] = sol[D];
  }
  return { w1: w, b1: b };
}

/** Full-batch Adam on the mean squared error of log-scores; W₁ ~ N(0, 1/D) seeded, W₂ = 0, b₂ = the mean target. */
function fitMlp(d: SurrogateData, D: number, H: number, opts: TrainOptions): SurrogateLayer {
  const W = opts.width ?? 32, epochs = opts.epochs ?? 300, lr = opts.learningRate ?? 1e-2, rand = mulberry32(opts.seed ?? 0);
  const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const params = [Float64Array.from({ length: W * D }, () => normal() / Math.sqrt(D)), new Float64Array(W), new Float64Array(H * W), new Float64Array(H)];
  for (const y of d.y) for (let g = 0; g < H; g++) params[3][g] += y[g] / d.n;
  const grads = params.map((p) => new Float64Array(p.length)), m = params.map((p) => new Float64Array(p.length)), v = params.map((p) => new Float64Array(p.length));
  const pre = new Float64Array(W), act = new Float64Array(W), err = new Float64Array(H);
  for (let e = 1; e <= epochs; e++) {
    for (const g of grads) g.fill(0);
    for (let s = 0; s < d.n; s++) {
      const x = d.x[s];
      for (let j = 0; j < W; j++) { pre[j] = params[1][j] + dot(params[0], j * D, x, 0, D); act[j] = gelu(pre[j]); }
      for (let g = 0; g < H; g++) {
        err[g] = (2 / (d.n * H)) * (params[3][g] + dot(params[2], g * W, act, 0, W) - d.y[s][g]);
        grads[3][g] += err[g];
        for (let j = 0; j < W; j++) grads[2][g * W + j] += err[g] * act[j];
      }
      for (let j = 0; j < W; j++) {
        let back = 0;
        for (let g = 0; g < H; g++) back += err[g] * params[2][g * W + j];
        back *= geluGrad(pre[j]);
        grads[1][j] += back;
        for (let i = 0; i < D; i++) grads[0][j * D + i] += back * x[i];
      }
    }
    const c1 = 1 - 0.9 ** e, c2 = 1 - 0.999 ** e;
    params.forEach((p, k) => {
      for (let i = 0; i < p.length; i++) {
        m[k][i] = 0.9 * m[k][i] + 0.1 * grads[k][i];
        v[k][i] = 0.999 * v[k][i] + 0.001 * grads[k][i] ** 2;
        p[i] -= (lr * m[k][i]) / c1 / (Math.sqrt(v[k][i] / c2) + 1e-8);
      }
    });
  }
  return { w1: Float32Array.from(params[0]), b1: Float32Array.from(params[1]), w2: Float32Array.from(params[2]), b2: Float32Array.from(params[3]) };
}

/** Mean squared error of a surrogate layer's predictions on `d` (the training loss). */
export function surrogateLoss(s: KVzipSurrogate, l: number, d: SurrogateData): number {
  let e = 0;
  for (let i = 0; i < d.n; i++) {
    const p = predictSurrogate(s, l, d.x[i], 1);
    for (let g = 0; g < s.numKvHeads; g++) e += (p[g][0] - d.y[i][g]) ** 2;
  }
  return e / (d.n * s.numKvHeads);
}
