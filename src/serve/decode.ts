import type { KVCache } from '../cache/kv-cache.js';
import { BatchDecoder } from '../model/batch-decode.js';
import type { Compressor } from '../model/layer-context.js';
import type { Model } from '../model/model.js';
import { Sampler, type SamplingOptions } from '../pipeline/sampler.js';
import type { Press } from '../presses/press.js';
import { TokenStream } from '../tokenizer/stream.js';

/** One sampled token and the text it adds. */
export interface StepToken {
  id: number;
  text: string;
}

/** What a prompt's prefill with a press kept. */
export interface PrefillMeasure {
  promptTokens: number;
  /** Cache entries kept after the prefill, summed over layers and KV heads. */
  keptEntries: number;
  /** Entries the prompt would take without a press: tokens · layers · KV heads. */
  entries: number;
  /** KV bytes the uncompressed prompt would take, and those held after the prefill. */
  bytesBefore: number;
  bytesAfter: number;
  prefillMs: number;
}

export interface StepOptions extends SamplingOptions {
  maxNewTokens?: number;
  press?: Press | null;
  /** The set of caches in use: the generation's cache is in it from the prefill to release(). */
  caches?: Set<KVCache>;
  /**
   * false: step() gives each token with empty text, and takeText() decodes the tokens made since
   * its last call in one go (for a consumer that needs text only when it writes). Default true.
   */
  textPerToken?: boolean;
}

/** The single-row forward an answer's next step will run: `token` appended to `cache`. */
export interface DecodeInput {
  token: number;
  cache: KVCache;
}

/**
 * The decode steps of concurrent answers taken together. Before each scheduler round, prepare()
 * runs one BatchDecoder step over every answer whose next step is a plain single-row decode
 * (DecodeInput); when that answer's own code then calls `model.forward([token], cache)` on
 * `this.model`, it gets the prepared logits instead of a pass of its own. The answers' code
 * (Generation, the pipeline's answer loop) stays as it is, and their numbers too: a batched row
 * equals its single-row pass (BatchDecoder).
 */
export class DecodeBatch {
  /** The model the answers run on: the base model whose forward takes prepared steps. */
  readonly model: Model;
  private readonly decoder: BatchDecoder;
  /** Row of each prepared cache in the current step. */
  private readonly ready = new Map<KVCache, number>();
  private readonly tokens: number[] = [];
  private readonly caches: KVCache[] = [];
  private logits: readonly Float32Array[] = [];
  /** Decode steps run in batches, and the batches. */
  rows = 0;
  batches = 0;
  /** Off: every answer runs its own passes, round-robin (what the benchmark compares against). */
  enabled = true;

  constructor(readonly base: Model) {
    this.decoder = new BatchDecoder(base);
    const m: Model = Object.create(base);
    m.forward = (tokens, cache, opts = {}) => {
      // A lone answer (nothing prepared) goes straight through.
      const row = this.ready.size === 0 ? undefined : this.ready.get(cache);
      if (row === undefined) return base.forward(tokens, cache, opts);
      this.ready.delete(cache);
      // The cache already holds the prepared token: any other pass on it would be wrong.
      if (tokens.length !== 1 || tokens[0] !== this.tokens[row] || opts.press || (opts.logits ?? 'last') !== 'last') {
        throw new Error(`internal error: a batched decode step of token ${this.tokens[row]} was prepared for this cache, but the answer ran a different pass (${tokens.length} tokens, logits ${opts.logits ?? 'last'})`);
      }
      return this.logits[row];
    };
    this.model = m;
  }

  /**
   * Runs the next decode step of every given answer that has one, together (two or more; one
   * goes through its own forward as before). Steps prepared earlier and not taken (their answer
   * was cancelled or stopped) are dropped: their caches are going away.
   */
  prepare(inputs: Iterable<DecodeInput | null>): void {
    this.ready.clear();
    this.tokens.length = 0;
    this.caches.length = 0;
    for (const d of inputs) {
      if (!d) continue;
      this.tokens.push(d.token);
      this.caches.push(d.cache);
    }
    if (this.caches.length < 2 || !this.enabled) return;
    try {
      this.logits = this.decoder.step(this.tokens, this.caches);
    } catch {
      // Every cache was put back: each answer runs its own pass and meets the error there, in its own request.
      return;
    }
    for (let r = 0; r < this.caches.length; r++) this.ready.set(this.caches[r], r);
    this.rows += this.caches.length;
    this.batches++;
  }
}

/**
 * `generate` one token at a time, so that a scheduler can interleave the decode steps of several
 * requests: the first `step()` runs the prefill and samples the first token, every later one a
 * single-row decode step. Same sampler, step count and press use as `generate`, so the tokens
 * are identical for identical options.
 */
export class Generation {
  /** Set by the first step. */
  measure: PrefillMeasure | null = null;
  readonly tokens: number[] = [];
  /** 'length' when max tokens or the model's window ended it, 'stop' on a stop token; null while running. */
  finishReason: 'stop' | 'length' | null = null;
  /** Time inside the press's compress calls (prefill and decode steps). */
  pressMs = 0;
  private readonly steps: Generator<StepToken, void>;
  /** Set while the last token's single-row decode step is next (no press: a pressed step goes alone). */
  private decode: DecodeInput | null = null;
  /** The generation's cache until release(). */
  private cache: KVCache | null = null;
  /** Turns tokens into text (set by the first step when the model has a tokenizer), and the tokens it has had. */
  private stream: TokenStream | null = null;
  private taken = 0;

  constructor(readonly model: Model, readonly prompt: readonly number[], readonly opts: StepOptions = {}) {
    if (prompt.length === 0) throw new Error('the prompt is empty');
    this.steps = this.run();
  }

  /** The next token, or null when the generation has ended. */
  step(): StepToken | null {
    const r = this.steps.next();
    return r.done ? null : r.value;
  }

  /** The single-row forward the next step() starts with, or null (prefill, last token, press). */
  nextDecode(): DecodeInput | null {
    return this.decode;
  }

  /**
   * With textPerToken false: the text of the tokens since the last call (held back while it ends
   * in an incomplete character); the pieces join to what step() would have given one by one.
   */
  takeText(): string {
    if (!this.stream || this.opts.textPerToken !== false || this.taken === this.tokens.length) return '';
    const ids = this.tokens.slice(this.taken);
    this.taken = this.tokens.length;
    return this.stream.pushMany(ids);
  }

  /** Ends the generation early and releases its cache. */
  stop(): void {
    this.steps.return();
    this.release();
  }

  /**
   * Gives the cache's pages back to the pool (at once instead of waiting for the GC); idempotent.
   * A generation that ended (step() gave null) keeps its cache until this is called, so that a
   * server can write the answer's last bytes first: freeing a 341-token stories260K answer's
   * pages takes 0.3–0.4 ms, which the client need not wait for.
   */
  release(): void {
    const cache = this.cache;
    if (!cache) return;
    this.cache = null;
    cache.dispose();
    this.opts.caches?.delete(cache);
  }

  private *run(): Generator<StepToken, void> {
    const { model, prompt, opts } = this;
    const c = model.config;
    const tok = model.tokenizer;
    const stop = new Set(tok?.stopIds ?? []);
    const sampler = new Sampler(c.vocabSize, opts);
    const press = opts.press ?? null;
    const timed: Compressor | null = press && {
      compress: (ctx) => {
        const t = performance.now();
        const keep = press.compress(ctx);
        this.pressMs += performance.now() - t;
        return keep;
      },
      afterPrefill: (done) => {
        const t = performance.now();
        press.afterPrefill?.(done);
        this.pressMs += performance.now() - t;
      },
    };
    press?.validate?.(model);
    press?.reset?.();
    const cache = model.newCache();
    this.cache = cache;
    const steps = Math.min(opts.maxNewTokens ?? 256, Math.max(0, c.maxPositionEmbeddings - prompt.length));

    const t0 = performance.now();
    let logits = model.forward(prompt, cache, { logits: 'last', press: timed });
    const keptEntries = cache.lengths().reduce((s, l) => s + l.reduce((a, n) => a + n, 0), 0);
    const entries = prompt.length * c.numLayers * c.numKvHeads;
    const bytesAfter = cache.bytes();
    this.measure = {
      promptTokens: prompt.length, keptEntries, entries, bytesAfter,
      // Per-entry bytes from the cache itself, whatever its element type.
      bytesBefore: keptEntries > 0 ? Math.round((bytesAfter / keptEntries) * entries) : 0,
      prefillMs: performance.now() - t0,
    };
    model.reserve(1, cache.layers.reduce((m, l) => Math.max(m, ...l.lengths), 0) + steps);

    const stream = tok ? new TokenStream(tok) : null;
    this.stream = stream;
    const perToken = opts.textPerToken ?? true;
    this.finishReason = 'length';
    opts.caches?.add(cache);
    const input: DecodeInput = { token: 0, cache };
    try {
      for (let i = 0; i < steps; i++) {
        // Sampled before yielding: the logits view is reused by other requests' forward passes.
        const next = sampler.sample(logits);
        if (stop.has(next)) {
          this.finishReason = 'stop';
          break;
        }
        this.tokens.push(next);
        input.token = next;
        this.decode = i + 1 < steps && !timed ? input : null;
        yield { id: next, text: stream && perToken ? stream.push(next) : '' };
        this.decode = null;
        if (i + 1 < steps) logits = model.forward([next], cache, { logits: 'last', press: timed });
      }
    } finally {
      this.decode = null;
    }
  }
}
