import type { LayerContext } from '../model/layer-context.js';
import { checkInt, keptCount } from './common.js';
import { ScorerPress } from './scorer.js';

export interface StreamingLLMOptions {
  /** Attention-sink tokens kept at the start. */
  nSink?: number;
}

/**
 * StreamingLLM (Xiao et al., "Efficient Streaming Language Models with Attention Sinks",
 * arXiv 2309.17453): keep the first nSink tokens and the most recent ones. Score 1 everywhere but
 * 0 on [nSink, nSink + nPruned), nPruned = T − floor(T(1 − ratio)), so exactly the sinks and the
 * last n_kept − nSink tokens survive. Positions are not renumbered (the paper's cache-relative
 * positions need KeyRerotationPress around it).
 * It reads only how many entries each head holds, no key or value, so its kept set is the same
 * for every cache element type.
 */
export class StreamingLLMPress extends ScorerPress {
  readonly name = 'streaming_llm';
  readonly nSink: number;

  constructor(compressionRatio = 0, opts: StreamingLLMOptions = {}) {
    super(compressionRatio);
    this.nSink = checkInt(opts.nSink ?? 4, 'nSink', 0);
  }

  score(ctx: LayerContext): Float64Array[] {
    return Array.from(ctx.cache.lengths, (T) => {
      if (T <= this.nSink) throw new RangeError(`streaming_llm: the prompt must be longer than nSink ${this.nSink} tokens, got ${T}`);
      const s = new Float64Array(T).fill(1);
      s.fill(0, this.nSink, Math.min(T, this.nSink + T - keptCount(T, this.compressionRatio)));
      return s;
    });
  }
}
