/**
 * A worker thread with its own model on the native backend (test/native-workers.test.ts): it
 * generates once to hold KV slabs of its own, says "ready", and on "go" generates greedily again.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createBackend } from '../../src/backend/index.js';
import { loadModel } from '../../src/model/load.js';
import { generate } from '../../src/pipeline/generate.js';

const { prompt, maxNewTokens } = workerData as { prompt: string; maxNewTokens: number };
const model = await loadModel(undefined, { backend: createBackend({ prefer: 'native', threads: 1 }) });
const ids = model.tokenizer!.encode(prompt, { bos: true });
generate(model, ids, { maxNewTokens, temperature: 0 });
parentPort!.once('message', () => parentPort!.postMessage(generate(model, ids, { maxNewTokens, temperature: 0 }).text));
parentPort!.postMessage('ready');
