/**
 * The synthetic RULER tasks (Hsieh et al. 2024, NVIDIA/RULER): needle retrieval in eight
 * variants, variable tracking, common-words and frequent-words extraction. Each builder
 * draws a sample's content once and then lays it out for any haystack size, so the caller
 * can search for the size that fills the token budget.
 *
 * The prompt wording follows RULER's templates (including its "assgined" typo) so that
 * scores stay comparable with published RULER numbers, and the context/question/answer
 * prefix split follows the Python library's RULER export.
 */
import { SeededRandom } from './random.js';
import { ADJECTIVES, NOUNS, VERBS } from './words.js';

/** The text parts of one sample, before its length is measured. */
export interface PromptParts {
  context: string;
  question: string;
  answerPrefix: string;
  answers: string[];
}

/** One sample's content, laid out for `units` units of haystack (deterministic in units). */
export interface PromptBuilder {
  /** Fewest units the layout accepts. */
  readonly minUnits: number;
  /** Most units there are (QA: number of documents); unbounded when absent. */
  readonly maxUnits?: number;
  build(units: number): PromptParts;
}

/** RULER's filler: five short sentences, repeated. */
export const NOISE_SENTENCES: readonly string[] = [
  'The grass is green.',
  'The sky is blue.',
  'The sun is yellow.',
  'Here we go.',
  'There and back again.',
];

export type NeedleType = 'numbers' | 'words' | 'uuids';

/** How a needle task is configured (RULER's synthetic.yaml arguments). */
export interface NiahConfig {
  /** repeat: noise lines; essay: prose (a file, or noise sentences); needle: distractor needles. */
  haystack: 'repeat' | 'essay' | 'needle';
  keyType: NeedleType;
  valueType: NeedleType;
  numKeys: number;
  numValues: number;
  numQueries: number;
}

/** Insertion depths (percent) for prose haystacks: 40 evenly spaced values, rounded. */
const DEPTHS: readonly number[] = Array.from({ length: 40 }, (_, k) => Math.round((k * 100) / 39));

function randomWordPair(rng: SeededRandom): string {
  return `${rng.pick(ADJECTIVES)}-${rng.pick(NOUNS)}`;
}

function randomUuid(rng: SeededRandom): string {
  const words = [rng.nextUint32(), rng.nextUint32(), rng.nextUint32(), rng.nextUint32()];
  // Version 4 and RFC 4122 variant bits, as uuid.UUID(int=…, version=4) sets them.
  words[1] = ((words[1]! & 0xffff0fff) | 0x00004000) >>> 0;
  words[2] = ((words[2]! & 0x3fffffff) | 0x80000000) >>> 0;
  const hex = words.map((w) => w.toString(16).padStart(8, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function randomValue(rng: SeededRandom, type: NeedleType): string {
  if (type === 'numbers') return String(rng.int(1_000_000, 10_000_000));
  if (type === 'words') return randomWordPair(rng);
  return randomUuid(rng);
}

function needleSentence(type: NeedleType, key: string, value: string): string {
  return `One of the special magic ${type} for ${key} is: ${value}.`;
}

/** Sentences of prose: split after . ! or ? followed by whitespace. */
function splitSentences(text: string): string[] {
  return text.split(/(?<=[.!?])\s+/).filter((s) => s.length > 0);
}

/** `n` noise sentences grouped five to a line (the last line may be shorter). */
function noiseLines(n: number): string[] {
  const lines: string[] = [];
  for (let start = 0; start < n; start += NOISE_SENTENCES.length) {
    const count = Math.min(NOISE_SENTENCES.length, n - start);
    lines.push(NOISE_SENTENCES.slice(0, count).join(' '));
  }
  return lines;
}

/** Inserts `items` into `lines` at distinct random line indices (in place). */
function insertAtRandomLines(rng: SeededRandom, lines: string[], items: readonly string[]): void {
  const indexes = rng.sampleIndices(lines.length, items.length).sort((a, b) => b - a);
  indexes.forEach((index, i) => lines.splice(index, 0, items[i]!));
}

/**
 * A needle-in-a-haystack sample (niah_single_*, niah_multikey_*, niah_multivalue, niah_multiquery).
 *
 * @example
 * const cfg = { haystack: 'repeat', keyType: 'words', valueType: 'numbers', numKeys: 1, numValues: 1, numQueries: 1 } as const;
 * niahBuilder(cfg, new SeededRandom(1), 2, []).build(50).answers; // one 7-digit number, e.g. ["4821907"]
 */
export function niahBuilder(
  cfg: NiahConfig,
  content: SeededRandom,
  layoutSeed: number,
  proseWords: readonly string[],
): PromptBuilder {
  const numKeys = Math.max(cfg.numKeys, cfg.numQueries);
  const keys: string[] = [];
  const values: string[][] = [];
  const needles: string[] = [];
  const usedKeys = new Set<string>();
  while (keys.length < numKeys) {
    const key = randomValue(content, cfg.keyType);
    if (usedKeys.has(key)) continue;
    usedKeys.add(key);
    keys.push(key);
    const vals = Array.from({ length: cfg.numValues }, () => randomValue(content, cfg.valueType));
    values.push(vals);
    for (const v of vals) needles.push(needleSentence(cfg.valueType, key, v));
  }
  content.shuffle(needles);
  const queried = content.sampleIndices(numKeys, cfg.numQueries);
  const queries = queried.map((i) => keys[i]!);
  const answers = queried.flatMap((i) => values[i]!);
  const query =
    queries.length > 1 ? `${queries.slice(0, -1).join(', ')}, and ${queries[queries.length - 1]}` : queries[0]!;

  const single = cfg.numQueries * cfg.numValues === 1;
  const label = single ? cfg.valueType.slice(0, -1) : cfg.valueType;
  const header = single
    ? `A special magic ${label} is hidden within the following text. Make sure to memorize it. I will quiz you about the ${label} afterwards.\n`
    : `Some special magic ${label} are hidden within the following text. Make sure to memorize it. I will quiz you about the ${label} afterwards.\n`;
  const question = single
    ? `What is the special magic ${label} for ${query} mentioned in the provided text? `
    : `What are all the special magic ${label} for ${query} mentioned in the provided text? `;
  const answerPrefix = `The special magic ${label} for ${query} mentioned in the provided text ${single ? 'is' : 'are'}`;

  const haystack = (units: number): string => {
    const rng = new SeededRandom(layoutSeed);
    if (cfg.haystack === 'essay') {
      const words: string[] = [];
      for (let i = 0; i < units; i++) words.push(proseWords[i % proseWords.length]!);
      const sentences = splitSentences(words.join(' '));
      const cuts = rng
        .sample(DEPTHS, needles.length)
        .map((d) => Math.floor((sentences.length * d) / 100))
        .sort((a, b) => a - b);
      const parts: string[] = [];
      let last = 0;
      cuts.forEach((cut, i) => {
        if (cut > last) parts.push(sentences.slice(last, cut).join(' '));
        parts.push(needles[i]!);
        last = cut;
      });
      if (last < sentences.length) parts.push(sentences.slice(last).join(' '));
      return parts.join(' ');
    }
    let lines: string[];
    if (cfg.haystack === 'repeat') {
      lines = noiseLines(units);
    } else {
      lines = [];
      while (lines.length < units) {
        const key = randomValue(rng, cfg.keyType);
        // A distractor reusing a real key would make the answer ambiguous.
        if (usedKeys.has(key)) continue;
        lines.push(needleSentence(cfg.valueType, key, randomValue(rng, cfg.valueType)));
      }
    }
    insertAtRandomLines(rng, lines, needles);
    return lines.join('\n');
  };

  const minUnits =
    cfg.haystack === 'repeat' ? NOISE_SENTENCES.length * needles.length : cfg.haystack === 'needle' ? needles.length : 10;
  return {
    minUnits,
    build: (units) => ({ context: header + haystack(units) + '\n', question, answerPrefix, answers }),
  };
}

const VT_HEADER = 'Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n';

function vtQuestion(value: string): string {
  return `Question: Find all variables that are assigned the value ${value} in the text above. `;
}

function vtAnswerPrefix(numVars: number, value: string): string {
  // "assgined" is RULER's spelling; kept so that prompts match the published benchmark.
  return `Answer: According to the chain(s) of variable assignment in the text above, ${numVars} variables are assgined the value ${value}, they are: `;
}

/** A chain "VAR A = 12345", "VAR B = VAR A ", … with distinct upper-case names of `nameLength` letters. */
function variableChain(rng: SeededRandom, hops: number, nameLength: number): { names: string[]; statements: string[]; value: string } {
  const names: string[] = [];
  while (names.length < hops + 1) {
    let name = '';
    for (let i = 0; i < nameLength; i++) name += String.fromCharCode(65 + rng.int(0, 26));
    if (!names.includes(name)) names.push(name);
  }
  const value = String(rng.int(10000, 99999));
  const statements = [`VAR ${names[0]} = ${value}`];
  for (let j = 0; j < hops; j++) statements.push(`VAR ${names[j + 1]} = VAR ${names[j]} `);
  return { names, statements, value };
}

/** Noise lines (each ending in a newline) with the chain statements inserted in order at random lines. */
function vtText(rng: SeededRandom, sentences: number, statements: readonly string[]): string {
  const lines = noiseLines(sentences).map((l) => l + '\n');
  const positions = rng.sampleIndices(lines.length, statements.length).sort((a, b) => a - b);
  positions.forEach((p, j) => lines.splice(p + j, 0, statements[j]!));
  return lines.join(' ');
}

/**
 * The one-shot example RULER puts before every variable-tracking prompt: a short chain with
 * three-letter names in `sentences` noise sentences, followed by its answer.
 *
 * @example
 * vtExample(new SeededRandom(1), 4, 25); // "Memorize and track … they are:  ABC DEF GHI JKL MNO"
 */
export function vtExample(rng: SeededRandom, hops: number, sentences: number): string {
  const chain = variableChain(rng, hops, 3);
  const text = vtText(rng, sentences, chain.statements);
  return (
    VT_HEADER +
    text +
    '\n' +
    vtQuestion(chain.value) +
    vtAnswerPrefix(hops + 1, chain.value) +
    ' ' +
    chain.names.join(' ')
  );
}

/**
 * A variable-tracking sample: find every variable that holds the chain's value.
 *
 * @example
 * vtBuilder(new SeededRandom(1), 2, 4, '').build(40).answers; // five 5-letter names, e.g. ["QWERT", …]
 */
export function vtBuilder(content: SeededRandom, layoutSeed: number, hops: number, example: string): PromptBuilder {
  const chain = variableChain(content, hops, 5);
  const prefix = ' ' + example + '\n\n\n\n' + VT_HEADER;
  return {
    minUnits: NOISE_SENTENCES.length * (hops + 1),
    build: (units) => ({
      context: prefix + vtText(new SeededRandom(layoutSeed), units, chain.statements) + '\n',
      question: vtQuestion(chain.value),
      answerPrefix: vtAnswerPrefix(hops + 1, chain.value),
      answers: chain.names,
    }),
  };
}

const BASE_WORDS: readonly string[] = [...new Set([...NOUNS, ...ADJECTIVES, ...VERBS])].sort();

/** `n` distinct words; hyphenated pairs (triples…) of base words once the base list runs out. */
function uniqueWords(rng: SeededRandom, n: number): string[] {
  const base = BASE_WORDS.length;
  let arity = 1;
  let capacity = base;
  while (capacity < n) {
    arity++;
    capacity *= base;
  }
  return rng.sampleIndices(capacity, n).map((index) => {
    const parts: string[] = [];
    for (let a = 0; a < arity; a++) {
      parts.push(BASE_WORDS[index % base]!);
      index = Math.floor(index / base);
    }
    return parts.join('-');
  });
}

const CWE_HEADER =
  'Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n';
const CWE_QUESTION = 'Question: What are the 10 most common words in the above list? ';
const CWE_ANSWER_PREFIX = 'Answer: The top 10 words that appear most often in the list are:';
const CWE_COMMON = 10;

function numbered(words: readonly string[]): string {
  return words.map((w, i) => `${i + 1}. ${w}`).join(' ');
}

/** A word list where the first CWE_COMMON words repeat `common` times and the rest `uncommon` times. */
function cweList(rng: SeededRandom, numWords: number, common: number, uncommon: number): { list: string; answers: string[] } {
  const words = uniqueWords(rng, numWords);
  const answers = words.slice(0, CWE_COMMON);
  const list: string[] = [];
  for (const w of answers) for (let r = 0; r < common; r++) list.push(w);
  for (const w of words.slice(CWE_COMMON)) for (let r = 0; r < uncommon; r++) list.push(w);
  rng.shuffle(list);
  return { list: numbered(list), answers };
}

/**
 * A common-words-extraction sample with a one-shot example. RULER uses lighter repetition
 * below 4096 tokens (example 20 words ×3/×1, list ×6/×1) than from 4096 on (40 words
 * ×10/×3, list ×30/×3).
 *
 * @example
 * cweBuilder(new SeededRandom(1), 2, 8192).build(200).answers.length; // 10 words, each listed 30 times
 */
export function cweBuilder(content: SeededRandom, layoutSeed: number, contextLength: number): PromptBuilder {
  const short = contextLength < 4096;
  const ex = short ? cweList(content, 20, 3, 1) : cweList(content, 40, 10, 3);
  const example = CWE_HEADER + ex.list + '\n' + CWE_QUESTION + CWE_ANSWER_PREFIX + ' ' + numbered(ex.answers);
  const [common, uncommon] = short ? [6, 1] : [30, 3];
  return {
    minUnits: CWE_COMMON,
    build: (units) => {
      const main = cweList(new SeededRandom(layoutSeed), units, common, uncommon);
      return {
        context: example + '\n' + CWE_HEADER + main.list + '\n',
        question: CWE_QUESTION,
        answerPrefix: CWE_ANSWER_PREFIX,
        answers: main.answers,
      };
    },
  };
}

const FWE_HEADER =
  'Read the following coded text and track the frequency of each coded word. Find the three most frequently appeared coded words. ';
const FWE_QUESTION =
  "Question: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text? ";
const FWE_ANSWER_PREFIX = 'Answer: According to the coded text above, the three most frequently appeared words are:';
/** ζ(2): normaliser of the Zipf law with exponent 2 that RULER uses for word counts. */
const ZETA_2 = (Math.PI * Math.PI) / 6;

/**
 * A frequent-words-extraction sample: random six-letter "coded" words whose counts follow
 * Zipf's law (count of rank k = ⌊n·k⁻²/ζ(2)⌋); the top rank is "..." noise, so the answers
 * are ranks 2–4. The vocabulary has contextLength/50 words, as in RULER.
 *
 * @example
 * fweBuilder(new SeededRandom(1), 2, 4096).build(1000).answers; // three coded words, e.g. ["qhzkra", …]
 */
export function fweBuilder(content: SeededRandom, layoutSeed: number, contextLength: number): PromptBuilder {
  const vocabSize = Math.max(5, Math.floor(contextLength / 50));
  const seen = new Set<string>();
  while (seen.size < vocabSize) {
    let w = '';
    for (let i = 0; i < 6; i++) w += String.fromCharCode(97 + content.int(0, 26));
    seen.add(w);
  }
  const vocab = content.shuffle([...seen].sort());
  vocab[0] = '...';
  const answers = vocab.slice(1, 4);
  return {
    // Below ~100 words ranks 2–4 can tie or vanish.
    minUnits: 100,
    build: (units) => {
      const words: string[] = [];
      vocab.forEach((w, k) => {
        const count = Math.floor((units * (k + 1) ** -2) / ZETA_2);
        for (let r = 0; r < count; r++) words.push(w);
      });
      new SeededRandom(layoutSeed).shuffle(words);
      return { context: FWE_HEADER + words.join(' ') + '\n', question: FWE_QUESTION, answerPrefix: FWE_ANSWER_PREFIX, answers };
    },
  };
}
