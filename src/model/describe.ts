import { statSync } from 'node:fs';
import { loadModel } from './load.js';
import { ggufConfig } from './loaders/gguf-model.js';
import { GgufFile } from './loaders/gguf.js';

/** What `kvpress info --model` reports about a model before (or without) running it. */
export interface ModelDescription {
  path: string;
  format: 'gguf' | 'hf' | 'llama2c';
  architecture: string;
  layers: number;
  hiddenSize: number;
  vocabSize: number;
  /** Tensor count per stored type (F32, Q4_K …). */
  tensorTypes: Record<string, number>;
  parameters: number;
  /** Bytes of tensor data as stored in the file(s). */
  storedBytes: number;
  /** Bytes the weights take once loaded (f32 today: quantized tensors are dequantized at load). */
  loadedBytes: number;
}

/**
 * Describes a model. A GGUF file is described from its header alone (no tensor is read);
 * other formats are loaded.
 */
export async function describeModel(path: string): Promise<ModelDescription> {
  if (path.toLowerCase().endsWith('.gguf') && !statSync(path, { throwIfNoEntry: false })?.isDirectory()) {
    const f = GgufFile.open(path);
    try {
      const c = ggufConfig(f);
      const tensorTypes: Record<string, number> = {};
      let parameters = 0, storedBytes = 0;
      for (const t of f.tensors.values()) {
        tensorTypes[t.typeName] = (tensorTypes[t.typeName] ?? 0) + 1;
        parameters += t.elements;
        storedBytes += t.bytes;
      }
      return { path, format: 'gguf', architecture: c.architecture, layers: c.numLayers, hiddenSize: c.hiddenSize, vocabSize: c.vocabSize, tensorTypes, parameters, storedBytes, loadedBytes: 4 * parameters };
    } finally {
      f.close();
    }
  }
  const m = await loadModel(path);
  const c = m.config, w = m.weights;
  const arrays = new Set<Float32Array>([w.embedding, w.finalNorm, w.lmHead]);
  for (const l of w.layers) for (const a of Object.values(l)) if (a instanceof Float32Array) arrays.add(a);
  let parameters = 0;
  for (const a of arrays) parameters += a.length;
  return {
    path, format: statSync(path).isDirectory() ? 'hf' : 'llama2c', architecture: c.architecture, layers: c.numLayers, hiddenSize: c.hiddenSize,
    vocabSize: c.vocabSize, tensorTypes: { F32: arrays.size }, parameters, storedBytes: 4 * parameters, loadedBytes: 4 * parameters,
  };
}
