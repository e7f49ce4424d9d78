import type { KVCache } from '../cache/kv-cache.js';
import type { Compressor } from '../model/layer-context.js';
import type { Model } from '../model/model.js';
import { phaseOf, type Press } from '../presses/press.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { promptParts } from './chat-template.js';
import { Sampler, type SamplingOptions } from './sampler.js';
import { compressionStats, type AnswerStats, type CompressionMeasure, type PipelineStats } from './stats.js';

/** One streamed answer token. */
export interface TokenEvent {
  /** Index of the question being answered. */
  question: number;
  id: number;
  /** The token's text (streamed pieces concatenate to the answer). */
  text: string;
}

/** How a context is turned into a compressed cache. */
export interface ContextOptions {
  /** The press applied while the context is prefilled (and while answering, for decoding presses). */
  press?: Press | null;
  /**
   * Context tokens kept at most (the start is kept; a longer context is truncated). Default:
   * the model's window minus the room the questions and answers need.
   */
  maxContextLength?: number;
  /** Forwarded to chat templates that understand it (Qwen3). Default false, as kvpress. */
  enableThinking?: boolean;
  /** Progress of the prefill: called with (0, layers) before it and after each layer. */
  onLayer?: (done: number, total: number) => void;
}

/** How each question is answered. */
export interface AnswerOptions {
  /** Text placed after each question (and the template's assistant header); the answer continues it. */
  answerPrefix?: string;
  /** Tokens per answer at most (the model's window may cut it shorter). Default 50. */
  maxNewTokens?: number;
  /** Greedy by default, as kvpress's pipeline. */
  sampling?: SamplingOptions;
  onToken?: (e: TokenEvent) => void;
}

export interface RunOptions extends ContextOptions, AnswerOptions {
  context: string;
  /** One question; exclusive with `questions`. Neither means one empty question (a continuation). */
  question?: string;
  questions?: readonly string[];
  /** Append each question to the context before compression (kvpress's evaluation `query_aware`). */
  queryAware?: boolean;
}

export interface PipelineResult {
  answers: string[];
  /** The generated token ids of each answer (stop token excluded). */
  answerIds: number[][];
  stats: PipelineStats;
}

/** A bad request to the pipeline (empty context, a question that does not fit…): one line, exit code 2. */
export class PipelineError extends Error {}

export interface AnswerRecord {
  text: string;
  ids: number[];
  stats: AnswerStats;
}

const now = () => performance.now();

/**
 * kvpress's KVPressTextGenerationPipeline: a context is prefilled once with the press active
 * (backbone only, no logits), and each question is answered greedily from the compressed cache,
 * which is truncated back to the compressed context after every answer. The press never sees a
 * question; question tokens continue at the positions after the uncompressed context.
 */
export class Pipeline {
  constructor(readonly model: Model) {}

  get tokenizer(): Tokenizer {
    const tok = this.model.tokenizer;
    if (!tok) throw new PipelineError(`${this.model.source}: the model has no tokenizer`);
    return tok;
  }

  /**
   * Compresses `context` once and returns it ready for questions (the `kvpress chat` flow).
   * `reserve` positions are left free for questions and answers when the context is truncated.
   */
  compress(context: string, opts: ContextOptions & { reserve?: number } = {}): CompressedContext {
    checkContext(context);
    if (opts.press?.setQuestionLength) throw new PipelineError(`${opts.press.name} compresses the context with its question: pass the question with the context (run), not afterwards`);
    const parts = promptParts(this.tokenizer, context, { enableThinking: opts.enableThinking });
    const { ids, truncatedFrom } = this.contextIds(parts.context, parts.bos, opts.maxContextLength, opts.reserve ?? 0);
    return this.prefill(ids, truncatedFrom, parts.questionSuffix, opts);
  }

  /** Answers every question; `onToken` streams the tokens. */
  run(opts: RunOptions): PipelineResult {
    const steps = this.steps(opts);
    for (let r = steps.next(); ; r = steps.next()) {
      if (r.done) return r.value;
      opts.onToken?.(r.value);
    }
  }

  /**
   * The same as run, as an async iterator of tokens; its return value is the result. The event
   * loop gets a turn between tokens (the prefill itself is one synchronous pass).
   */
  async *stream(opts: RunOptions): AsyncGenerator<TokenEvent, PipelineResult> {
    const steps = this.steps(opts);
    for (let r = steps.next(); ; r = steps.next()) {
      if (r.done) return r.value;
      opts.onToken?.(r.value);
      yield r.value;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  private *steps(opts: RunOptions): Generator<TokenEvent, PipelineResult> {
    if (opts.question !== undefined && opts.questions !== undefined) throw new PipelineError('pass either question or questions, not both');
    if (opts.questions !== undefined && (!Array.isArray(opts.questions) || opts.questions.some((q) => typeof q !== 'string'))) {
      throw new PipelineError(`questions must be an array of strings (one question: question: '...'), got ${JSON.stringify(opts.questions)?.slice(0, 60)}`);
    }
    if (opts.question !== undefined && typeof opts.question !== 'string') throw new PipelineError(`question must be a string, got ${typeof opts.question}`);
    const questions = opts.questions ?? [opts.question ?? ''];
    if (questions.length === 0) throw new PipelineError('questions is empty');
    const press = opts.press ?? null;
    if (isDecodingPress(press) && questions.length > 1) {
      throw new PipelineError(`a decoding press (${press?.name}) compresses while it answers, so it cannot answer several questions from one context (got ${questions.length}); ask one question per run`);
    }
    checkContext(opts.context);
    const maxNew = opts.maxNewTokens ?? 50;
    if (!Number.isInteger(maxNew) || maxNew < 0) throw new PipelineError(`maxNewTokens must be an integer ≥ 0, got ${opts.maxNewTokens}`);

    // A press that reads the question (Finch) gets each question's tokens after the context, tokenized
    // apart (as kvpress's delimiter token splits them), and is told how many there are.
    const reader = press?.setQuestionLength ? press : null;
    if (reader && questions.some((q) => q.trim() === '')) throw new PipelineError(`${press!.name} compresses the context with its question: give a non-empty question`);
    const queryAware = opts.queryAware || reader !== null;
    // Each query-aware question is compressed with its own context; otherwise one compression.
    const contexts = queryAware ? questions.map((q) => (reader ? opts.context : opts.context + q)) : [opts.context];
    const asked = queryAware ? questions.map(() => '') : questions;
    const measures: CompressionMeasure[] = [];
    const records: AnswerRecord[] = [];
    let compressed: CompressedContext | null = null;
    let qIds: number[][] = [];
    for (let i = 0; i < questions.length; i++) {
      if (i === 0 || queryAware) {
        const parts = promptParts(this.tokenizer, contexts[i], { enableThinking: opts.enableThinking });
        qIds = (queryAware ? [asked[i]] : asked).map((q) => questionIds(this.tokenizer, q, parts.questionSuffix, opts.answerPrefix));
        const read = reader ? this.tokenizer.encode(questions[i], { bos: false }) : [];
        const longest = Math.max(...qIds.map((q) => q.length));
        // A context too long for the window is truncated so that the question fits, and the
        // answer gets its tokens up to a quarter of the window.
        const reserve = longest + read.length + Math.min(maxNew, Math.floor(this.model.config.maxPositionEmbeddings / 4));
        const { ids, truncatedFrom } = this.contextIds(parts.context, parts.bos, opts.maxContextLength, reserve);
        if (reader) {
          reader.setQuestionLength!(read.length);
          ids.push(...read);
        }
        // Fail before the prefill: the questions continue at the uncompressed context length.
        qIds.forEach((q) => checkQuestionFits(q.length, ids.length, this.model.config.maxPositionEmbeddings));
        compressed = this.prefill(ids, truncatedFrom, parts.questionSuffix, opts);
        measures.push(compressed.measure);
      }
      records.push(yield* compressed!.answerIdsSteps(i, qIds[queryAware ? 0 : i], opts));
    }
    const stats = pipelineStats(press, measures, records.map((r) => r.stats));
    press?.reset?.();
    return { answers: records.map((r) => r.text), answerIds: records.map((r) => r.ids), stats };
  }

  /**
   * Context ids, truncated to maxContextLength (kvpress keeps the start). The default leaves
   * `reserve` positions of the model's window free.
   */
  private contextIds(text: string, bos: boolean, maxContextLength: number | undefined, reserve: number): { ids: number[]; truncatedFrom: number | null } {
    const window = this.model.config.maxPositionEmbeddings;
    if (maxContextLength !== undefined && !(Number.isInteger(maxContextLength) && maxContextLength >= 1)) {
      throw new PipelineError(`maxContextLength must be an integer ≥ 1, got ${maxContextLength}`);
    }
    const limit = maxContextLength ?? Math.max(1, window - reserve);
    const all = this.tokenizer.encode(text, { bos });
    const ids = all.length > limit ? all.slice(0, limit) : all;
    if (ids.length > window) throw new PipelineError(`the context has ${ids.length} tokens, more than the model's window of ${window}`);
    return { ids, truncatedFrom: ids.length < all.length ? all.length : null };
  }

  private prefill(ids: number[], truncatedFrom: number | null, questionSuffix: string, opts: ContextOptions): CompressedContext {
    const model = this.model, press = opts.press ?? null;
    press?.validate?.(model);
    press?.reset?.();
    // A pure decoding press acts only on the question and the answer (kvpress does not attach it
    // to the context prefill); PrefillDecodingPress acts on both.
    const prefillPress = press && phaseOf(press) !== 'decoding' ? press : null;
    const layers = model.config.numLayers;
    let pressMs = 0;
    const hook: Compressor = {
      compress(ctx) {
        let keep: ReturnType<Press['compress']> = null;
        if (prefillPress) {
          const t = now();
          keep = prefillPress.compress(ctx);
          pressMs += now() - t;
        }
        opts.onLayer?.(ctx.layer + 1, layers);
        return keep;
      },
      afterPrefill(done) {
        if (!prefillPress?.afterPrefill) return;
        const t = now();
        prefillPress.afterPrefill(done);
        pressMs += now() - t;
      },
    };
    const cache = model.newCache();
    opts.onLayer?.(0, layers);
    const t0 = now();
    model.forward(ids, cache, { logits: 'none', press: prefillPress || opts.onLayer ? hook : null });
    const prefillMs = now() - t0;
    const measure: CompressionMeasure = {
      contextTokens: ids.length, truncatedFrom, lengths: cache.lengths(), prefillMs, pressMs,
      kvDtype: cache.dtype, entryBytes: 2 * cache.pool.fmt.rowBytes, allocatedBytes: cache.allocatedBytes(), pageEntries: cache.pageEntries,
      bytes: cache.bytes(),
    };
    return new CompressedContext(model, this.tokenizer, cache, questionSuffix, isDecodingPress(press) ? press : null, measure);
  }
}

/**
 * A context prefilled with a press, ready for questions. Every answer starts from exactly the
 * compressed cache: it runs on a copy-on-write clone (sharing the context's pages), which is let
 * go afterwards, and a decoding press starts each answer from its post-prefill state — so
 * neither a decoding press's evictions nor its buffers carry over to the next answer.
 */
export class CompressedContext {
  /** Where questions start: the uncompressed context length (or what a rerotating press set). */
  readonly contextEnd: number;

  constructor(
    readonly model: Model,
    readonly tokenizer: Tokenizer,
    readonly cache: KVCache,
    /** Appended to every question (closes the chat template's user turn). */
    readonly questionSuffix: string,
    /** The press that keeps acting while answering (decoding presses), else null. */
    readonly decodingPress: Press | null,
    readonly measure: CompressionMeasure,
  ) {
    this.contextEnd = cache.nextPosition;
  }

  /** Answers one question (index `index` in streamed events) and restores the cache. */
  answer(question: string, opts: AnswerOptions = {}, index = 0): AnswerRecord {
    const steps = this.answerSteps(index, question, opts);
    for (let r = steps.next(); ; r = steps.next()) {
      if (r.done) return r.value;
      opts.onToken?.(r.value);
    }
  }

  /** Token by token: yields each answer token, returns the whole answer. */
  answerSteps(index: number, question: string, opts: AnswerOptions): Generator<TokenEvent, AnswerRecord> {
    return this.answerIdsSteps(index, questionIds(this.tokenizer, question, this.questionSuffix, opts.answerPrefix), opts);
  }

  /** answerSteps on the question's token ids (question + suffix + answer prefix). */
  *answerIdsSteps(index: number, ids: readonly number[], opts: AnswerOptions): Generator<TokenEvent, AnswerRecord> {
    const model = this.model, tok = this.tokenizer;
    if (ids.length === 0) throw new PipelineError('the question, the template suffix and the answer prefix are all empty: nothing to answer from');
    const window = model.config.maxPositionEmbeddings;
    checkQuestionFits(ids.length, this.contextEnd, window);
    const maxNew = opts.maxNewTokens ?? 50;
    // The last answer token is never fed back, so the window allows one more than it holds.
    const steps = Math.min(maxNew, window - this.contextEnd - ids.length + 1);
    const sampler = new Sampler(model.config.vocabSize, opts.sampling);
    const stop = new Set(tok.stopIds);
    const press = this.decodingPress;
    // Resetting the decoding state (a prefill-and-decoding press's prefill part acts on no answer)
    // gives every answer the same starting state.
    press?.reset?.();
    const cache = this.cache.clone();
    const out: number[] = [];
    let questionMs = 0, decodeMs = 0, bytesEnd = 0, allocatedEnd = 0, fed = 0;
    try {
      if (steps > 0) {
        const t0 = now();
        let logits = model.forward(ids, cache, { logits: 'last', press });
        fed = ids.length;
        const t1 = now();
        questionMs = t1 - t0;
        model.reserve(1, cache.layers.reduce((m, l) => Math.max(m, ...l.lengths), 0) + steps);
        let prev = ids[ids.length - 1];
        for (let i = 0; i < steps; i++) {
          const next = sampler.sample(logits);
          if (stop.has(next)) break;
          out.push(next);
          yield { question: index, id: next, text: tok.decodePiece(prev, next) };
          prev = next;
          if (i + 1 < steps) {
            logits = model.forward([next], cache, { logits: 'last', press });
            fed++;
          }
        }
        decodeMs = now() - t1;
      }
      bytesEnd = cache.bytes();
      allocatedEnd = cache.allocatedBytes();
    } finally {
      cache.dispose();
    }
    return {
      text: tok.decode(out),
      ids: out,
      stats: { questionTokens: ids.length, answerTokens: out.length, tokensFed: fed, questionMs, decodeMs, cacheBytesEnd: bytesEnd, cacheAllocatedBytesEnd: allocatedEnd },
    };
  }
}

/** The statistics of a run: its compressions and its answers. */
export function pipelineStats(press: Press | null, measures: readonly CompressionMeasure[], answers: readonly AnswerStats[]): PipelineStats {
  const decodeMs = answers.reduce((s, a) => s + a.decodeMs, 0);
  const decoded = answers.reduce((s, a) => s + a.answerTokens, 0);
  return {
    press: press?.name ?? null,
    compressionRatio: press ? press.compressionRatio : null,
    compressions: measures.length,
    ...compressionStats(measures),
    questions: [...answers],
    decodeTokensPerSecond: decodeMs > 0 ? decoded / (decodeMs / 1000) : 0,
  };
}

/** A question's ids: question + template suffix + answer prefix, tokenized without BOS (kvpress). */
function questionIds(tok: Tokenizer, question: string, suffix: string, answerPrefix = ''): number[] {
  return tok.encode(question + suffix + answerPrefix, { bos: false });
}

function checkContext(context: string): void {
  if (typeof context !== 'string' || context.trim() === '') throw new PipelineError('the context is empty');
}

function checkQuestionFits(questionTokens: number, contextEnd: number, window: number): void {
  if (contextEnd + questionTokens > window) {
    throw new PipelineError(`the question takes ${questionTokens} tokens but only ${Math.max(0, window - contextEnd)} positions remain after the ${contextEnd}-position context (model window ${window}); shorten the question or the context (max context length)`);
  }
}

/** Decoding presses compress while answering, so one context cannot serve several questions. */
export function isDecodingPress(press: Press | null): boolean {
  const phase = phaseOf(press);
  return phase === 'decoding' || phase === 'both';
}
