import type { Backend } from '../backend/backend.js';
import { loadModel } from '../model/load.js';
import { Model } from '../model/model.js';
import { randomWeights, shapeConfig, SHAPES, type ShapeName } from '../model/random.js';

export const SHAPE_NAMES = Object.keys(SHAPES) as ShapeName[];

/**
 * The benchmark's model of a shape: stories260K's real weights (context widened so that long
 * prompts can be timed, as llama-bench does) or random weights built in memory.
 */
export async function benchModelOfShape(shape: ShapeName, backend: Backend): Promise<Model> {
  if (shape === 'stories260K') {
    const m = await loadModel(undefined, { backend });
    return new Model({ ...m.config, maxPositionEmbeddings: 32768 }, m.weights, { backend, tokenizer: m.tokenizer, source: 'stories260K' });
  }
  const config = shapeConfig(shape);
  // stories260K's tokenizer (its 512 ids fit every shape's vocabulary) for presses that encode a prompt of their own (KVzip).
  const { tokenizer } = await loadModel(undefined, { backend });
  return new Model(config, randomWeights(config), { backend, tokenizer, source: `random ${shape}` });
}
