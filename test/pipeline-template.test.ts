import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { LayerContext } from '../src/model/layer-context.js';
import { loadModel } from '../src/model/load.js';
import { splitChatTemplate, promptParts } from '../src/pipeline/chat-template.js';
import { generate } from '../src/pipeline/generate.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import type { KeepIndices, Press } from '../src/presses/press.js';
import { randomWeights, tempDir, tinyConfig, writeHfDirectory, writeTokenizerFiles } from './fixtures/tiny-models.js';

/** Qwen3's chat template (tokenizer_config.json of the Qwen3 release), tools branch included. */
const QWEN3_TEMPLATE = `{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}`;

/** Llama-3.1's header/turn structure (BOS printed by the template, content trimmed). */
const LLAMA3_TEMPLATE = "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

test('Qwen3 template: the context closes the prefix, the suffix closes the turn and opens an empty think block', () => {
  assert.deepEqual(splitChatTemplate(QWEN3_TEMPLATE, 'hello world'), {
    prefix: '<|im_start|>user\nhello world',
    suffix: '<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
  });
  assert.deepEqual(splitChatTemplate(QWEN3_TEMPLATE, 'hello world', { enableThinking: true }), {
    prefix: '<|im_start|>user\nhello world',
    suffix: '<|im_end|>\n<|im_start|>assistant\n',
  });
});

test('Llama-3 template: BOS comes from the template, the suffix is the assistant header', () => {
  assert.deepEqual(splitChatTemplate(LLAMA3_TEMPLATE, 'A long document.', { bosToken: '<|begin_of_text|>' }), {
    prefix: '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nA long document.',
    suffix: '<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
  });
});

test('a context ending in "#" keeps its "#" (the separator cannot eat them)', () => {
  assert.deepEqual(splitChatTemplate(QWEN3_TEMPLATE, 'Title: ##'), {
    prefix: '<|im_start|>user\nTitle: ##',
    suffix: '<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
  });
});

test('templates that drop or repeat the user message are refused with a one-line error', () => {
  assert.throws(() => splitChatTemplate('{{ bos_token }}', 'x'), /does not print the user message/);
  assert.throws(() => splitChatTemplate('{{ messages[0].content }}{{ messages[0].content }}', 'x'), /prints the user message twice/);
  assert.throws(() => splitChatTemplate('{% if %}', 'x'), /^Error: cannot render the chat template: [^\n]+$/);
});

class Recorder implements Press {
  readonly name = 'recorder';
  compressionRatio = 0;
  rows = -1;
  compress(ctx: LayerContext): KeepIndices | null {
    if (ctx.isPrefill) this.rows = ctx.rows;
    return null;
  }
}

test('a tiny random qwen3 model with the Qwen3 template: context and question are split around the user turn', async () => {
  const cfg = tinyConfig({ architecture: 'qwen3', qkNorm: true, vocabSize: 272, maxPositionEmbeddings: 256 });
  const dir = writeHfDirectory(tempDir('qwen3-template'), cfg, randomWeights(cfg, 7));
  writeTokenizerFiles(dir, 'qwen');
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: null, eos_token: '<|im_end|>', pad_token: '<|endoftext|>', tokenizer_class: 'Qwen2Tokenizer', chat_template: QWEN3_TEMPLATE }));
  const model = await loadModel(dir);
  const tok = model.tokenizer!;
  const context = 'hello world, hello world.';
  const question = 'hello?';
  const prefix = '<|im_start|>user\nhello world, hello world.';
  const suffix = '<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n';
  assert.deepEqual(promptParts(tok, context), { context: prefix, bos: false, questionSuffix: suffix });

  const press = new Recorder();
  const r = new Pipeline(model).run({ context, question, press, maxNewTokens: 12 });
  const ctxIds = tok.encode(prefix);
  assert.equal(ctxIds[0], 265, '<|im_start|> is one special token');
  assert.equal(press.rows, ctxIds.length);
  assert.equal(r.stats.contextTokens, ctxIds.length);
  const qIds = tok.encode(question + suffix);
  assert.equal(r.stats.questions[0].questionTokens, qIds.length);

  const cache = model.newCache();
  model.forward(ctxIds, cache, { logits: 'none' });
  const ref = generate(model, qIds, { cache, maxNewTokens: 12, temperature: 0 });
  assert.deepEqual(r.answerIds[0], ref.tokens);
});
