import { basename } from 'node:path';
import { loadModel } from '../../model/load.js';
import { createServer, MAX_STREAM_INTERVAL_MS, STREAM_INTERVAL_MS } from '../../serve/server.js';
import { num, parse, str, UsageError, weightsFlag, noTokenizer } from '../args.js';
import { kvDtypeFlag, kvDtypeOption } from './kv-dtype.js';
import type { Command } from '../command.js';

/** In-flight requests get this long to finish after SIGTERM before they are cancelled. */
const GRACE_MS = 30_000;

export const serveCommand: Command = {
  name: 'serve',
  summary: 'an OpenAI-compatible HTTP server with a press per request and compressed contexts',
  usage: `kvpress serve [--model PATH] [--host 127.0.0.1] [--port 8080] [options]

Serves one model over HTTP: POST /v1/chat/completions and /v1/completions (OpenAI shape, streamed
as server-sent events with "stream": true; "kvpress": {"press", "compression_ratio", "options"}
compresses a request's prompt), compressed contexts as resources (POST /v1/contexts, then chat
with "kvpress": {"context_id"}; GET and DELETE /v1/contexts/:id), GET /v1/models, GET /health,
GET /metrics (Prometheus), and at / a page that shows what each press keeps. SIGTERM lets the
requests in flight finish (30 s at most), then exits 0.

Options:
  --model PATH               llama2.c .bin, .gguf file or Hugging Face directory (default: embedded stories260K)
  --tokenizer PATH           tokenizer .bin for a llama2.c checkpoint (default: found beside it)
  --host H                   address to bind (default 127.0.0.1; anything else exposes the server: use --api-key)
  --port N                   port to listen on, 0 for any free one (default 8080)
  --max-context-memory MiB   KV memory the compressed contexts may hold; least recently used ones are
                             evicted beyond it (default 256)
  --max-queue N              requests in progress at once; more get 429 (default 64)
  --api-key K                require "Authorization: Bearer K" on /v1 routes and /metrics
  --stream-interval-ms MS    a streamed answer sends the text of the tokens made within MS milliseconds
                             as one chunk (the first token, and any token whose step took longer, at
                             once); 0 sends one chunk per token (default 50)
  --weights W                f32, bf16, q8_0 or q4_k: hold every matrix in this format (default: as the checkpoint stores it)
  --decode-weights W         former name of --weights (still accepted)
  --kv-dtype T               KV cache element type of every request and context: f32, f16, bf16, q8_0,
                             q4_0 or auto (default auto: the checkpoint's precision for 16-bit
                             checkpoints, f16 for quantized, f32 for f32)

Examples:
  kvpress serve
  kvpress serve --model ./Qwen3-0.6B --port 8000 --max-context-memory 1024
  kvpress serve --host 0.0.0.0 --api-key "$KVPRESS_API_KEY"`,
  options: {
    model: { type: 'string' },
    tokenizer: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    'max-context-memory': { type: 'string' },
    'max-queue': { type: 'string' },
    'api-key': { type: 'string' },
    'stream-interval-ms': { type: 'string' },
    weights: { type: 'string' },
    'decode-weights': { type: 'string' },
    ...kvDtypeOption,
  },
  async run(argv, io) {
    const { values, positionals } = parse(argv, this.options);
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    const host = str(values.host) ?? '127.0.0.1';
    const port = num(values.port, 'port', { min: 0, max: 65535, integer: true }) ?? 8080;
    const maxContextMiB = num(values['max-context-memory'], 'max-context-memory', { min: 0 }) ?? 256;
    const maxQueue = num(values['max-queue'], 'max-queue', { min: 1, integer: true }) ?? 64;
    const streamIntervalMs = num(values['stream-interval-ms'], 'stream-interval-ms', { min: 0, max: MAX_STREAM_INTERVAL_MS }) ?? STREAM_INTERVAL_MS;
    const apiKey = str(values['api-key']);
    if (apiKey === '') throw new UsageError('--api-key must not be empty');
    const weights = weightsFlag(values, io.err);
    const modelPath = str(values.model);
    const model = await loadModel(modelPath, { tokenizer: str(values.tokenizer), backend: io.backend(), weights, kvDtype: kvDtypeFlag(values['kv-dtype']) });
    if (!model.tokenizer) throw noTokenizer(modelPath);
    const modelId = modelPath === undefined ? 'stories260K' : basename(modelPath).replace(/\.bin$/, '');
    const server = createServer({ model, modelId, maxContextMemory: Math.round(maxContextMiB * 2 ** 20), maxQueue, apiKey, streamIntervalMs });
    let address: string;
    try {
      address = await server.app.listen({ host, port });
    } catch (e) {
      throw new UsageError(`cannot listen on ${host}:${port} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    io.out(`kvpress serve: ${modelId} on ${address} (page at ${address}/, API at ${address}/v1)\n`);
    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        io.err(`kvpress serve: ${signal}: finishing ${server.scheduler.depth} request(s) in progress, then exiting\n`);
        void server.shutdown(GRACE_MS).then(resolve, resolve);
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
    return 0;
  },
};
