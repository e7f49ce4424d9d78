import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { KVCache } from '../cache/kv-cache.js';
import { pressScores } from '../cli/commands/scores.js';
import { packageRoot } from '../model/load.js';
import type { Model } from '../model/model.js';
import { CompressedContext, isDecodingPress, Pipeline, PipelineError, type AnswerRecord, type TokenEvent } from '../pipeline/pipeline.js';
import { presses, PressError, type Press } from '../presses/index.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { ContextStore, type StoredContext } from './contexts.js';
import { DecodeBatch, Generation, type DecodeInput, type StepToken } from './decode.js';
import { ApiError } from './errors.js';
import { heldBytes, WatchedCache } from './kv-held.js';
import { Metrics } from './metrics.js';
import { chatPromptIds, messageText, type ChatMessage } from './prompt.js';
import { Scheduler, type Task } from './scheduler.js';
import { chatSchema, completionSchema, contextSchema, idParams, scoresSchema } from './schemas.js';
import { StopMatcher } from './stop.js';

export interface ServerOptions {
  model: Model;
  /** The name clients pass as `model` (GET /v1/models lists it). */
  modelId: string;
  /** Allocated KV bytes the compressed contexts may hold before the least recently used go. Default 256 MiB. */
  maxContextMemory?: number;
  /** Requests admitted at once (running or waiting); 429 beyond. Default 64. */
  maxQueue?: number;
  /** When set, every /v1 route and /metrics need `Authorization: Bearer <apiKey>`. */
  apiKey?: string | null;
  /** Largest request body in bytes; 413 beyond. Default 8 MiB. */
  bodyLimit?: number;
  /**
   * A stream sends the text of the tokens made within this many milliseconds as one event (the
   * first token at once; a token whose step took longer goes at once too); 0: one event per
   * token. Default STREAM_INTERVAL_MS.
   */
  streamIntervalMs?: number;
}

export interface KvpressServer {
  app: FastifyInstance;
  scheduler: Scheduler;
  /** Where concurrent answers' decode steps run together (counts of what it batched). */
  batch: DecodeBatch;
  contexts: ContextStore;
  metrics: Metrics;
  /** KV bytes allocated by the contexts and the answers in flight, each shared page once (see heldBytes). */
  kvAllocatedBytes(): number;
  /** Stops admitting requests, lets those in flight finish (cancelled after `graceMs`), closes the server. */
  shutdown(graceMs?: number): Promise<void>;
}

interface KvpressBody {
  press?: string;
  compression_ratio?: number;
  options?: Record<string, unknown>;
  context_id?: string;
}

interface CompletionBody {
  model: string;
  messages?: ChatMessage[];
  prompt?: string | string[];
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
  kvpress?: KvpressBody;
}

/** The `kvpress` block of a response's usage: what compression did to the KV cache. */
interface KvUsage {
  press: string | null;
  compression_ratio: number | null;
  context_id?: string;
  entries_kept: number;
  entries: number;
  kv_bytes_before: number;
  kv_bytes_after: number;
  prefill_ms: number;
  press_ms: number;
  /** A context answer's question prefill: its forward pass over the compressed context, in this request. */
  question_ms?: number;
}

/** One request's answer, one step at a time. */
interface Answer {
  step(): StepToken | null;
  /** The single-row decode step the next step() starts with, or null. */
  nextDecode(): DecodeInput | null;
  /** Ends the answer (if it runs) and releases what it holds; called once its response is written. */
  stop(): void;
  promptTokens: number;
  completionTokens(): number;
  finishReason(): 'stop' | 'length';
  /** The whole answer decoded at once, once finished (streamed pieces hold back an incomplete character). */
  fullText(): string;
  /** Whether step() gives each token's text; if not, takeText() gives the text of the tokens since its last call. */
  textPerToken: boolean;
  takeText(): string;
  usage(): KvUsage;
}

const MiB = 2 ** 20;
/** Default of ServerOptions.streamIntervalMs (see the README's Serve section for the measurement). */
export const STREAM_INTERVAL_MS = 50;
/** A minute: longer is no stream, and a timer past 2^31 − 1 ms fires at once. */
export const MAX_STREAM_INTERVAL_MS = 60_000;
/** Where the page's static files live in the package (shipped as they are, no build step). */
export const PUBLIC_DIR = join(packageRoot(), 'src', 'serve', 'public');
const STATIC: Record<string, string> = { '/': 'index.html', '/app.js': 'app.js', '/style.css': 'style.css' };
const TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };

/** Builds the server (not yet listening): routes, validation, scheduler, contexts and metrics. */
export function createServer(opts: ServerOptions): KvpressServer {
  const { model, modelId } = opts;
  const tok = model.tokenizer;
  if (!tok) throw new Error(`${model.source}: the model has no tokenizer, so it cannot serve text`);
  const window = model.config.maxPositionEmbeddings;
  const streamIntervalMs = opts.streamIntervalMs ?? STREAM_INTERVAL_MS;
  if (!(streamIntervalMs >= 0 && streamIntervalMs <= MAX_STREAM_INTERVAL_MS)) throw new Error(`streamIntervalMs must be a number of milliseconds from 0 to ${MAX_STREAM_INTERVAL_MS}, got ${opts.streamIntervalMs}`);
  // Concurrent answers decode together (one BatchDecoder step per round); each runs its own code on batch.model.
  const batch = new DecodeBatch(model);
  const scheduler = new Scheduler(opts.maxQueue ?? 64, (tasks) => {
    const before = batch.rows;
    batch.prepare(decodeInputs(tasks));
    if (batch.rows > before) metrics.batchedSteps.inc(batch.rows - before);
  });
  const contexts = new ContextStore(opts.maxContextMemory ?? 256 * MiB);
  /** The caches the answers in flight write to (context answers' clones, plain requests' own). */
  const answerCaches = new Set<KVCache>();
  const kvAllocatedBytes = () => heldBytes([...contexts.list().map((c) => c.context.cache), ...answerCaches]);
  const metrics = new Metrics({
    kvAllocatedBytes,
    queueDepth: () => scheduler.depth,
    contexts: () => contexts.size,
    contextBytes: () => contexts.allocatedBytes,
    contextBytesSaved: () => contexts.bytesSaved,
  });
  const pipeline = new Pipeline(model);
  const created = Math.floor(Date.now() / 1000);

  const app = Fastify({
    logger: false,
    bodyLimit: opts.bodyLimit ?? 8 * MiB,
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false } },
  });

  app.setErrorHandler((err: Error & { validation?: unknown; statusCode?: number; code?: string }, _req, reply) => {
    const e = toApiError(err);
    void reply.code(e.status).send(e.body());
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send(new ApiError(404, `no route ${req.method} ${req.url.split('?')[0]}`, null, 'unknown_url').body());
  });
  // Hooks take callbacks, not promises, and the key check exists only with a key: every request
  // runs them, and each promise is a microtask turn more before the body is read.
  const apiKey = opts.apiKey;
  if (apiKey) {
    app.addHook('onRequest', (req, _reply, done) => {
      if (!(req.url.startsWith('/v1/') || req.url === '/metrics') || req.headers.authorization === `Bearer ${apiKey}`) return done();
      done(new ApiError(401, 'a valid API key is required: send "Authorization: Bearer <key>" (the key given to kvpress serve --api-key)', null, 'invalid_api_key'));
    });
  }
  app.addHook('onResponse', (req, reply, done) => {
    metrics.requests.inc({ route: req.routeOptions.url ?? 'unknown', status: String(reply.statusCode) });
    done();
  });

  const files = new Map(Object.entries(STATIC).map(([url, file]) => [url, readFileSync(join(PUBLIC_DIR, file), 'utf8')]));
  for (const [url, file] of Object.entries(STATIC)) {
    app.get(url, async (_req, reply) => reply.type(TYPES[file.split('.').pop()!]).send(files.get(url)));
  }

  app.get('/health', async (_req, reply) => {
    if (scheduler.isDraining) return reply.code(503).send(new ApiError(503, 'shutting down', null, 'shutting_down').body());
    return { status: 'ok', model: modelId, queue: scheduler.depth, contexts: contexts.size };
  });
  app.get('/metrics', async (_req, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));

  const modelJson = { id: modelId, object: 'model', created, owned_by: 'kvpress-ts' };
  app.get('/v1/models', async () => ({ object: 'list', data: [modelJson] }));
  app.get('/v1/models/:id', { schema: { params: idParams } }, async (req) => {
    checkModel((req.params as { id: string }).id, 'id');
    return modelJson;
  });
  app.get('/v1/kvpress/presses', async () => ({ object: 'list', data: presses.list().map((e) => ({ name: e.name, description: e.description, options: e.options })) }));

  function checkModel(name: string | undefined, param = 'model'): void {
    if (name !== undefined && name !== modelId) throw new ApiError(404, `the model "${name}" does not exist; this server serves "${modelId}"`, param, 'model_not_found');
  }

  /** The press a request's kvpress block asks for, or null; registry errors become 400s naming the field. */
  function pressFromBody(kv: KvpressBody | undefined): Press | null {
    if (kv?.press === undefined) {
      if (kv?.compression_ratio !== undefined || kv?.options !== undefined) throw new ApiError(400, 'kvpress.compression_ratio and kvpress.options need kvpress.press', 'kvpress.press');
      return null;
    }
    try {
      presses.get(kv.press);
    } catch (e) {
      throw new ApiError(400, (e as Error).message.replace(/`kvpress presses` lists them all$/, 'GET /v1/kvpress/presses lists them all'), 'kvpress.press', 'unknown_press');
    }
    try {
      const press = presses.create(kv.press, kv.compression_ratio ?? 0, kv.options ?? {});
      press.validate?.(model);
      return press;
    } catch (e) {
      const msg = (e as Error).message;
      const opt = /option "?([A-Za-z0-9_]+)"?/.exec(msg);
      const param = opt ? `kvpress.options.${opt[1]}` : /ratio/.test(msg) ? 'kvpress.compression_ratio' : 'kvpress';
      throw new ApiError(400, msg, param, 'invalid_press');
    }
  }

  /** Admits a one-step task (a compression) and resolves with what it computes. */
  function oneStep<T>(req: FastifyRequest, reply: FastifyReply, work: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const task: Task = {
        step() {
          resolve(work());
          return true;
        },
        cancel: (reason) => reject(new ApiError(503, `cancelled: ${reason}`, null, 'cancelled')),
        fail: (e) => reject(e),
      };
      scheduler.submit(task);
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) scheduler.cancel(task, 'client disconnected');
      });
    });
  }

  // Compressed contexts as resources: compress once, answer many times.
  app.post('/v1/contexts', { schema: { body: contextSchema } }, async (req, reply) => {
    const body = req.body as { model?: string; text?: string; messages?: ChatMessage[]; kvpress?: KvpressBody; max_context_length?: number };
    checkModel(body.model);
    if ((body.text === undefined) === (body.messages === undefined)) throw new ApiError(400, 'give exactly one of "text" and "messages"', body.text === undefined ? 'text' : 'messages');
    const text = body.text ?? body.messages!.map(messageText).join('\n');
    if (text.trim() === '') throw new ApiError(400, 'the context is empty', body.text === undefined ? 'messages' : 'text');
    const press = pressFromBody(body.kvpress);
    if (press && isDecodingPress(press)) throw new ApiError(400, `${press.name} is a decoding press: it compresses while answering, so one context cannot serve several answers; use it on a chat completion instead`, 'kvpress.press');
    if (body.max_context_length !== undefined && body.max_context_length > window) throw new ApiError(400, `max_context_length ${body.max_context_length} is more than the model's window of ${window}`, 'max_context_length');
    const stored = await oneStep(req, reply, () => {
      const cc = pipeline.compress(text, { press, maxContextLength: body.max_context_length, reserve: Math.floor(window / 4) });
      const c = model.config;
      const kept = cc.measure.lengths.reduce((s, l) => s + l.reduce((a, n) => a + n, 0), 0);
      const entries = cc.measure.contextTokens * c.numLayers * c.numKvHeads;
      const bytes = cc.cache.bytes();
      const s: StoredContext = {
        id: contexts.newId(), created: Math.floor(Date.now() / 1000), context: cc,
        press: press?.name ?? null, compressionRatio: press ? press.compressionRatio : null,
        tokens: cc.measure.contextTokens, truncatedFrom: cc.measure.truncatedFrom, kept, entries, bytes,
        bytesBefore: kept > 0 ? Math.round((bytes / kept) * entries) : 0,
        allocatedBytes: cc.cache.allocatedBytes(), prefillMs: cc.measure.prefillMs, pressMs: cc.measure.pressMs, lastUsed: Date.now(),
      };
      contexts.add(s);
      metrics.promptTokens.inc(s.tokens);
      metrics.bytesSaved.inc(s.bytesBefore - s.bytes);
      return s;
    });
    return reply.code(201).send(contextJson(stored));
  });
  app.get('/v1/contexts', async () => ({ object: 'list', data: contexts.list().map(contextJson) }));
  app.get('/v1/contexts/:id', { schema: { params: idParams } }, async (req) => contextJson(contexts.get((req.params as { id: string }).id, 'id')));
  app.delete('/v1/contexts/:id', { schema: { params: idParams } }, async (req) => {
    const c = contexts.delete((req.params as { id: string }).id);
    return { id: c.id, object: 'kvpress.context.deleted', deleted: true };
  });

  function contextJson(c: StoredContext) {
    return {
      id: c.id, object: 'kvpress.context', created: c.created, model: modelId,
      press: c.press, compression_ratio: c.compressionRatio,
      tokens: c.tokens, truncated_from: c.truncatedFrom, kept: c.kept, entries: c.entries,
      bytes: c.bytes, bytes_before: c.bytesBefore, allocatedBytes: c.allocatedBytes,
      prefill_ms: c.prefillMs, press_ms: c.pressMs,
    };
  }

  // What a press keeps, for the page: the same data as `kvpress scores --json`.
  app.post('/v1/kvpress/scores', { schema: { body: scoresSchema } }, async (req, reply) => {
    const body = req.body as { text: string; press: string; compression_ratio?: number; options?: Record<string, unknown> };
    const press = pressFromBody(body)!;
    const tokens = tok.encode(body.text, { bos: true });
    if (tokens.length > window) throw new ApiError(400, `the text has ${tokens.length} tokens, more than the model's window of ${window}`, 'text', 'context_length_exceeded');
    const s = await oneStep(req, reply, () => pressScores(model, press, tokens));
    const c = model.config;
    const kept = s.layers.reduce((a, l) => a + l.kept.reduce((b, k) => b + k.length, 0), 0);
    const entries = tokens.length * c.numLayers * c.numKvHeads;
    const before = kept > 0 ? Math.round((s.keptBytes / kept) * entries) : 0;
    return {
      press: press.name, compression_ratio: press.compressionRatio,
      numLayers: c.numLayers, numKvHeads: c.numKvHeads,
      tokens, pieces: tokens.map((id, i) => (i === 0 ? tok.decode([id]) : tok.decodePiece(tokens[i - 1], id))),
      layers: s.layers, ...(s.logScores ? { logScores: true } : {}),
      bytes: { before, kept: s.keptBytes, evicted: before - s.keptBytes },
    };
  });

  /**
   * The answer a completion request asks for, checked before it is admitted. `textPerToken`
   * false lets a plain answer skip decoding each token (context answers always decode).
   */
  function prepare(body: CompletionBody, chat: boolean, textPerToken: boolean): Answer {
    const kv = body.kvpress;
    const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? (chat ? undefined : 16);
    const sampling = { temperature: body.temperature ?? 1, topP: body.top_p ?? 1, seed: body.seed ?? undefined };
    let text: string;
    if (chat) {
      text = body.messages!.map(messageText).join('\n');
    } else {
      text = typeof body.prompt === 'string' ? body.prompt : body.prompt![0];
    }
    if (kv?.context_id !== undefined) {
      if (kv.press !== undefined || kv.compression_ratio !== undefined || kv.options !== undefined) {
        throw new ApiError(400, 'kvpress.context_id answers from a context compressed already; drop kvpress.press, compression_ratio and options', 'kvpress.context_id');
      }
      const stored = contexts.get(kv.context_id);
      return contextAnswer(stored, text, maxTokens, sampling, tok!);
    }
    const press = pressFromBody(kv);
    const ids = chat ? chatPromptIds(tok!, body.messages!) : tok!.encode(text, { bos: true });
    if (ids.length > window) throw new ApiError(400, `the prompt has ${ids.length} tokens, more than the model's window of ${window}`, chat ? 'messages' : 'prompt', 'context_length_exceeded');
    const gen = new Generation(batch.model, ids, { maxNewTokens: maxTokens ?? window, press, caches: answerCaches, textPerToken, ...sampling });
    return {
      textPerToken,
      takeText: () => gen.takeText(),
      step: () => gen.step(),
      nextDecode: () => gen.nextDecode(),
      stop: () => gen.stop(),
      promptTokens: ids.length,
      completionTokens: () => gen.tokens.length,
      finishReason: () => gen.finishReason ?? 'length',
      fullText: () => tok!.decode(gen.tokens),
      usage: () => {
        const m = gen.measure;
        return {
          press: press?.name ?? null, compression_ratio: press ? press.compressionRatio : null,
          entries_kept: m?.keptEntries ?? 0, entries: m?.entries ?? 0,
          kv_bytes_before: m?.bytesBefore ?? 0, kv_bytes_after: m?.bytesAfter ?? 0,
          prefill_ms: m?.prefillMs ?? 0, press_ms: gen.pressMs,
        };
      },
    };
  }

  /**
   * An answer from a stored context with the pipeline's own code: a copy of the compressed cache
   * (pages shared with the context), the question after the uncompressed context, never pressed.
   */
  function contextAnswer(stored: StoredContext, question: string, maxTokens: number | undefined, sampling: { temperature: number; topP: number; seed?: number }, tk: Tokenizer): Answer {
    const base = stored.context;
    const ids = tk.encode(question + base.questionSuffix, { bos: false });
    if (ids.length === 0) throw new ApiError(400, 'the question is empty', 'messages');
    const room = window - base.contextEnd;
    if (ids.length > room) throw new ApiError(400, `the question takes ${ids.length} tokens but only ${room} positions remain after the ${base.contextEnd}-position context (model window ${window})`, 'messages', 'context_length_exceeded');
    const limit = Math.min(maxTokens ?? window, room - ids.length + 1);
    let steps: Generator<TokenEvent, AnswerRecord> | null = null;
    let count = 0, full = '', questionMs = 0, ended = false;
    // The pipeline's loop feeds each token back (one single-row pass) unless it was the last.
    const input: DecodeInput = { token: 0, cache: base.cache };
    const caches: KVCache[] = [];
    const release = () => caches.forEach((c) => answerCaches.delete(c));
    return {
      textPerToken: true,
      takeText: () => '',
      step() {
        steps ??= new CompressedContext(batch.model, tk, new WatchedCache(base.cache, (c) => (caches.push(c), answerCaches.add(c))), base.questionSuffix, null, base.measure).answerIdsSteps(0, ids, { maxNewTokens: limit, sampling });
        const r = steps.next();
        if (r.done) {
          ended = true;
          release();
          full = r.value.text;
          questionMs = r.value.stats.questionMs;
          return null;
        }
        count++;
        input.token = r.value.id;
        return { id: r.value.id, text: r.value.text };
      },
      nextDecode() {
        if (ended || count === 0 || count >= limit || caches.length !== 1) return null;
        input.cache = caches[0];
        return input;
      },
      stop() {
        ended = true;
        steps?.return(undefined as never);
        release();
      },
      promptTokens: ids.length,
      completionTokens: () => count,
      finishReason: () => (count >= limit ? 'length' : 'stop'),
      fullText: () => full,
      usage: () => ({
        press: stored.press, compression_ratio: stored.compressionRatio, context_id: stored.id,
        entries_kept: stored.kept, entries: stored.entries, kv_bytes_before: stored.bytesBefore, kv_bytes_after: stored.bytes,
        prefill_ms: stored.prefillMs, press_ms: stored.pressMs, question_ms: questionMs,
      }),
    };
  }

  function completionRoute(chat: boolean) {
    return async (req: FastifyRequest, reply: FastifyReply) => {
      const body = req.body as CompletionBody;
      checkModel(body.model);
      const stops = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
      // Each token's text is needed at once only to look for stop strings or to send an event per
      // token; otherwise the text is decoded when it is written (streamed: at most once per
      // interval; not streamed: at the end), two decodes per write instead of two per token
      // (0.4–0.5 ms of a 341-token stories260K answer).
      const answer = prepare(body, chat, stops.length > 0 || (body.stream === true && streamIntervalMs === 0));
      const lazy = !answer.textPerToken;
      const id = `${chat ? 'chatcmpl' : 'cmpl'}-${Math.random().toString(36).slice(2, 14)}`;
      const stamp = Math.floor(Date.now() / 1000);
      const object = chat ? 'chat.completion' : 'text_completion';
      const usage = () => ({
        prompt_tokens: answer.promptTokens,
        completion_tokens: answer.completionTokens(),
        total_tokens: answer.promptTokens + answer.completionTokens(),
        kvpress: answer.usage(),
      });
      const matcher = new StopMatcher(stops);
      const admitted = performance.now();
      let first = true, texted = false;
      const run = (sink: { token(text: string): void; done(finish: 'stop' | 'length'): void; error(e: unknown): void; cancelled(reason: string): void }): Task => ({
        step() {
          const t = answer.step();
          if (first) {
            first = false;
            metrics.promptTokens.inc(answer.promptTokens);
            metrics.ttft.observe((performance.now() - admitted) / 1000);
          }
          if (t === null) {
            if (lazy) {
              const piece = answer.takeText();
              if (piece) sink.token(matcher.push(piece));
            }
            const full = answer.fullText();
            if (full.startsWith(matcher.pushed)) {
              const tail = matcher.push(full.slice(matcher.pushed.length));
              if (tail) sink.token(tail);
            }
            if (matcher.stopped) {
              finish(sink, 'stop');
              return true;
            }
            const rest = matcher.flush();
            if (rest) sink.token(rest);
            finish(sink, answer.finishReason());
            return true;
          }
          // Until some text has been sent, a lazy answer's tokens are decoded as they come, so
          // that the first text goes out as soon as there is some; after it, a lazy token has no
          // text yet but is there to be written.
          const text = matcher.push(lazy && !texted ? answer.takeText() : t.text);
          if (text) texted = true;
          if (text || (lazy && texted)) sink.token(text);
          if (matcher.stopped) {
            finish(sink, 'stop');
            return true;
          }
          return false;
        },
        nextDecode: () => answer.nextDecode(),
        cancel(reason) {
          answer.stop();
          metrics.completionTokens.inc(answer.completionTokens());
          sink.cancelled(reason);
        },
        fail(e) {
          answer.stop();
          sink.error(e);
        },
      });
      const finish = (sink: { done(finish: 'stop' | 'length'): void }, reason: 'stop' | 'length') => {
        const n = answer.completionTokens();
        metrics.completionTokens.inc(n);
        const secs = (performance.now() - admitted) / 1000;
        if (n > 0 && secs > 0) metrics.tokensPerSecond.observe(n / secs);
        sink.done(reason);
        // Its cache goes back after the last bytes are written, which the client need not wait for.
        answer.stop();
      };

      if (body.stream !== true) {
        return new Promise((resolve, reject) => {
          const sink = {
            token() {},
            done(reason: 'stop' | 'length') {
              const text = matcher.output;
              const choice = chat
                ? { index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: reason }
                : { index: 0, text, logprobs: null, finish_reason: reason };
              resolve({ id, object, created: stamp, model: modelId, choices: [choice], usage: usage() });
            },
            error: (e: unknown) => reject(e),
            cancelled: (reason: string) => reject(new ApiError(503, `cancelled: ${reason}`, null, 'cancelled')),
          };
          const task = run(sink);
          scheduler.submit(task);
          reply.raw.on('close', () => {
            if (!reply.raw.writableFinished) scheduler.cancel(task, 'client disconnected');
          });
        });
      }

      // Streamed: server-sent events, the text in chunks (see below), then usage (if asked) and [DONE].
      const chunkObject = chat ? 'chat.completion.chunk' : 'text_completion';
      const chunk = (delta: string | null, finishReason: string | null, role = false) => ({
        id, object: chunkObject, created: stamp, model: modelId,
        choices: [chat
          ? { index: 0, delta: delta === null ? {} : role ? { role: 'assistant', content: delta } : { content: delta }, logprobs: null, finish_reason: finishReason }
          : { index: 0, text: delta ?? '', logprobs: null, finish_reason: finishReason }],
      });
      const res = reply.raw;
      let ended = false;
      // Events wait in `events` and go out in one write at the end of the scheduler slice that
      // made them (a write to the socket costs about as much as a stories260K decode step), at
      // most once per streamIntervalMs; the first token's text goes at once. With an interval,
      // the token text gathered meanwhile (`text`) goes out as one content event; with 0 every
      // token is an event of its own.
      let events = '', text = '', scheduled = false, tokensSent = 0, lastWrite = 0;
      let timer: NodeJS.Timeout | null = null;
      const gathered = () => {
        if (lazy) text += matcher.push(answer.takeText());
        if (text === '') return;
        events += tokenHead + JSON.stringify(text) + tokenTail;
        text = '';
      };
      const flush = () => {
        scheduled = false;
        timer = null;
        if (ended) return;
        gathered();
        if (events === '') return;
        res.write(events);
        events = '';
        lastWrite = performance.now();
      };
      const arm = () => {
        if (scheduled || ended) return;
        scheduled = true;
        // Past due (always so for a model whose step is longer than the interval): at the end of
        // this slice. setImmediate runs before the scheduler's next slice, queued after it.
        const wait = tokensSent === 0 ? 0 : lastWrite + streamIntervalMs - performance.now();
        if (wait <= 0) setImmediate(flush);
        else timer = setTimeout(flush, wait);
      };
      /** Queues one whole server-sent event ("data: …\n\n") after the text gathered before it. */
      const write = (obj: unknown) => {
        if (ended) return;
        gathered();
        events += `data: ${JSON.stringify(obj)}\n\n`;
        arm();
      };
      // A token's event is its text's JSON between a fixed head and tail: no chunk object is
      // built and stringified per token.
      const [head, tail] = JSON.stringify(chunk('\u0000', null)).split('"\\u0000"');
      const tokenHead = `data: ${head}`, tokenTail = `${tail}\n\n`;
      // The status line went out with the first chunk; a later failure is an error event.
      const end = () => {
        if (ended) return;
        // A long interval's timer would hold this request's closures (and the process) that long.
        if (timer) clearTimeout(timer);
        gathered();
        res.end(`${events}data: [DONE]\n\n`);
        events = '';
        ended = true;
      };
      const sink = {
        token(piece: string) {
          if (ended) return;
          if (streamIntervalMs === 0) events += tokenHead + JSON.stringify(piece) + tokenTail;
          else text += piece;
          arm();
          // The first token goes out before the slice's other steps run, not at the slice's end.
          if (tokensSent++ === 0) scheduler.endSlice();
        },
        done(reason: 'stop' | 'length') {
          write(chunk(null, reason));
          if (body.stream_options?.include_usage) write({ id, object: chunkObject, created: stamp, model: modelId, choices: [], usage: usage() });
          end();
        },
        error(e: unknown) {
          write(toApiError(e).body());
          end();
        },
        cancelled(reason: string) {
          write(new ApiError(503, `cancelled: ${reason}`, null, 'cancelled').body());
          end();
        },
      };
      const task = run(sink);
      scheduler.submit(task);
      reply.hijack();
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      if (chat) write(chunk('', null, true));
      res.on('close', () => {
        if (!ended) {
          ended = true;
          if (timer) clearTimeout(timer);
          scheduler.cancel(task, 'client disconnected');
        }
      });
    };
  }

  app.post('/v1/chat/completions', { schema: { body: chatSchema } }, completionRoute(true));
  app.post('/v1/completions', { schema: { body: completionSchema } }, completionRoute(false));

  return {
    app, scheduler, batch, contexts, metrics, kvAllocatedBytes,
    async shutdown(graceMs = 30_000) {
      await scheduler.drain(graceMs);
      await app.close();
    },
  };
}

/** Each task's next decode step (null for those whose next step is something else). */
function* decodeInputs(tasks: readonly Task[]): Generator<DecodeInput | null> {
  for (const t of tasks) yield t.nextDecode ? t.nextDecode() : null;
}

/** Any error as an OpenAI-shaped one: validation and parsing problems are 400s naming the field. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof PressError) return new ApiError(400, err.message, 'kvpress', 'invalid_press');
  if (err instanceof PipelineError) return new ApiError(400, err.message, null, 'invalid_request');
  const e = err as Error & { validation?: { instancePath: string; keyword: string; params: Record<string, unknown>; message?: string }[]; validationContext?: string; statusCode?: number; code?: string };
  if (e.validation && e.validation.length > 0) {
    const v = e.validation[0];
    const path = v.instancePath.replace(/^\//, '').replace(/\//g, '.');
    const join = (k: string) => (path ? `${path}.${k}` : k);
    if (v.keyword === 'additionalProperties') {
      const name = join(String(v.params.additionalProperty));
      return new ApiError(400, `unrecognized request argument supplied: ${name}`, name, 'unknown_parameter');
    }
    if (v.keyword === 'required') {
      const name = join(String(v.params.missingProperty));
      return new ApiError(400, `missing required parameter: ${name}`, name, 'missing_required_parameter');
    }
    const where = path || e.validationContext || 'body';
    return new ApiError(400, `invalid ${where}: ${(v.message ?? v.keyword).replace(/,null$/, ' or null')}${v.keyword === 'enum' ? ` (${(v.params.allowedValues as unknown[]).join(', ')})` : ''}`, path || null, 'invalid_value');
  }
  if (e.statusCode === 413 || e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new ApiError(413, `the request body is larger than the server's limit: ${e.message}`, null, 'request_too_large');
  if (e.statusCode === 415) return new ApiError(400, `${e.message}; send Content-Type: application/json`, null, 'invalid_content_type');
  if (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500) return new ApiError(400, e.message, null, /JSON/.test(e.code ?? '') ? 'invalid_json' : 'invalid_request');
  return new ApiError(500, `internal error: ${e.message ?? String(err)}`, null, 'internal_error');
}
