/**
 * The two tasks a 260K-parameter TinyStories model can do well enough for compression to show:
 *
 * - continuation fidelity: compress a story's first part, feed the rest teacher-forced through
 *   the compressed cache, and measure how far the next-token distributions move from the
 *   uncompressed model's (mean KL, float64) and how much the story's NLL grows;
 * - name recall: compress the start of a story whose main character was named early, feed the
 *   rest of the prefix, and check that greedy decoding still writes the name (every name token
 *   top-1, teacher-forced).
 *
 * The uncompressed pass of each item is a `*Reference`, computed once and shared by every
 * press and ratio of a grid. Only the prefill sees the press: the teacher-forced part runs
 * without one, at positions after the uncompressed length (the cache's nextPosition).
 * continuation.ts and recall.ts hold the two tasks, fidelity-common.ts what they share.
 */
export { contextBoundary, DEFAULT_CONTEXT_FRACTION } from './fidelity-common.js';
export {
  continuationReference, scoreContinuation, summarizeContinuation, type ContinuationReference, type ContinuationScore, type ContinuationSummary,
} from './continuation.js';
export { recallReference, scoreRecall, summarizeRecall, type RecallReference, type RecallScore, type RecallSummary } from './recall.js';
