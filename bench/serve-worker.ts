/**
 * The server of the serve benchmark, in a worker thread of its own, so that the benchmark's
 * HTTP clients do not share its event loop: the shape named in workerData (see serveBenchModel),
 * with its streamIntervalMs if given.
 * It also runs the library's `generate` on demand, on the server's own model in the server's
 * thread, so that the reference shares everything with the server but HTTP, and turns batched
 * decoding off and on ({ batch }) for the comparison with round-robin single-row steps.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { generate } from '../src/pipeline/generate.js';
import { createServer } from '../src/serve/server.js';
import { serveBenchModel } from './serve-model.js';

const { shape, streamIntervalMs } = workerData as { shape: Parameters<typeof serveBenchModel>[0]; streamIntervalMs?: number };
const model = await serveBenchModel(shape);
// streamIntervalMs unset: the server's default, as `kvpress serve` runs.
const server = createServer({ model, modelId: shape, maxQueue: 256, maxContextMemory: 4096 * 2 ** 20, streamIntervalMs });
const url = await server.app.listen({ host: '127.0.0.1', port: 0 });
parentPort!.postMessage({ url });
parentPort!.on('message', async (m) => {
  if (m?.generate) {
    const { prompt, maxTokens } = m.generate as { prompt: string; maxTokens: number };
    const c0 = process.cpuUsage();
    // Streams text as `kvpress generate` does (onToken decodes each piece).
    const r = generate(model, model.tokenizer!.encode(prompt, { bos: true }), { maxNewTokens: maxTokens, temperature: 0, onToken: () => {} });
    // Its cache released as the server releases an answer's before [DONE]: giving the pages back
    // (1–3 ms of CPU for a 341-token stories260K answer) is part of the work on both sides.
    const t = performance.now();
    r.cache.dispose();
    const cpu = process.cpuUsage(c0);
    parentPort!.postMessage({ tokens: r.tokens.length, ms: r.prefillMs + r.decodeMs + (performance.now() - t), cpuMs: (cpu.user + cpu.system) / 1000 });
  } else if (m?.batch !== undefined) {
    // Concurrent answers' decode steps together (the server's default) or round-robin one by one.
    server.batch.enabled = m.batch as boolean;
    parentPort!.postMessage({ batch: server.batch.enabled });
  } else if (m === 'stop') {
    await server.shutdown(1000);
    parentPort!.close();
  }
});
