import type { KVCache } from '../cache/kv-cache.js';
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
  /** The set of caches in use: the generation's cache is in it while it runs. */
  caches?: Set<KVCache>;
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

  constructor(readonly model: Model, readonly prompt: readonly number[], readonly opts: StepOptions = {}) {
    if (prompt.length === 0) throw new Error('the prompt is empty');
    this.steps = this.run();
  }

  /** The next token, or null when the generation has ended. */
  step(): StepToken | null {
    const r = this.steps.next();
    return r.done ? null : r.value;
  }

  /** Ends the generation early (its cache is released with it). */
  stop(): void {
    this.steps.return();
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
    this.finishReason = 'length';
    opts.caches?.add(cache);
    try {
      for (let i = 0; i < steps; i++) {
        // Sampled before yielding: the logits view is reused by other requests' forward passes.
        const next = sampler.sample(logits);
        if (stop.has(next)) {
          this.finishReason = 'stop';
          break;
        }
        this.tokens.push(next);
        yield { id: next, text: stream ? stream.push(next) : '' };
        if (i + 1 < steps) logits = model.forward([next], cache, { logits: 'last', press: timed });
      }
    } finally {
      // Finished or cancelled: the pages go back to the pool at once instead of waiting for the GC.
      cache.dispose();
      opts.caches?.delete(cache);
    }
  }
}
