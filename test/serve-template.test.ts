import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadModel } from '../src/model/load.js';
import { generate } from '../src/pipeline/generate.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { presses } from '../src/presses/index.js';
import { createServer } from '../src/serve/server.js';
import { randomWeights, tempDir, tinyConfig, writeHfDirectory, writeTokenizerFiles } from './fixtures/tiny-models.js';

// A Hugging Face model with a chat template (Qwen-style tokenizer), served in-process.
const cfg = tinyConfig({ vocabSize: 400, maxPositionEmbeddings: 256 });
const dir = writeHfDirectory(tempDir('serve-template'), cfg, randomWeights(cfg, 11));
writeTokenizerFiles(dir, 'qwen');
const model = await loadModel(dir);
const tok = model.tokenizer!;

test('chat messages go through the model chat template; a context answer on it is the pipeline answer', async () => {
  const server = createServer({ model, modelId: 'tiny' });
  try {
    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hello world' }];
    const r = await server.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { model: 'tiny', messages, max_tokens: 12, temperature: 0 } });
    assert.equal(r.statusCode, 200, r.body);
    const body = r.json();
    // TINY_CHAT_TEMPLATE renders each message as <|im_start|>role\ncontent<|im_end|>\n.
    const ids = tok.encode('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello world<|im_end|>\n', { bos: false });
    assert.equal(body.usage.prompt_tokens, ids.length);
    assert.equal(body.choices[0].message.content, generate(model, ids, { maxNewTokens: 12, temperature: 0 }).text);

    const context = 'the quick brown fox jumps over the lazy dog '.repeat(4);
    const c = await server.app.inject({ method: 'POST', url: '/v1/contexts', payload: { text: context, kvpress: { press: 'knorm', compression_ratio: 0.5 } } });
    assert.equal(c.statusCode, 201, c.body);
    const ref = new Pipeline(model).compress(context, { press: presses.create('knorm', 0.5), reserve: Math.floor(cfg.maxPositionEmbeddings / 4) });
    assert.equal(c.json().tokens, ref.measure.contextTokens);
    const a = await server.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { model: 'tiny', messages: [{ role: 'user', content: 'what jumps?' }], max_tokens: 10, temperature: 0, kvpress: { context_id: c.json().id } } });
    assert.equal(a.statusCode, 200, a.body);
    assert.equal(a.json().choices[0].message.content, ref.answer('what jumps?', { maxNewTokens: 10 }).text);
  } finally {
    await server.shutdown(1000);
  }
});
