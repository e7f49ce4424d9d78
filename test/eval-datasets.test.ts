import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  RULER_TASKS,
  STORY_NAMES,
  SeededRandom,
  continuationStories,
  generateRuler,
  generateRulerTask,
  largestFitting,
  loadJsonl,
  nameRecallStories,
  needleInHaystack,
  parseJsonl,
  seedFrom,
  storyBook,
  type RulerTask,
  type Sample,
} from '../src/eval/index.js';
import type { Tokenizer } from '../src/tokenizer/tokenizer.js';

/**
 * Lossless word-level tokenizer: whitespace runs, letter runs, single digits and single
 * other characters are tokens; ids are assigned on first sight.
 */
class WordTokenizer implements Tokenizer {
  readonly bosId = 1;
  readonly stopIds = [2];
  readonly chatTemplate = null;
  private readonly pieces: string[] = ['<unk>', '<s>', '</s>'];
  private readonly ids = new Map<string, number>();

  get vocabSize(): number {
    return this.pieces.length;
  }

  encode(text: string, opts?: { bos?: boolean }): number[] {
    const out = opts?.bos ? [this.bosId] : [];
    for (const [piece] of text.matchAll(/\s+|\p{L}+|\d|[^\s\p{L}\d]/gu)) {
      let id = this.ids.get(piece);
      if (id === undefined) {
        id = this.pieces.length;
        this.pieces.push(piece);
        this.ids.set(piece, id);
      }
      out.push(id);
    }
    return out;
  }

  decode(ids: readonly number[]): string {
    return ids.map((id) => (id > 2 ? this.pieces[id] : '')).join('');
  }

  decodePiece(_prev: number, id: number): string {
    return id > 2 ? this.pieces[id]! : '';
  }
}

const tokenizer = new WordTokenizer();
const tmp = mkdtempSync(join(tmpdir(), 'kvpress-eval-'));
const fullLength = (s: Sample): number =>
  tokenizer.encode(s.context + s.question + s.answerPrefix).length + s.maxNewTokens;

test('largestFitting finds the largest unit count under the budget', () => {
  assert.equal(largestFitting((n) => 7 + 3 * n, 100, 1), 31);
  assert.equal(largestFitting((n) => 7 + 3 * n, 100, 1, { hint: 5 }), 31);
  assert.equal(largestFitting((n) => 7 + 3 * n, 100, 1, { hint: 500 }), 31);
  assert.equal(largestFitting((n) => 7 + 3 * n, 100, 1, { maxUnits: 12 }), 12);
  assert.equal(largestFitting((n) => 7 + 3 * n, 5, 1), null);
  // Staircase growth (several units per extra token) still lands on the last fitting unit.
  assert.equal(largestFitting((n) => Math.floor(n / 4), 50, 0), 203);
});

test('seeded random is deterministic and covers its range', () => {
  const a = new SeededRandom(seedFrom(42, 'x', 1));
  const b = new SeededRandom(seedFrom(42, 'x', 1));
  const draws = Array.from({ length: 1000 }, () => a.int(0, 10));
  assert.deepEqual(draws, Array.from({ length: 1000 }, () => b.int(0, 10)));
  assert.equal(new Set(draws).size, 10);
  assert.notEqual(seedFrom(42, 'x', 1), seedFrom(42, 'x', 2));
  const picked = new SeededRandom(7).sampleIndices(20, 20);
  assert.deepEqual([...picked].sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i));
});

const SYNTHETIC = RULER_TASKS.filter((t) => !t.startsWith('qa'));
const TARGET = 4096;

test('RULER synthetic tasks: answers in context, length within 2 % of the target, deterministic', () => {
  const first = generateRuler({ tokenizer, contextLength: TARGET, numSamples: 2, seed: 7 });
  assert.deepEqual(
    [...new Set(first.map((s) => s.task))],
    SYNTHETIC,
    'without QA files only the eleven synthetic tasks are generated',
  );
  const expectedNew: Record<string, number> = { niah: 128, vt: 30, cwe: 120, fwe: 50 };
  for (const s of first) {
    for (const a of s.answers) assert.ok(s.context.includes(a), `${s.id}: answer "${a}" missing from context`);
    const len = fullLength(s);
    assert.ok(len <= TARGET && len >= 0.98 * TARGET, `${s.id}: length ${len} not within 2 % of ${TARGET}`);
    assert.equal(s.extra?.['length'], len);
    assert.equal(s.maxNewTokens, expectedNew[s.task.split('_')[0]!]);
  }
  const again = generateRuler({ tokenizer, contextLength: TARGET, numSamples: 2, seed: 7 });
  assert.deepEqual(again, first);
  const other = generateRulerTask('niah_single_1', { tokenizer, contextLength: TARGET, numSamples: 1, seed: 8 });
  assert.notDeepEqual(other[0]!.answers, first.find((s) => s.task === 'niah_single_1')!.answers);
});

test('RULER task definitions: needles, queries, chains, word lists', () => {
  const one = (task: RulerTask, contextLength = 2048): Sample =>
    generateRulerTask(task, { tokenizer, contextLength, numSamples: 1, seed: 3 })[0]!;

  const single = one('niah_single_1');
  assert.match(single.context, /^A special magic number is hidden within the following text\./);
  assert.match(single.answers[0]!, /^\d{7}$/);
  assert.match(single.context, new RegExp(`One of the special magic numbers for [a-z]+-[a-z]+ is: ${single.answers[0]}\\.`));
  assert.match(single.question, /^What is the special magic number for [a-z]+-[a-z]+ mentioned in the provided text\? $/);
  assert.match(single.answerPrefix, /^The special magic number for .* mentioned in the provided text is$/);
  assert.ok(single.context.includes('The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n'));

  const uuid = one('niah_single_3');
  assert.match(uuid.answers[0]!, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);

  const multiKey = one('niah_multikey_2');
  const needles = multiKey.context.match(/One of the special magic numbers for /g)!.length;
  assert.ok(needles > 20, `distractor needles fill the haystack (${needles})`);
  const key = /for (\S+) mentioned/.exec(multiKey.question)![1]!;
  assert.equal(multiKey.context.split(`for ${key} is:`).length, 2, 'the queried key appears exactly once');

  const multiValue = one('niah_multivalue');
  assert.equal(multiValue.answers.length, 4);
  assert.match(multiValue.question, /^What are all the special magic numbers for /);
  const multiQuery = one('niah_multiquery');
  assert.equal(multiQuery.answers.length, 4);
  assert.match(multiQuery.question, /for [a-z]+-[a-z]+, [a-z]+-[a-z]+, [a-z]+-[a-z]+, and [a-z]+-[a-z]+ mentioned/);

  const vt = one('vt');
  assert.equal(vt.answers.length, 5);
  for (const v of vt.answers) assert.match(v, /^[A-Z]{5}$/);
  const value = /value (\d{5}) in the text/.exec(vt.question)![1]!;
  assert.ok(vt.context.includes(`VAR ${vt.answers[0]} = ${value}`));
  for (let j = 1; j < 5; j++) assert.ok(vt.context.includes(`VAR ${vt.answers[j]} = VAR ${vt.answers[j - 1]} `));
  assert.match(vt.answerPrefix, /5 variables are assgined the value \d{5}, they are: $/);
  assert.match(vt.context, /^ Memorize and track/, 'the one-shot example comes first');

  for (const [contextLength, common, uncommon] of [
    [2048, 6, 1],
    [4096, 30, 3],
  ] as const) {
    const cwe = one('cwe', contextLength);
    const main = cwe.context.slice(cwe.context.lastIndexOf('Memorize the ones that appear most often.\n'));
    const counts = new Map<string, number>();
    for (const m of main.matchAll(/\d+\. (\S+)/g)) counts.set(m[1]!, (counts.get(m[1]!) ?? 0) + 1);
    assert.equal(cwe.answers.length, 10);
    for (const [w, c] of counts) assert.equal(c, cwe.answers.includes(w) ? common : uncommon, `${contextLength}: count of ${w}`);
    const len = fullLength(cwe);
    assert.ok(len <= contextLength && len >= 0.98 * contextLength, `cwe at ${contextLength}: length ${len}`);
  }

  const fwe = one('fwe');
  const counts = new Map<string, number>();
  for (const w of fwe.context.slice(fwe.context.indexOf('coded words. ') + 13).trim().split(' ')) {
    counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  const ranked = [...counts].filter(([w]) => w !== '...').sort((a, b) => b[1] - a[1]);
  assert.deepEqual(ranked.slice(0, 3).map(([w]) => w), fwe.answers);
  assert.ok(ranked[2]![1] > ranked[3]![1], 'the third answer is strictly more frequent than the fourth word');
  assert.ok(counts.get('...')! > ranked[0]![1], '"..." is the most frequent token');
});

test('RULER essay haystack from a local file, QA tasks from local SQuAD / HotpotQA files', () => {
  const essay = join(tmp, 'essay.txt');
  writeFileSync(essay, 'Zebras graze quietly. Otters float downstream! Would herons wait? Nobody knows.\n');
  const [withFile] = generateRulerTask('niah_multikey_1', { tokenizer, contextLength: 2048, numSamples: 1, haystackFile: essay });
  assert.ok(withFile!.context.includes('Otters float downstream!'));
  assert.ok(!withFile!.context.includes('The grass is green.'));
  for (const a of withFile!.answers) assert.ok(withFile!.context.includes(a));

  const topics = ['river', 'castle', 'violin', 'glacier', 'harbor', 'comet', 'orchard', 'lantern'];
  const paragraph = (t: string, k: number): string =>
    `The ${t} number ${k} was first described by a traveller who wrote that the ${t} stood near a quiet village for many years.`;
  const squad = join(tmp, 'squad.json');
  writeFileSync(
    squad,
    JSON.stringify({
      data: topics.map((t) => ({
        paragraphs: Array.from({ length: 5 }, (_, k) => ({
          context: paragraph(t, k),
          qas: [
            { question: `Who described ${t} ${k}?`, answers: [{ text: 'a traveller' }], is_impossible: false },
            { question: 'Unanswerable?', answers: [], is_impossible: true },
          ],
        })),
      })),
    }),
  );
  const hotpot = join(tmp, 'hotpot.json');
  writeFileSync(
    hotpot,
    JSON.stringify(
      topics.map((t, i) => ({
        question: `Where did the ${t} stand?`,
        answer: `village ${i}`,
        context: [
          [`${t} facts`, [`The ${t} stood near village ${i}. `, 'It was old.']],
          [`${t} rumours`, ['Some said otherwise.']],
        ],
      })),
    ),
  );
  const qa = generateRuler({ tokenizer, contextLength: 1024, numSamples: 3, squadFile: squad, hotpotqaFile: hotpot, tasks: ['qa_1', 'qa_2'] });
  assert.equal(qa.length, 6);
  for (const s of qa) {
    assert.equal(s.maxNewTokens, 32);
    assert.equal(s.answerPrefix, 'Answer:');
    assert.match(s.question, /^Answer the question based on the given documents\..*\n\nQuestion: .+\? $/s);
    for (const a of s.answers) assert.ok(s.context.includes(a), `${s.id}: answer "${a}" missing`);
    assert.ok(fullLength(s) <= 1024);
    assert.ok((s.context.match(/Document \d+:\n/g) ?? []).length > 2);
  }
  assert.equal(qa[0]!.question.includes('Who described'), true);
  assert.throws(() => generateRuler({ tokenizer, contextLength: 1024, numSamples: 1, tasks: ['qa_1'] }), /qa_1 needs a local SQuAD-format file/);
  const broken = join(tmp, 'broken.json');
  writeFileSync(broken, '{"data": [{"oops": 1}]}');
  assert.throws(() => generateRulerTask('qa_1', { tokenizer, contextLength: 1024, numSamples: 1, squadFile: broken }), /broken\.json: not a SQuAD-format file/);
  assert.throws(() => generateRulerTask('vt', { tokenizer, contextLength: 100, numSamples: 1 }), /context length 100 is too small/);
});

test('NIAH inserts the needle tokens at floor(len·depth/100) of the truncated haystack', () => {
  const words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta', 'iota', 'kappa', 'lambda', 'mu'];
  const file = join(tmp, 'haystack.txt');
  writeFileSync(file, words.join(' ') + ' ');
  // needle "NEEDLE." is 2 tokens; 172 − 2 − 150 leaves 20 haystack tokens = 10 words and their spaces.
  const rows = needleInHaystack({ tokenizer, maxContextLength: 172, depths: [0, 50, 100], haystackFile: file, needle: 'NEEDLE.' });
  const book = (inner: string): string => `This is a very long story book: <book> ${inner} </book>.`;
  const ten = words.slice(0, 10).map((w) => w + ' ');
  assert.equal(rows[0]!.context, book('NEEDLE.' + ten.join('')));
  assert.equal(rows[1]!.context, book(ten.slice(0, 5).join('') + 'NEEDLE.' + ten.slice(5).join('')));
  assert.equal(rows[2]!.context, book(ten.join('') + 'NEEDLE.'));
  assert.deepEqual(rows[1]!.answers, ['NEEDLE.']);
  assert.deepEqual(rows[1]!.extra, { needle: 'NEEDLE.', needleDepth: 50 });
  assert.equal(rows[1]!.task, 'niah');

  const built = needleInHaystack({ tokenizer, maxContextLength: 1024, depths: [33] });
  const inner = built[0]!.context;
  assert.ok(inner.includes('The best thing to do in San Francisco is eat a sandwich'));
  assert.ok(inner.includes('Once upon a time'), 'the default haystack is generated stories');
  assert.ok(tokenizer.encode(inner).length <= 1024);
  assert.deepEqual(needleInHaystack({ tokenizer, maxContextLength: 1024, depths: [33] }), built);
  assert.throws(() => needleInHaystack({ tokenizer, maxContextLength: 1024, depths: [120] }), /depth must be a percentage/);
  assert.throws(() => needleInHaystack({ tokenizer, maxContextLength: 100, depths: [0] }), /must exceed the needle/);
});

test('JSONL loader: Python dataset format, defaults, extras and one-line errors', () => {
  const text = [
    '\uFEFF{"context": "C1", "question": "Q1?", "answer_prefix": "A:", "answers": ["x", "y"], "max_new_tokens": 16, "task": "hotpotqa", "all_classes": null}',
    '',
    '{"context": "C2", "answer": 204, "max_new_tokens": 8, "id": 7}',
    '{"context": "C3", "answer": "z"}',
  ].join('\n');
  const rows = parseJsonl(text, 'data/aime25.jsonl', { defaultMaxNewTokens: 4 });
  assert.deepEqual(rows, [
    { id: 'hotpotqa-1', context: 'C1', question: 'Q1?', answerPrefix: 'A:', answers: ['x', 'y'], maxNewTokens: 16, task: 'hotpotqa', extra: { all_classes: null } },
    { id: '7', context: 'C2', question: '', answerPrefix: '', answers: ['204'], maxNewTokens: 8, task: 'aime25' },
    { id: 'aime25-4', context: 'C3', question: '', answerPrefix: '', answers: ['z'], maxNewTokens: 4, task: 'aime25' },
  ]);
  const bad = (body: string, message: RegExp): void => assert.throws(() => parseJsonl(body, 'f.jsonl'), message);
  bad('{"context": "c", "answer": "a", "max_new_tokens": 1}\n{oops', /^Error: f\.jsonl:2: invalid JSON/);
  bad('[1, 2]', /^Error: f\.jsonl:1: a row must be a JSON object$/);
  bad('{"answer": "a", "max_new_tokens": 1}', /^Error: f\.jsonl:1: "context" must be a string$/);
  bad('{"context": "c", "max_new_tokens": 1}', /^Error: f\.jsonl:1: missing "answers" \(or "answer"\)$/);
  bad('{"context": "c", "answers": [], "max_new_tokens": 1}', /^Error: f\.jsonl:1: "answers" must be a string, a number, or a non-empty list of them$/);
  bad('{"context": "c", "answer": "a"}', /^Error: f\.jsonl:1: missing "max_new_tokens" \(and no default given\)$/);
  bad('{"context": "c", "answer": "a", "max_new_tokens": 0.5}', /^Error: f\.jsonl:1: "max_new_tokens" must be a positive integer, got 0\.5$/);
  bad('{"context": "c", "answer": "a", "max_new_tokens": 1, "question": 3}', /^Error: f\.jsonl:1: "question" must be a string$/);
  bad('\n\n', /^Error: f\.jsonl: no rows$/);

  const file = join(tmp, 'rows.jsonl');
  writeFileSync(file, '{"context": "c", "answers": "a", "max_new_tokens": 3}\n');
  assert.equal(loadJsonl(file)[0]!.task, 'rows');
  assert.throws(() => loadJsonl(join(tmp, 'missing.jsonl')), /missing\.jsonl: cannot read dataset/);
});

const wordCount = (s: string): number => s.split(/\s+/).filter((w) => w.length > 0).length;

test('continuation stories: deterministic per seed, TinyStories-like, 60–150 words', () => {
  const a = continuationStories({ count: 30, seed: 5 });
  assert.deepEqual(continuationStories({ count: 30, seed: 5 }), a);
  assert.notDeepEqual(continuationStories({ count: 30, seed: 6 }), a);
  assert.equal(new Set(a.map((s) => s.text)).size, 30, 'stories are distinct');
  for (const s of a) {
    const n = wordCount(s.text);
    assert.ok(n >= 60 && n <= 150, `${s.id}: ${n} words`);
    assert.match(s.text, /^(Once upon a time|There was once)/);
    assert.ok(!s.text.includes('\u0001'));
  }
});

test('name recall stories: the answer is introduced early and the prefix stops before a late mention', () => {
  const items = nameRecallStories({ count: 40, seed: 11 });
  assert.deepEqual(nameRecallStories({ count: 40, seed: 11 }), items);
  let saidTags = 0;
  for (const it of items) {
    assert.ok(STORY_NAMES.includes(it.answer));
    assert.ok(it.text.startsWith(it.prefix + ' ' + it.answer), `${it.id}: text continues with the name`);
    assert.ok(new RegExp(`\\b${it.answer}\\b`).test(it.prefix), `${it.id}: name appears earlier`);
    assert.ok(it.prefix.length >= 0.4 * it.text.length - 1);
    const n = wordCount(it.text);
    assert.ok(n >= 100 && n <= 180, `${it.id}: ${n} words`);
    if (/(said|asked)$/.test(it.prefix)) saidTags++;
  }
  assert.ok(saidTags >= 30, `most cuts are dialogue tags (${saidTags}/40)`);
  assert.ok(new Set(items.map((i) => i.answer)).size >= 8, 'names vary');
});

test('story book reaches the requested token count', () => {
  const book = storyBook(tokenizer, 3000, 1);
  assert.ok(tokenizer.encode(book).length >= 3000);
  assert.equal(storyBook(tokenizer, 3000, 1), book);
});
