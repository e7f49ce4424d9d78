/**
 * JSON schemas of every request body (fastify validates them with ajv, without coercion or
 * removal: a field of the wrong type or an unknown field is a 400 naming it).
 */

const kvpress = {
  type: 'object',
  additionalProperties: false,
  properties: {
    press: { type: 'string', minLength: 1 },
    compression_ratio: { type: 'number' },
    options: { type: 'object' },
    context_id: { type: 'string', minLength: 1 },
  },
} as const;

const pressOnly = {
  type: 'object',
  additionalProperties: false,
  properties: { press: kvpress.properties.press, compression_ratio: kvpress.properties.compression_ratio, options: kvpress.properties.options },
} as const;

const textPart = {
  type: 'object',
  required: ['type'],
  properties: { type: { type: 'string' }, text: { type: 'string' } },
} as const;

const message = {
  type: 'object',
  required: ['role', 'content'],
  additionalProperties: false,
  properties: {
    role: { type: 'string', enum: ['system', 'developer', 'user', 'assistant'] },
    content: { anyOf: [{ type: 'string' }, { type: 'array', items: textPart }, { type: 'null' }] },
    name: { type: 'string' },
  },
} as const;

const messages = { type: 'array', minItems: 1, maxItems: 1024, items: message } as const;

const sampling = {
  model: { type: 'string', minLength: 1 },
  max_tokens: { type: ['integer', 'null'], minimum: 0 },
  max_completion_tokens: { type: ['integer', 'null'], minimum: 0 },
  temperature: { type: ['number', 'null'], minimum: 0, maximum: 2 },
  top_p: { type: ['number', 'null'], exclusiveMinimum: 0, maximum: 1 },
  seed: { type: ['integer', 'null'] },
  stop: { anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', maxItems: 4, items: { type: 'string', minLength: 1 } }, { type: 'null' }] },
  stream: { type: ['boolean', 'null'] },
  stream_options: { type: ['object', 'null'], additionalProperties: false, properties: { include_usage: { type: 'boolean' } } },
  n: { type: ['integer', 'null'], minimum: 1, maximum: 1 },
  user: { type: 'string' },
  kvpress,
} as const;

export const chatSchema = {
  type: 'object',
  required: ['model', 'messages'],
  additionalProperties: false,
  properties: { ...sampling, messages },
} as const;

export const completionSchema = {
  type: 'object',
  required: ['model', 'prompt'],
  additionalProperties: false,
  properties: {
    ...sampling,
    prompt: { anyOf: [{ type: 'string' }, { type: 'array', minItems: 1, maxItems: 1, items: { type: 'string' } }] },
  },
} as const;

export const contextSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    model: sampling.model,
    text: { type: 'string' },
    messages,
    kvpress: pressOnly,
    max_context_length: { type: 'integer', minimum: 1 },
  },
} as const;

export const scoresSchema = {
  type: 'object',
  required: ['text', 'press'],
  additionalProperties: false,
  properties: {
    text: { type: 'string', minLength: 1 },
    press: pressOnly.properties.press,
    compression_ratio: pressOnly.properties.compression_ratio,
    options: pressOnly.properties.options,
  },
} as const;

export const idParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 200 } },
} as const;
