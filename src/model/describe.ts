import { statSync } from 'node:fs';
import { loadModel } from './load.js';
import { ggufConfig } from './loaders/gguf-model.js';
import { GgufFile } from './loaders/gguf.js';
import { weightBytes, weightLength, weightType, type Weight } from './weights.js';

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
  /** Bytes of tensor data as the GGUF file stores it (other formats: as loaded). */
  storedBytes: number;
  /** Bytes the weights take once loaded (GGUF: matrices as stored, vectors as f32). */
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
      let parameters = 0, storedBytes = 0, loadedBytes = 0;
      for (const t of f.tensors.values()) {
        tensorTypes[t.typeName] = (tensorTypes[t.typeName] ?? 0) + 1;
        parameters += t.elements;
        storedBytes += t.bytes;
        loadedBytes += t.dims.length >= 2 ? t.bytes : 4 * t.elements;
      }
      return { path, format: 'gguf', architecture: c.architecture, layers: c.numLayers, hiddenSize: c.hiddenSize, vocabSize: c.vocabSize, tensorTypes, parameters, storedBytes, loadedBytes };
    } finally {
      f.close();
    }
  }
  const m = await loadModel(path);
  const c = m.config, w = m.weights;
  const tensors = new Set<Weight>([w.embedding, w.finalNorm, w.lmHead]);
  for (const l of w.layers) for (const a of Object.values(l)) if (a) tensors.add(a);
  const tensorTypes: Record<string, number> = {};
  let parameters = 0, loadedBytes = 0;
  for (const t of tensors) {
    const type = weightType(t).toUpperCase();
    tensorTypes[type] = (tensorTypes[type] ?? 0) + 1;
    parameters += weightLength(t);
    loadedBytes += weightBytes(t);
  }
  return {
    path, format: statSync(path).isDirectory() ? 'hf' : 'llama2c', architecture: c.architecture, layers: c.numLayers, hiddenSize: c.hiddenSize,
    vocabSize: c.vocabSize, tensorTypes, parameters, storedBytes: loadedBytes, loadedBytes,
  };
}
