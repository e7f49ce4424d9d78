import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The server's Prometheus metrics, in a registry of its own (several servers may share a process). */
export class Metrics {
  readonly registry = new Registry();
  readonly requests: Counter<'route' | 'status'>;
  readonly promptTokens: Counter;
  readonly completionTokens: Counter;
  readonly bytesSaved: Counter;
  readonly ttft: Histogram;
  readonly tokensPerSecond: Histogram;
  readonly batchedSteps: Counter;

  constructor(gauges: { kvAllocatedBytes(): number; queueDepth(): number; contexts(): number; contextBytes(): number; contextBytesSaved(): number }) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'kvpress_' });
    this.requests = new Counter({ name: 'kvpress_requests_total', help: 'HTTP requests answered, by route and status', labelNames: ['route', 'status'], registers });
    this.promptTokens = new Counter({ name: 'kvpress_prompt_tokens_total', help: 'Prompt and question tokens prefilled', registers });
    this.completionTokens = new Counter({ name: 'kvpress_completion_tokens_total', help: 'Tokens generated (rate() of it is tokens/s)', registers });
    this.bytesSaved = new Counter({ name: 'kvpress_kv_bytes_saved_total', help: 'KV bytes presses removed, over every compression', registers });
    this.ttft = new Histogram({ name: 'kvpress_time_to_first_token_seconds', help: 'Time from admission to the first token', buckets: [0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers });
    this.tokensPerSecond = new Histogram({ name: 'kvpress_request_tokens_per_second', help: 'Decode tokens/s of each finished request', buckets: [1, 10, 50, 100, 250, 500, 1000, 2500, 5000], registers });
    this.batchedSteps = new Counter({ name: 'kvpress_batched_decode_steps_total', help: 'Decode steps run together with other answers\' (one pass over the weights for all of them)', registers });
    new Gauge({ name: 'kvpress_queue_depth', help: 'Requests admitted and not finished', registers, collect() { this.set(gauges.queueDepth()); } });
    new Gauge({ name: 'kvpress_contexts', help: 'Compressed contexts held', registers, collect() { this.set(gauges.contexts()); } });
    new Gauge({ name: 'kvpress_kv_bytes_held', help: 'KV bytes allocated by the compressed contexts held', registers, collect() { this.set(gauges.contextBytes()); } });
    new Gauge({ name: 'kvpress_kv_allocated_bytes', help: 'KV bytes allocated by the contexts and the answers in flight, a page shared by a context and its answers counted once', registers, collect() { this.set(gauges.kvAllocatedBytes()); } });
    new Gauge({ name: 'kvpress_kv_bytes_saved', help: 'KV bytes the presses removed from the contexts held', registers, collect() { this.set(gauges.contextBytesSaved()); } });
  }
}
