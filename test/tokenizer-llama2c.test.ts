import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { Llama2cTokenizer, loadLlama2cTokenizer } from '../src/tokenizer/llama2c.js';
import { packageRoot } from '../src/model/load.js';
import { mulberry32 } from './fixtures/tiny-models.js';

/**
 * The encoder as it was before it became linear (run.c's greedy BPE, one argmax scan per merge),
 * kept here as an independent slow reference: the fast encoder must give the same ids.
 */
function slowEncode(vocab: string[], scores: Float32Array, text: string, bos: boolean): number[] {
  const pieceIds = new Map<string, number>();
  vocab.forEach((p, i) => { if (!pieceIds.has(p)) pieceIds.set(p, i); });
  const ids: number[] = bos ? [1] : [];
  if (text.length === 0) return ids;
  const pieces: number[] = [];
  const dummy = pieceIds.get(' ');
  if (dummy !== undefined) pieces.push(dummy);
  for (const ch of text) {
    const id = pieceIds.get(ch);
    if (id !== undefined) pieces.push(id);
    else for (const b of new TextEncoder().encode(ch)) pieces.push(b + 3);
  }
  for (;;) {
    let bestIdx = -1, best = -Infinity, bestId = -1;
    for (let i = 0; i + 1 < pieces.length; i++) {
      const id = pieceIds.get(vocab[pieces[i]] + vocab[pieces[i + 1]]);
      if (id !== undefined && scores[id] > best) {
        best = scores[id];
        bestIdx = i;
        bestId = id;
      }
    }
    if (bestIdx < 0) break;
    pieces.splice(bestIdx, 2, bestId);
  }
  for (const p of pieces) ids.push(p);
  return ids;
}

const root = packageRoot();
const tok = loadLlama2cTokenizer(join(root, 'models/stories260K/tok512.bin'), 512);
const reference = JSON.parse(readFileSync(join(root, 'models/stories260K/reference.json'), 'utf8')) as { cases: { prompt: string; promptTokens: number[] }[] };

/** Random text over an alphabet with words, runs of spaces, punctuation, multi-byte and unpaired characters. */
function randomText(r: () => number, len: number, alphabet: string[]): string {
  let s = '';
  while (s.length < len) s += alphabet[Math.floor(r() * alphabet.length)];
  return s;
}

const ALPHABET = [...'abcdefghijklmnopqrstuvwxyz', 'the', ' a', 'ing', ' ', ' ', ' ', '  ', '\n', '\t', '.', ',', '!', '"', "'", 'Lily', ' Tom', 'é', 'ß', '漢', '🙂', '\uD800', '\u0000', '0', '9'];

test('tokenizer reproduces reference.json prompt tokens', () => {
  for (const c of reference.cases) assert.deepEqual(tok.encode(c.prompt, { bos: true }), c.promptTokens);
});

test('fast encode equals the slow reference on real texts', () => {
  const texts = [readFileSync(join(root, 'examples/story.txt'), 'utf8'), readFileSync(join(root, 'README.md'), 'utf8').slice(0, 20000)];
  for (const t of texts) {
    for (const line of t.split('\n')) assert.deepEqual(tok.encode(line, { bos: true }), slowEncode(tok.vocab, tok.scores, line, true), JSON.stringify(line));
    assert.deepEqual(tok.encode(t.slice(0, 4000)), slowEncode(tok.vocab, tok.scores, t.slice(0, 4000), false));
  }
});

test('fast encode equals the slow reference on 500 random texts (tok512)', () => {
  const r = mulberry32(1234);
  for (let k = 0; k < 500; k++) {
    const text = randomText(r, 1 + Math.floor(r() * 200), ALPHABET);
    assert.deepEqual(tok.encode(text, { bos: k % 2 === 0 }), slowEncode(tok.vocab, tok.scores, text, k % 2 === 0), JSON.stringify(text));
  }
});

test('fast encode equals the slow reference on random vocabularies with tied, NaN and -Inf scores and inner spaces', () => {
  const r = mulberry32(99);
  const letters = [...'ab c'];
  for (let v = 0; v < 60; v++) {
    // Ids 0..2 specials, 3..258 byte fallback, then single letters and random merges of them.
    const vocab = ['<unk>', '<s>', '</s>', ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`), ...letters];
    const extra = 20 + Math.floor(r() * 60);
    for (let i = 0; i < extra; i++) {
      const a = vocab[259 + Math.floor(r() * (vocab.length - 259))], b = vocab[259 + Math.floor(r() * (vocab.length - 259))];
      vocab.push(a + b);
    }
    const scores = Float32Array.from(vocab, () => {
      const x = r();
      return x < 0.05 ? NaN : x < 0.1 ? -Infinity : Math.floor(r() * 6); // few distinct values: many ties
    });
    const t = new Llama2cTokenizer(vocab, scores);
    for (let k = 0; k < 20; k++) {
      const text = randomText(r, 1 + Math.floor(r() * 120), ['a', 'b', 'c', ' ', 'd', '  ']);
      assert.deepEqual(t.encode(text), slowEncode(vocab, scores, text, false), `vocab ${v} text ${JSON.stringify(text)}`);
    }
  }
});

test('10⁶ characters encode without a stack overflow (text, one run with no spaces, binary)', () => {
  const words = tok.encode('Once upon a time, there was a little girl. '.repeat(25000));
  assert.ok(words.length > 100000);
  const han = tok.encode('漢'.repeat(1_000_000));
  assert.equal(han.length, 3_000_001); // dummy prefix + 3 byte-fallback tokens per character
  const r = mulberry32(5);
  const binary = String.fromCharCode(...Array.from({ length: 1000 }, () => Math.floor(r() * 256))).repeat(1000);
  assert.ok(tok.encode(binary).length >= 1_000_000 / 4);
});

test('encode and decode reject what is not text or token ids, in the library\'s words', () => {
  assert.throws(() => tok.encode(null as unknown as string), /^TypeError: tokenizer.encode: text must be a string, got null$/);
  assert.throws(() => tok.decode([NaN]), /^RangeError: tokenizer.decode: ids\[0\] is NaN, not a token id/);
  assert.throws(() => tok.decode([1, 0.5]), /ids\[1\] is 0.5/);
  assert.throws(() => tok.decode('12' as unknown as number[]), /ids must be an array of token ids, got string/);
  assert.equal(tok.decode([1, 403, 407]), tok.decode([1, 403, 407, 100000]));
});
