import type { KvDtypeOption } from '../cache/format.js';
import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../backend/backend.js';
import { loadLlama2cTokenizer } from '../tokenizer/llama2c.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { loadLlama2c } from './loaders/llama2c.js';
import { Model } from './model.js';
import { WEIGHT_TYPES, WEIGHT_TYPES_TEXT, type WeightType } from './weights.js';

export interface LoadOptions {
  /** Tokenizer file for a llama2.c checkpoint; default: a `tok*.bin`/`tokenizer.bin` beside it. */
  tokenizer?: string;
  /** Kernels to run on (default: the TypeScript reference). */
  backend?: Backend;
  /** The number format every matrix is held in (see ModelOptions.weights); default: as stored. */
  weights?: WeightType;
  /** @deprecated the former name of `weights`. */
  decodeWeights?: WeightType;
  /** Element type of the model's KV caches (ModelOptions.kvDtype; default auto). */
  kvDtype?: KvDtypeOption;
}

/** The package root (the folder holding package.json), wherever this file was compiled to. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the kvpress-ts package root');
    dir = up;
  }
  return dir;
}

/** Path of the embedded default model, stories260K. */
export function defaultModelPath(): string {
  return join(packageRoot(), 'models', 'stories260K', 'stories260K.bin');
}

/**
 * Loads a model: a llama2.c `.bin` checkpoint (tokenizer found beside it), a Hugging Face
 * directory (config.json + safetensors + tokenizer.json) or a `.gguf` file (tokenizer and chat
 * template from its metadata). With no path, the embedded stories260K.
 */
export async function loadModel(path: string = defaultModelPath(), opts: LoadOptions = {}): Promise<Model> {
  if (typeof path !== 'string') throw new TypeError(`loadModel: path must be a string (a llama2.c .bin checkpoint or a Hugging Face directory), got ${path === null ? 'null' : typeof path}`);
  const p = resolve(path);
  const type = opts.weights ?? opts.decodeWeights;
  if (type !== undefined && !WEIGHT_TYPES.includes(type)) throw new Error(`weights must be ${WEIGHT_TYPES_TEXT}, got ${JSON.stringify(type)}`);
  if (!existsSync(p)) throw new Error(`${path}: no such file or directory`);
  if (statSync(p).isDirectory()) {
    if (opts.tokenizer !== undefined) throw new Error(`${path}: --tokenizer is for llama2.c checkpoints; a Hugging Face directory's tokenizer is its own tokenizer.json`);
    const { loadHfDirectory } = await import('./loaders/hf-dir.js');
    const { config, weights, tokenizer, precision } = await loadHfDirectory(p, type);
    return new Model(config, weights, { backend: opts.backend, tokenizer, source: path, weights: type, kvDtype: opts.kvDtype, precision });
  }
  if (p.toLowerCase().endsWith('.gguf')) {
    const { loadGguf } = await import('./loaders/gguf-model.js');
    const { config, weights, tokenizer, precision } = loadGguf(p, type);
    return new Model(config, weights, { backend: opts.backend, tokenizer, source: path, weights: type, kvDtype: opts.kvDtype, precision });
  }
  const { config, weights } = loadLlama2c(p, type);
  const tokPath = opts.tokenizer ?? findTokenizerBeside(p, config.vocabSize);
  let tokenizer: Tokenizer | null = null;
  if (tokPath) tokenizer = loadLlama2cTokenizer(tokPath, config.vocabSize);
  return new Model(config, weights, { backend: opts.backend, tokenizer, source: path, weights: type, kvDtype: opts.kvDtype });
}

/** llama2.c names a custom tokenizer tok<vocab>.bin (tok512.bin), the default one tokenizer.bin. */
function findTokenizerBeside(modelPath: string, vocabSize: number): string | null {
  const dir = dirname(modelPath);
  for (const name of [`tok${vocabSize}.bin`, 'tokenizer.bin']) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}
