/**
 * RULER generator: the 13 tasks of the RULER benchmark, built for any tokenizer and any
 * target length instead of downloaded pre-tokenized for one model.
 *
 * Length convention (RULER's `max_seq_length`): tokens of context + question + answer prefix
 * (no BOS) plus the task's max_new_tokens stay ≤ contextLength; the haystack is grown until
 * one more unit would overflow, so every sample lands within one haystack unit (a noise
 * sentence, a word, a list entry, a distractor needle or a document) of the target.
 */
import { readFileSync } from 'node:fs';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { largestFitting } from './fit.js';
import { SeededRandom, seedFrom } from './random.js';
import { qaBuilder, readHotpotQa, readSquad, type QaCorpus } from './ruler-qa.js';
import {
  NOISE_SENTENCES,
  cweBuilder,
  fweBuilder,
  niahBuilder,
  vtBuilder,
  vtExample,
  type NiahConfig,
  type PromptBuilder,
  type PromptParts,
} from './ruler-synthetic.js';
import type { Sample } from './types.js';

export const RULER_TASKS = [
  'niah_single_1',
  'niah_single_2',
  'niah_single_3',
  'niah_multikey_1',
  'niah_multikey_2',
  'niah_multikey_3',
  'niah_multivalue',
  'niah_multiquery',
  'vt',
  'cwe',
  'fwe',
  'qa_1',
  'qa_2',
] as const;

export type RulerTask = (typeof RULER_TASKS)[number];

/** Tokens to generate per task family (RULER's constants; also the Python library's). */
export const RULER_MAX_NEW_TOKENS = { niah: 128, vt: 30, cwe: 120, fwe: 50, qa: 32 } as const;

/**
 * The family a task belongs to: "niah", "vt", "cwe", "fwe" or "qa".
 *
 * @example
 * rulerTaskFamily('niah_multikey_2'); // "niah"
 */
export function rulerTaskFamily(task: RulerTask): keyof typeof RULER_MAX_NEW_TOKENS {
  const head = task.split('_')[0]!;
  return head as keyof typeof RULER_MAX_NEW_TOKENS;
}

const NIAH_CONFIGS: Record<string, NiahConfig> = {
  niah_single_1: { haystack: 'repeat', keyType: 'words', valueType: 'numbers', numKeys: 1, numValues: 1, numQueries: 1 },
  niah_single_2: { haystack: 'essay', keyType: 'words', valueType: 'numbers', numKeys: 1, numValues: 1, numQueries: 1 },
  niah_single_3: { haystack: 'essay', keyType: 'words', valueType: 'uuids', numKeys: 1, numValues: 1, numQueries: 1 },
  niah_multikey_1: { haystack: 'essay', keyType: 'words', valueType: 'numbers', numKeys: 4, numValues: 1, numQueries: 1 },
  niah_multikey_2: { haystack: 'needle', keyType: 'words', valueType: 'numbers', numKeys: 1, numValues: 1, numQueries: 1 },
  niah_multikey_3: { haystack: 'needle', keyType: 'uuids', valueType: 'uuids', numKeys: 1, numValues: 1, numQueries: 1 },
  niah_multivalue: { haystack: 'essay', keyType: 'words', valueType: 'numbers', numKeys: 1, numValues: 4, numQueries: 1 },
  niah_multiquery: { haystack: 'essay', keyType: 'words', valueType: 'numbers', numKeys: 1, numValues: 1, numQueries: 4 },
};

/** Variable tracking: one chain of four hops (five variables). */
const VT_HOPS = 4;
/** RULER builds its variable-tracking example for a 500-token sequence. */
const VT_EXAMPLE_LENGTH = 500;

export interface RulerOptions {
  tokenizer: Tokenizer;
  /** Target sequence length in tokens: prompt + max_new_tokens (RULER's max_seq_length). */
  contextLength: number;
  /** Samples per task. */
  numSamples: number;
  /** Default 42, RULER's seed. */
  seed?: number;
  /** Default: all synthetic tasks, plus qa_1/qa_2 when their file is given. */
  tasks?: readonly RulerTask[];
  /** Plain-text prose for the "essay" haystacks (RULER uses Paul Graham essays); default: noise sentences. */
  haystackFile?: string;
  /** SQuAD-format JSON for qa_1. */
  squadFile?: string;
  /** HotpotQA-format JSON for qa_2. */
  hotpotqaFile?: string;
}

/** Context + question + answer prefix, measured as the model will read them (without BOS). */
function promptTokens(tokenizer: Tokenizer, p: PromptParts): number {
  return tokenizer.encode(p.context + p.question + p.answerPrefix, { bos: false }).length;
}

function proseWords(file: string | undefined): string[] {
  if (file === undefined) return NOISE_SENTENCES.join(' ').split(' ');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read haystack file (${(e as Error).message})`);
  }
  const words = text.split(/\s+/).filter((w) => w.length > 0);
  if (words.length === 0) throw new Error(`${file}: haystack file is empty`);
  return words;
}

/** The variable-tracking example, sized like RULER's (scaled down for short targets). */
function fitVtExample(tokenizer: Tokenizer, seed: number, contextLength: number): string {
  const budget = Math.min(VT_EXAMPLE_LENGTH, Math.floor(contextLength / 4)) - RULER_MAX_NEW_TOKENS.vt;
  const make = (sentences: number): string => vtExample(new SeededRandom(seedFrom(seed, 'vt', 'example')), VT_HOPS, sentences);
  const minSentences = NOISE_SENTENCES.length * (VT_HOPS + 1);
  const n = largestFitting((s) => tokenizer.encode(make(s), { bos: false }).length, budget, minSentences);
  return make(n ?? minSentences);
}

/**
 * Samples of one RULER task, each grown to fill `contextLength`.
 *
 * @example
 * const rows = generateRulerTask('vt', { tokenizer, contextLength: 4096, numSamples: 10 });
 * rows[0].answers; // the five variable names of the chain, e.g. ["QWERT", "ASDFG", …]
 */
export function generateRulerTask(task: RulerTask, opts: RulerOptions): Sample[] {
  const { tokenizer, contextLength, numSamples } = opts;
  const seed = opts.seed ?? 42;
  if (!RULER_TASKS.includes(task)) throw new Error(`unknown RULER task "${task}" (known: ${RULER_TASKS.join(', ')})`);
  if (!Number.isInteger(contextLength) || contextLength <= 0) throw new Error(`RULER context length must be a positive integer, got ${contextLength}`);
  if (!Number.isInteger(numSamples) || numSamples < 0) throw new Error(`RULER sample count must be a non-negative integer, got ${numSamples}`);

  const family = rulerTaskFamily(task);
  const maxNewTokens = RULER_MAX_NEW_TOKENS[family];
  let makeBuilder: (index: number, content: SeededRandom, layoutSeed: number) => PromptBuilder;
  if (family === 'niah') {
    const cfg = NIAH_CONFIGS[task]!;
    const words = cfg.haystack === 'essay' ? proseWords(opts.haystackFile) : [];
    makeBuilder = (_, content, layoutSeed) => niahBuilder(cfg, content, layoutSeed, words);
  } else if (family === 'vt') {
    const example = fitVtExample(tokenizer, seed, contextLength);
    makeBuilder = (_, content, layoutSeed) => vtBuilder(content, layoutSeed, VT_HOPS, example);
  } else if (family === 'cwe') {
    makeBuilder = (_, content, layoutSeed) => cweBuilder(content, layoutSeed, contextLength);
  } else if (family === 'fwe') {
    makeBuilder = (_, content, layoutSeed) => fweBuilder(content, layoutSeed, contextLength);
  } else {
    const file = task === 'qa_1' ? opts.squadFile : opts.hotpotqaFile;
    if (file === undefined) {
      throw new Error(`RULER ${task} needs a local ${task === 'qa_1' ? 'SQuAD-format file (squadFile)' : 'HotpotQA-format file (hotpotqaFile)'}`);
    }
    const corpus: QaCorpus = task === 'qa_1' ? readSquad(file) : readHotpotQa(file);
    if (numSamples > corpus.qas.length) {
      throw new Error(`${file}: RULER ${task} asked for ${numSamples} samples but the file has ${corpus.qas.length} usable questions`);
    }
    makeBuilder = (index, _, layoutSeed) => qaBuilder(corpus, index, layoutSeed);
  }

  const samples: Sample[] = [];
  let hint: number | undefined;
  for (let i = 0; i < numSamples; i++) {
    const builder = makeBuilder(i, new SeededRandom(seedFrom(seed, task, i, 'content')), seedFrom(seed, task, i, 'layout'));
    const lengthOf = (units: number): number => promptTokens(tokenizer, builder.build(units)) + maxNewTokens;
    const units = largestFitting(lengthOf, contextLength, builder.minUnits, { hint, maxUnits: builder.maxUnits });
    if (units === null) {
      throw new RulerFitError(
        `RULER ${task}: context length ${contextLength} is too small (the smallest sample needs ${lengthOf(builder.minUnits)} tokens)`,
      );
    }
    hint = units;
    const parts = builder.build(units);
    samples.push({
      id: `${task}-${i}`,
      ...parts,
      maxNewTokens,
      task,
      extra: { length: promptTokens(tokenizer, parts) + maxNewTokens },
    });
  }
  return samples;
}

/**
 * All requested RULER tasks, task after task. Without `tasks`, the eleven synthetic tasks
 * plus qa_1/qa_2 for whichever QA file is given.
 *
 * @example
 * const rows = generateRuler({ tokenizer, contextLength: 4096, numSamples: 20, squadFile: 'squad.json' });
 */
export function generateRuler(opts: RulerOptions & { onSkip?: (task: RulerTask, why: string) => void }): Sample[] {
  const tasks =
    opts.tasks ??
    RULER_TASKS.filter(
      (t) => (t !== 'qa_1' || opts.squadFile !== undefined) && (t !== 'qa_2' || opts.hotpotqaFile !== undefined),
    );
  // With the default task list, a task whose smallest sample exceeds a short window (the
  // embedded 512-token model) is skipped and reported instead of failing the whole run.
  const samples: Sample[] = [];
  for (const task of tasks) {
    try {
      for (const s of generateRulerTask(task, opts)) samples.push(s);
    } catch (e) {
      if (!(e instanceof RulerFitError) || opts.tasks !== undefined) throw e;
      opts.onSkip?.(task, e.message);
    }
  }
  if (samples.length === 0 && tasks.length > 0) {
    throw new RulerFitError(`RULER: context length ${opts.contextLength} is too small for every task (the shortest samples need more tokens)`);
  }
  return samples;
}

/** A task whose smallest sample does not fit the requested context length. */
export class RulerFitError extends Error {}
