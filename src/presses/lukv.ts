import { readFileSync, writeFileSync } from 'node:fs';
import type { LayerContext, ModelParts } from '../model/layer-context.js';
import type { Model } from '../model/model.js';
import { forEachAttentionRow, globalMax, uniformLength } from './common.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import { PressError, type KeepIndices, type PressPhase } from './press.js';
import type { WrapperEntry } from './registry.js';
import { topK, type ScorerPress } from './scorer.js';
import { ScorerWrapper } from './wrapper.js';

export const lukvOptions = defineOptions({
  budgets: { type: 'string', default: '', description: 'budget curves file written by `kvpress calibrate --lukv-budgets` (required)' },
  sink: { type: 'integer', default: 4, min: 0, description: 'first tokens always kept' },
  window: { type: 'integer', default: 1, min: 0, description: 'last tokens always kept' },
});

/**
 * Per-head budget curves: pruneRatios[i][layer][kvHead] is the fraction of that head's entries
 * to evict when the press's compression ratio is (i + 1)/100, i = 0 … 98. On disk (JSON):
 * {"format": "kvpress-lukv-budgets", "version": 1, "model", "numLayers", "numKvHeads",
 *  "samples", "tokens", "pruneRatios": number[99][numLayers][numKvHeads]}.
 */
export interface LukvBudgets {
  model: string;
  numLayers: number;
  numKvHeads: number;
  samples: number;
  tokens: number;
  pruneRatios: number[][][];
}

const FORMAT = 'kvpress-lukv-budgets';

/**
 * LU-KV (kvpress `LUKVPress`, budget curves of the LU-KV authors): a wrapper that gives every
 * (layer, KV head) its own budget from curves computed offline, then keeps each head's best
 * entries by the inner scorer. At compression ratio r the curves' row round(100·r) − 1 holds each
 * head's prune ratio p; head h keeps T·(1 − p_h) entries, rounded by largest remainder so the
 * layer's total is the rounded sum, each count in [1, T]. The first `sink` and last `window`
 * tokens get max + 1 so they are kept first. Real per-head eviction (the library masks).
 * kvpress downloads the curves (released for Llama-3.1-8B-Instruct only); here
 * `kvpress calibrate --lukv-budgets` computes them for the model at hand (see calibrateLukvBudgets).
 * The library's default inner press is Expected Attention with epsilon = 2e-2
 * (`lukv_expected_attention --press-option epsilon=0.02`). Prefill only.
 */
export class LUKVPress extends ScorerWrapper {
  readonly phase: PressPhase = 'prefill';
  readonly options: OptionsOf<typeof lukvOptions>;
  readonly budgets: LukvBudgets;

  constructor(inner: ScorerPress, compressionRatio = inner?.compressionRatio, options: Partial<OptionsOf<typeof lukvOptions>> & { curves?: LukvBudgets } = {}) {
    super(inner, 'lukv', compressionRatio);
    const { curves, ...rest } = options;
    this.options = resolveOptions(lukvOptions, rest, 'LUKVPress');
    if (!curves && !this.options.budgets) throw new PressError('LUKVPress needs budget curves: budgets=FILE, written by `kvpress calibrate --lukv-budgets`');
    this.budgets = curves ? checkBudgets(curves, 'the curves') : readLukvBudgets(this.options.budgets);
  }

  override validate(model: ModelParts): void {
    super.validate(model);
    const c = model.config, b = this.budgets;
    if (b.numLayers !== c.numLayers || b.numKvHeads !== c.numKvHeads) {
      throw new PressError(`LUKVPress: the budget curves are for ${b.numLayers} layers × ${b.numKvHeads} KV heads (${b.model}), the model has ${c.numLayers} × ${c.numKvHeads}`);
    }
  }

  protected override select(ctx: LayerContext, scores: Float64Array[], ratio: number): KeepIndices {
    const T = uniformLength(ctx, 'LUKVPress'), o = this.options;
    const row = Math.round(ratio * 100) - 1;
    if (row < 0) return scores.map((s) => topK(s, s.length));
    const top = globalMax(scores) + 1;
    const protectedScores = scores.map((s) => {
      const x = Float64Array.from(s);
      x.fill(top, 0, Math.min(o.sink, T));
      x.fill(top, Math.max(0, T - o.window));
      return x;
    });
    const counts = headCounts(this.budgets.pruneRatios[row][ctx.layer], T);
    return protectedScores.map((s, h) => topK(s, counts[h]));
  }
}

/**
 * Entries per head: T·(1 − p_h) rounded by largest remainder (ties to the lower head) so that the
 * counts add up to the rounded sum, then each clamped to [1, T].
 */
export function headCounts(prune: readonly number[], T: number): number[] {
  const want = prune.map((p) => T * (1 - p));
  const counts = want.map(Math.floor);
  let left = Math.round(want.reduce((a, b) => a + b, 0)) - counts.reduce((a, b) => a + b, 0);
  const order = want.map((w, h) => h).sort((a, b) => (want[b] - counts[b]) - (want[a] - counts[a]) || a - b);
  for (const h of order) if (left-- > 0) counts[h]++;
  return counts.map((n) => Math.min(T, Math.max(1, n)));
}

export function readLukvBudgets(path: string): LukvBudgets {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new PressError(`${path}: cannot read LU-KV budget curves (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return checkBudgets(raw, path);
}

function checkBudgets(raw: unknown, what: string): LukvBudgets {
  const b = raw as Partial<LukvBudgets> & { format?: unknown };
  if (typeof b !== 'object' || b === null || (b.format !== undefined && b.format !== FORMAT)) throw new PressError(`${what}: not a ${FORMAT} file`);
  const L = b.numLayers, H = b.numKvHeads, r = b.pruneRatios;
  const ok = Number.isInteger(L) && L! > 0 && Number.isInteger(H) && H! > 0 && Array.isArray(r) && r.length === 99
    && r.every((row) => Array.isArray(row) && row.length === L && row.every((l) => Array.isArray(l) && l.length === H && l.every((p) => typeof p === 'number' && p >= 0 && p <= 1)));
  if (!ok) throw new PressError(`${what}: pruneRatios must be number[99][numLayers][numKvHeads] with values in [0, 1]`);
  return { model: String(b.model ?? ''), numLayers: L!, numKvHeads: H!, samples: Number(b.samples ?? 0), tokens: Number(b.tokens ?? 0), pruneRatios: r! };
}

export function writeLukvBudgets(path: string, b: LukvBudgets): void {
  writeFileSync(path, JSON.stringify({ format: FORMAT, version: 1, ...b }) + '\n');
}

/**
 * Budget curves from the model's own attention on local text (this port's calibration; the LU-KV
 * authors fit theirs offline and publish only the result). Each sample is prefilled; every cached
 * entry's observed attention — the attention probability it receives, averaged over the sample's
 * query rows and the KV group's query heads — is pooled over all (layer, KV head, entry). At ratio
 * r = i/100 the global top floor((1 − r)·L·H·T) of the pool sets how many entries each head keeps,
 * so heads whose attention is concentrated give up more. Prune ratios are averaged over samples.
 */
export function calibrateLukvBudgets(model: Model, samples: readonly number[][], onSample?: (done: number, total: number) => void): LukvBudgets {
  const c = model.config, L = c.numLayers, H = c.numKvHeads, G = c.numHeads / H;
  const sum = Array.from({ length: 99 }, () => Array.from({ length: L }, () => new Float64Array(H)));
  let tokens = 0;
  samples.forEach((ids, si) => {
    const T = ids.length, mass = new Float64Array(L * H * T);
    model.forward(ids, model.newCache(), {
      logits: 'none',
      press: {
        compress: (ctx) => {
          forEachAttentionRow(ctx, 0, (h, _row, probs) => {
            const o = (ctx.layer * H + Math.floor(h / G)) * T;
            for (let t = 0; t < T; t++) mass[o + t] += probs[t] / (T * G);
          });
          return null;
        },
      },
    });
    const ranked = Int32Array.from({ length: mass.length }, (_, i) => i).sort((a, b) => mass[b] - mass[a] || a - b);
    const counts = new Int32Array(L * H);
    let taken = 0;
    for (let i = 99; i >= 1; i--) {
      const n = Math.floor((1 - i / 100) * L * H * T);
      for (; taken < n; taken++) counts[Math.floor(ranked[taken] / T)]++;
      for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) sum[i - 1][l][h] += 1 - counts[l * H + h] / T;
    }
    tokens += T;
    onSample?.(si + 1, samples.length);
  });
  const n = samples.length;
  return { model: model.source, numLayers: L, numKvHeads: H, samples: n, tokens, pruneRatios: sum.map((row) => row.map((l) => Array.from(l, (x) => x / n))) };
}

export const lukvWrapper: WrapperEntry = {
  prefix: 'lukv',
  description: 'LU-KV: per-layer, per-head budgets from curves computed by `kvpress calibrate --lukv-budgets`, each head keeping its best entries (prefill only)',
  options: lukvOptions,
  wrap: (inner, r, o) => new LUKVPress(inner, r, o as OptionsOf<typeof lukvOptions>),
};
