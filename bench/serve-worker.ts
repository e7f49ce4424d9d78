/**
 * The server of the serve benchmark, in a worker thread of its own, so that the benchmark's
 * HTTP clients do not share its event loop: stories260K (context widened as in the model bench),
 * 1 kernel thread.
 */
import { parentPort } from 'node:worker_threads';
import { createBackend } from '../src/backend/index.js';
import { benchModelOfShape } from '../src/bench/shapes.js';
import { createServer } from '../src/serve/server.js';

const model = await benchModelOfShape('stories260K', createBackend({ threads: 1 }));
const server = createServer({ model, modelId: 'stories260K', maxQueue: 256, maxContextMemory: 1024 * 2 ** 20 });
const url = await server.app.listen({ host: '127.0.0.1', port: 0 });
parentPort!.postMessage({ url });
parentPort!.on('message', async (m) => {
  if (m === 'stop') {
    await server.shutdown(1000);
    parentPort!.close();
  }
});
