/**
 * Needle in a haystack, built as the Python library builds it: the haystack is tokenized and
 * cut to leave room for the needle and the prompt, the needle's tokens are spliced in at a
 * depth, and the result is decoded back to text — one sample per depth.
 */
import { readFileSync } from 'node:fs';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { storyBook } from './stories.js';
import type { Sample } from './types.js';

/** Tokens kept free for the question, answer prefix and chat template (the library's 150). */
const PROMPT_RESERVE = 150;

export const NIAH_DEFAULTS = {
  needle: 'The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.',
  question: 'What is the best thing to do in San Francisco?',
  answerPrefix: 'Answer: The best thing to do in San Francisco is',
  maxNewTokens: 64,
  contextWrapper: 'This is a very long story book: <book> {context} </book>.',
} as const;

export interface NiahOptions {
  tokenizer: Tokenizer;
  /** Longest context in tokens, needle included (the library's max_context_length). */
  maxContextLength: number;
  /** Insertion depths in percent of the haystack, one sample each. */
  depths: readonly number[];
  /** Plain-text haystack file; default: generated children's stories (see storyBook). */
  haystackFile?: string;
  /** Seed of the generated haystack (ignored with haystackFile). Default 42. */
  seed?: number;
  needle?: string;
  question?: string;
  answerPrefix?: string;
  maxNewTokens?: number;
  /** Must contain "{context}". */
  contextWrapper?: string;
}

function readHaystack(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read haystack file (${(e as Error).message})`);
  }
}

/**
 * One sample per depth: needle tokens inserted at ⌊len·depth/100⌋ of the haystack tokens
 * (cut to maxContextLength − len(needle) − 150), decoded and wrapped in the story-book
 * sentence. The answer is the needle itself.
 *
 * @example
 * const rows = needleInHaystack({ tokenizer, maxContextLength: 4096, depths: [0, 25, 50, 75, 100] });
 * rows[2].extra; // { needle: "The best thing to do in San Francisco is …", needleDepth: 50 }
 */
export function needleInHaystack(opts: NiahOptions): Sample[] {
  const { tokenizer, maxContextLength, depths } = opts;
  const needle = opts.needle ?? NIAH_DEFAULTS.needle;
  const wrapper = opts.contextWrapper ?? NIAH_DEFAULTS.contextWrapper;
  if (!wrapper.includes('{context}')) throw new Error(`NIAH context wrapper must contain "{context}", got "${wrapper}"`);
  for (const d of depths) {
    if (!(d >= 0 && d <= 100)) throw new Error(`NIAH depth must be a percentage in [0, 100], got ${d}`);
  }

  const needleIds = tokenizer.encode(needle, { bos: false });
  const limit = maxContextLength - needleIds.length - PROMPT_RESERVE;
  if (limit <= 0) {
    throw new Error(
      `NIAH max context length ${maxContextLength} must exceed the needle (${needleIds.length} tokens) plus ${PROMPT_RESERVE} tokens for the prompt`,
    );
  }
  const text = opts.haystackFile !== undefined ? readHaystack(opts.haystackFile) : storyBook(tokenizer, limit, opts.seed ?? 42);
  const haystack = tokenizer.encode(text, { bos: false }).slice(0, limit);

  return depths.map((depth) => {
    const at = Math.floor((haystack.length * depth) / 100);
    const ids = [...haystack.slice(0, at), ...needleIds, ...haystack.slice(at)];
    return {
      id: `depth-${depth}`,
      // A replacer function keeps "$&"-like sequences in the text literal.
      context: wrapper.replace('{context}', () => tokenizer.decode(ids)),
      question: opts.question ?? NIAH_DEFAULTS.question,
      answerPrefix: opts.answerPrefix ?? NIAH_DEFAULTS.answerPrefix,
      answers: [needle],
      maxNewTokens: opts.maxNewTokens ?? NIAH_DEFAULTS.maxNewTokens,
      task: 'niah',
      extra: { needle, needleDepth: depth },
    };
  });
}
