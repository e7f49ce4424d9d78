/** Evaluation building blocks: metrics and dataset generators/loaders. */
export * from './metrics.js';
export type { Sample } from './datasets/types.js';
export { SeededRandom, seedFrom } from './datasets/random.js';
export { largestFitting } from './datasets/fit.js';
export {
  RULER_TASKS,
  RULER_MAX_NEW_TOKENS,
  generateRuler,
  generateRulerTask,
  rulerTaskFamily,
  type RulerOptions,
  type RulerTask,
} from './datasets/ruler.js';
export { readHotpotQa, readSquad, type QaCorpus } from './datasets/ruler-qa.js';
export { NIAH_DEFAULTS, needleInHaystack, type NiahOptions } from './datasets/niah.js';
export { loadJsonl, parseJsonl, type JsonlOptions } from './datasets/jsonl.js';
export {
  STORY_NAMES,
  continuationStories,
  nameRecallStories,
  storyBook,
  type NameRecallItem,
  type StoryItem,
} from './datasets/stories.js';
