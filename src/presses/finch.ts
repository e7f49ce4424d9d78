import type { LayerContext } from '../model/layer-context.js';
import { groupMean, keptCount, padProtected } from './common.js';
import { windowMeans } from './snapkv.js';
import { rerotate } from './key-rerotation.js';
import { defineOptions, resolveOptions, type OptionsOf } from './options.js';
import { PressError, type KeepIndices, type PressPhase } from './press.js';
import type { PressEntry } from './registry.js';
import { ScorerPress, topK } from './scorer.js';

export const finchOptions = defineOptions({
  chunkLength: { type: 'integer', default: 0, min: 0, description: 'select per chunk of this many tokens (0: over the whole sequence, the library\'s None)' },
  normalizeScores: { type: 'boolean', default: true, description: 'weigh each question row\'s attention by its position before averaging' },
  rerotateKeys: { type: 'boolean', default: true, description: 're-rotate the kept keys to positions 0 … n_kept − 1' },
  windowSize: { type: 'integer', default: 0, min: 0, description: 'question tokens at the end of the sequence (0: the pipeline sets it from the question)' },
});

/**
 * FINCH (Corallo & Papotti, "FINCH: Prompt-guided Key-Value Cache Compression for Large Language
 * Models", TACL 2024; kvpress `FinchPress`): the sequence is context + question, and the question's
 * queries score the context. A key's score is its attention from the question rows (softmax over
 * every key), each row weighed by its position p (the library's normalisation: p, not p + 1),
 * averaged over the rows and the KV group; the question itself gets max + 1 so it is always kept.
 * floor(n·(1 − ratio)) entries survive per head, n counting the question (or per chunk, at least
 * one each, when chunkLength is set), and with rerotateKeys they are re-rotated to positions
 * 0 … n_kept − 1, so the answer continues right after them.
 * kvpress finds the question behind a delimiter token it adds to the tokenizer and drops from the
 * embeddings; here the pipeline tokenizes context and question apart and calls setQuestionLength,
 * which gives the same token sequence without touching the vocabulary. The question's queries are
 * the pass's own (float32); the keys they attend to are the cached entries as stored, one KV head
 * at a time, and re-rotated keys are encoded in the cache's element type again. Prefill only.
 */
export class FinchPress extends ScorerPress {
  readonly name: string = 'finch';
  readonly phase: PressPhase = 'prefill';
  readonly options: OptionsOf<typeof finchOptions>;
  private questionTokens: number;

  constructor(compressionRatio = 0, options: Partial<OptionsOf<typeof finchOptions>> = {}) {
    super(compressionRatio);
    this.options = resolveOptions(finchOptions, options, 'FinchPress');
    this.questionTokens = this.options.windowSize;
  }

  /** The question's token count: the last n tokens of the next prefill are the question. */
  setQuestionLength(n: number): void {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`${this.name} reads the question, so it needs one (got ${n} question tokens)`);
    this.questionTokens = n;
  }

  score(ctx: LayerContext): Float64Array[] {
    const w = this.questionTokens, T = ctx.rows;
    // Not in validate(): the pipeline sets the question's length after the press is checked.
    if (w < 1) throw new PressError(`${this.name} needs the question's length: ask a question through the pipeline, or set windowSize to the number of question tokens at the end of the sequence`);
    if (T <= w) throw new RangeError(`${this.name}: the sequence (${T} tokens) must be longer than the question (${w})`);
    const perHead = windowMeans(ctx, w, this.options.normalizeScores ? Float64Array.from({ length: w }, (_, r) => T - w + r) : null);
    return padProtected(groupMean(perHead, ctx.config.numKvHeads), w);
  }

  override compress(ctx: LayerContext): KeepIndices | null {
    if (!ctx.isPrefill || (this.compressionRatio === 0 && !this.observer)) return null;
    const scores = this.score(ctx);
    this.observer?.onScores(ctx.layer, scores, false);
    if (this.compressionRatio === 0) return null;
    const keep = scores.map((s) => this.select(s));
    if (this.options.rerotateKeys) {
      keep.forEach((idx, g) => rerotate(ctx, g, idx));
      if (ctx.layer === ctx.config.numLayers - 1) ctx.kvCache.nextPosition = Math.max(...keep.map((k) => k.length));
    }
    return keep;
  }

  /** Top entries of one head: over the whole sequence, or chunk by chunk (at least one per chunk). */
  private select(s: Float64Array): Int32Array {
    const r = this.compressionRatio, C = this.options.chunkLength;
    if (C === 0) return topK(s, keptCount(s.length, r));
    if (!(C > this.questionTokens / (1 - r))) throw new RangeError(`${this.name}: chunkLength ${C} must exceed questionTokens/(1 − ratio) = ${(this.questionTokens / (1 - r)).toFixed(1)}, as the library asserts`);
    const parts: number[] = [];
    for (let a = 0; a < s.length; a += C) {
      const chunk = s.subarray(a, Math.min(a + C, s.length));
      for (const i of topK(chunk, Math.max(1, keptCount(chunk.length, r)))) parts.push(a + i);
    }
    return Int32Array.from(parts);
  }
}

export const finchEntry: PressEntry = {
  name: 'finch',
  description: 'FINCH: the question\'s attention on the context, position-weighted; keys re-rotated (TACL 2024; needs a question, prefill only)',
  options: finchOptions,
  phase: 'prefill',
  create: (r, o) => new FinchPress(r, o as OptionsOf<typeof finchOptions>),
};
