import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Compressor, LayerContext, ModelParts } from '../model/layer-context.js';
import type { Model } from '../model/model.js';
import { range } from './common.js';
import { defineOptions, ratioOption, resolveOptions, type OptionsOf } from './options.js';
import { PressError, type KeepIndices, type Press, type PressPhase, type ScoreObserver } from './press.js';
import type { PressEntry } from './registry.js';

export const duoAttentionOptions = defineOptions({
  headCompressionRatio: { type: 'number', default: 0, min: 0, max: 1, description: 'share of the (layer, KV head) pairs made streaming heads: the lowest-scoring round(L·H·ratio)' },
  patterns: { type: 'string', default: '', description: 'head-pattern directory (config.json + full_attention_heads.tsv): `kvpress calibrate --duo-patterns DIR`, or the DuoAttention authors\' attn_patterns/<model>/' },
});

/**
 * Head patterns of DuoAttention: a retrieval score per (layer, KV head) in [0, 1] (higher = the
 * head needs the full context) and the streaming heads' sink and recent window sizes.
 *
 * On disk (the DuoAttention authors' layout, which `kvpress calibrate --duo-patterns` also writes):
 * a directory holding `config.json` — `{"sink_size": int, "recent_size": int, …}` — and
 * `full_attention_heads.tsv` — one line per layer, one tab-separated number per KV head. Scores
 * are clipped to [0, 1] on reading, as the authors' loader does.
 */
export interface DuoPatterns {
  sinkSize: number;
  recentSize: number;
  /** [layers][kvHeads] retrieval scores. */
  scores: number[][];
}

/** Reads a pattern directory; a one-line PressError on anything malformed. */
export function readDuoPatterns(dir: string): DuoPatterns {
  const read = (name: string) => {
    try {
      return readFileSync(join(dir, name), 'utf8');
    } catch (e) {
      throw new PressError(`DuoAttention patterns: cannot read ${join(dir, name)} (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    }
  };
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(read('config.json'));
  } catch (e) {
    if (e instanceof PressError) throw e;
    throw new PressError(`DuoAttention patterns: ${join(dir, 'config.json')} is not JSON (${(e as Error).message})`);
  }
  const size = (k: string) => {
    const v = config?.[k];
    if (!Number.isInteger(v) || (v as number) < 0) throw new PressError(`DuoAttention patterns: ${join(dir, 'config.json')} needs "${k}", an integer ≥ 0 (got ${JSON.stringify(v)})`);
    return v as number;
  };
  const sinkSize = size('sink_size'), recentSize = size('recent_size');
  const lines = read('full_attention_heads.tsv').split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  const scores = lines.map((l, i) => l.split(/\t| +/).map((x) => {
    const v = Number(x);
    if (x === '' || !Number.isFinite(v)) throw new PressError(`DuoAttention patterns: full_attention_heads.tsv line ${i + 1}: "${x.slice(0, 20)}" is not a number`);
    return Math.min(1, Math.max(0, v));
  }));
  if (scores.length === 0 || scores.some((r) => r.length !== scores[0].length)) throw new PressError('DuoAttention patterns: full_attention_heads.tsv must hold one line per layer with the same number of heads on each');
  return { sinkSize, recentSize, scores };
}

/** Writes `p` in the authors' layout (see DuoPatterns). */
export function writeDuoPatterns(dir: string, p: DuoPatterns, extra: Record<string, unknown> = {}): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ sink_size: p.sinkSize, recent_size: p.recentSize, ...extra }, null, 1) + '\n');
  writeFileSync(join(dir, 'full_attention_heads.tsv'), p.scores.map((r) => r.map((x) => x.toPrecision(9)).join('\t')).join('\n') + '\n');
}

/**
 * DuoAttention (Xiao et al., "DuoAttention: Efficient Long-Context LLM Inference with Retrieval and
 * Streaming Heads", arXiv 2410.10819; kvpress `DuoAttentionPress`): the round(L·H·ratio)
 * (layer, KV head) pairs with the lowest retrieval scores become streaming heads, which keep only
 * their first sinkSize and last recentSize prompt entries; retrieval heads keep everything. Ties
 * go to the lower (layer, head) first. The patterns come from a file (`patterns`, see DuoPatterns).
 * kvpress masks the streaming heads' middle entries; here they are evicted, so the memory is
 * freed (spec §1.5). Prompts of at most sinkSize + recentSize tokens are left alone. The ratio it
 * reports is the share of entries evicted by the last prefill.
 * It reads only how many entries each head holds, no key or value, so its kept set is the same
 * for every cache element type (calibrateDuoPatterns reads the passes' own pre-RoPE projections).
 */
export class DuoAttentionPress implements Press {
  readonly phase: PressPhase = 'prefill';
  name = 'duo_attention';
  observer: ScoreObserver | null = null;
  readonly options: OptionsOf<typeof duoAttentionOptions>;
  readonly patterns: DuoPatterns;
  /** [layers][kvHeads]: true for a streaming head. */
  readonly streaming: boolean[][];
  private evicted: number[] = [];

  constructor(patterns: DuoPatterns, options: Partial<OptionsOf<typeof duoAttentionOptions>> = {}) {
    this.options = resolveOptions(duoAttentionOptions, options, 'DuoAttentionPress');
    this.patterns = patterns;
    const flat = patterns.scores.flatMap((r, l) => r.map((s, g) => ({ s, l, g })));
    const n = roundHalfEven(flat.length * this.options.headCompressionRatio);
    this.streaming = patterns.scores.map((r) => r.map(() => false));
    // A stable sort: equal scores keep (layer, head) order, so the lower pair streams first.
    for (const { l, g } of flat.sort((a, b) => a.s - b.s).slice(0, n)) this.streaming[l][g] = true;
  }

  get compressionRatio(): number {
    return this.evicted.length ? this.evicted.reduce((a, b) => a + b, 0) / this.evicted.length : 0;
  }

  set compressionRatio(r: number) {
    throw new PressError(`DuoAttentionPress: set headCompressionRatio instead of a compression ratio (got ${r})`);
  }

  validate(model: ModelParts): void {
    const c = model.config, s = this.patterns.scores;
    if (s.length !== c.numLayers || s.some((r) => r.length !== c.numKvHeads)) {
      throw new PressError(`DuoAttention patterns are ${s.length}×${s[0]?.length ?? 0} (layers × KV heads), the model has ${c.numLayers}×${c.numKvHeads}`);
    }
  }

  reset(): void {
    this.evicted = [];
  }

  compress(ctx: LayerContext): KeepIndices | null {
    if (!ctx.isPrefill) return null;
    if (ctx.layer === 0) this.reset();
    const { sinkSize, recentSize } = this.patterns, heads = this.streaming[ctx.layer], L = ctx.cache.lengths;
    if (!heads) throw new PressError(`DuoAttention patterns have no layer ${ctx.layer}`);
    const streams = (g: number) => heads[g] && L[g] > sinkSize + recentSize;
    let evicted = 0, total = 0;
    for (let g = 0; g < L.length; g++) {
      total += L[g];
      if (streams(g)) evicted += L[g] - sinkSize - recentSize;
    }
    this.evicted[ctx.layer] = total ? evicted / total : 0;
    if (evicted === 0) return null;
    return Array.from(L, (n, g) => (streams(g) ? Int32Array.from([...range(0, sinkSize), ...range(n - recentSize, n)]) : range(0, n)));
  }
}

/** Python's round(): halves to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x), d = x - f;
  return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
}

export interface DuoCalibrationOptions {
  /** Positions the mean query and key are repeated over (default 500, as kvpress). */
  length?: number;
  /** Leading tokens of each sample left out of the means (default 4). */
  nSink?: number;
  /** Sink and recent sizes written to the patterns (default 128 and 256, kvpress's). */
  sinkSize?: number;
  recentSize?: number;
  onSample?: (done: number, total: number) => void;
}

/**
 * Head patterns computed on local text, after kvpress's on-the-fly scoring (which runs BookSum
 * samples): per layer, the mean pre-RoPE query of every query head and the mean pre-RoPE key of
 * every KV head over the samples' tokens; both are placed at positions 0 … length − 1 with RoPE,
 * and the last position's query attends over them (softmax of q·k/√d). The head's retrieval score
 * is the mean of the cumulative attention curve from the oldest position — Σ_t a_t (length − t) /
 * length, high when the attention reaches far back — averaged over the KV head's query group.
 */
export function calibrateDuoPatterns(model: Model, samples: readonly (readonly number[])[], opts: DuoCalibrationOptions = {}): DuoPatterns {
  const c = model.config, d = c.headDim, H = c.numHeads, Hkv = c.numKvHeads, nSink = opts.nSink ?? 4;
  const qSum = Array.from({ length: c.numLayers }, () => new Float64Array(H * d));
  const kSum = Array.from({ length: c.numLayers }, () => new Float64Array(Hkv * d));
  let n = 0;
  const acc: Compressor = {
    compress(ctx) {
      if (!ctx.isPrefill) return null;
      const q = ctx.preRopeQueries(), k = ctx.preRopeKeys(), qs = qSum[ctx.layer], ks = kSum[ctx.layer];
      for (let r = nSink; r < ctx.rows; r++) {
        for (let i = 0; i < H * d; i++) qs[i] += q[r * H * d + i];
        for (let i = 0; i < Hkv * d; i++) ks[i] += k[r * Hkv * d + i];
      }
      if (ctx.layer === 0) n += Math.max(0, ctx.rows - nSink);
      return null;
    },
  };
  samples.forEach((tokens, i) => {
    model.forward(tokens, model.newCache(), { press: acc, logits: 'none' });
    opts.onSample?.(i + 1, samples.length);
  });
  if (n === 0) throw new Error(`DuoAttention calibration: no token beyond the ${nSink} sinks of each sample`);
  const length = opts.length ?? 500, rope = model.rope, half = rope.half, G = H / Hkv;
  const rotate = (x: Float64Array, o: number, p: number) => {
    // HF rotate_half layout: channel j pairs with j + d/2 (the engine's q/k layout).
    const out = new Float64Array(d);
    for (let j = 0; j < half; j++) {
      const a = p * rope.invFreq[j], cs = Math.cos(a), sn = Math.sin(a);
      out[j] = x[o + j] * cs - x[o + j + half] * sn;
      out[j + half] = x[o + j + half] * cs + x[o + j] * sn;
    }
    return out;
  };
  const scores = qSum.map((qs, l) => {
    const qMean = qs.map((x) => x / n), kMean = kSum[l].map((x) => x / n);
    return Array.from({ length: Hkv }, (_, g) => {
      const keys = Array.from({ length }, (_, t) => rotate(kMean, g * d, t));
      let score = 0;
      for (let h = g * G; h < (g + 1) * G; h++) {
        const q = rotate(qMean, h * d, length - 1), z = new Float64Array(length);
        let max = -Infinity;
        for (let t = 0; t < length; t++) {
          let s = 0;
          for (let j = 0; j < d; j++) s += q[j] * keys[t][j];
          z[t] = s / Math.sqrt(d);
          if (z[t] > max) max = z[t];
        }
        let sum = 0;
        for (let t = 0; t < length; t++) sum += z[t] = Math.exp(z[t] - max);
        let curve = 0;
        for (let t = 0; t < length; t++) curve += (z[t] / sum) * (length - t);
        score += curve / length / G;
      }
      return Math.min(1, Math.max(0, score));
    });
  });
  return { sinkSize: opts.sinkSize ?? 128, recentSize: opts.recentSize ?? 256, scores };
}

export const duoAttentionEntry: PressEntry = {
  name: 'duo_attention',
  description: 'DuoAttention: the heads with the lowest retrieval scores stream (sinks + recent window only); patterns from `kvpress calibrate --duo-patterns` (arXiv 2410.10819; prefill only; the ratio is the head ratio)',
  options: duoAttentionOptions,
  create: (r, o) => {
    const ratio = ratioOption(r, o.headCompressionRatio as number, 'headCompressionRatio');
    if (!o.patterns) throw new Error('needs head patterns: pass --press-option patterns=DIR, a directory written by `kvpress calibrate --duo-patterns DIR` (or the DuoAttention authors\' attn_patterns/<model>/)');
    return new DuoAttentionPress(readDuoPatterns(o.patterns as string), { patterns: o.patterns as string, headCompressionRatio: ratio });
  },
};
