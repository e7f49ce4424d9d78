/**
 * The server of the serve benchmark, in a worker thread of its own, so that the benchmark's
 * HTTP clients do not share its event loop: the shape named in workerData (see serveBenchModel).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createServer } from '../src/serve/server.js';
import { serveBenchModel } from './serve-model.js';

const shape = (workerData as { shape: Parameters<typeof serveBenchModel>[0] }).shape;
const model = await serveBenchModel(shape);
const server = createServer({ model, modelId: shape, maxQueue: 256, maxContextMemory: 4096 * 2 ** 20 });
const url = await server.app.listen({ host: '127.0.0.1', port: 0 });
parentPort!.postMessage({ url });
parentPort!.on('message', async (m) => {
  if (m === 'stop') {
    await server.shutdown(1000);
    parentPort!.close();
  }
});
