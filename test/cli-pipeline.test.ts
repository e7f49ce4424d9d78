import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { JsBackend } from '../src/backend/js/kernels.js';
import type { CommandIO } from '../src/cli/command.js';
import { ProgressBar } from '../src/cli/progress.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import { generate } from '../src/pipeline/generate.js';
import { presses } from '../src/presses/index.js';
import { runCli } from './helpers/cli.js';
import { tempDir } from './fixtures/tiny-models.js';

const storyPath = join(packageRoot(), 'examples/story.txt');
const story = readFileSync(storyPath, 'utf8');
const model = await loadModel();
const tok = model.tokenizer!;
const Q1 = 'What did Lily find under the tree?';
const Q2 = 'Who lost his ball?';

/** The answers by hand: one prefill with the press, then generate on each question from a copy of the cache. */
function reference(press: string, ratio: number, questions: string[], maxNewTokens: number): string[] {
  const cache = model.newCache();
  model.forward(tok.encode(story, { bos: true }), cache, { logits: 'none', press: presses.create(press, ratio) });
  return questions.map((q) => generate(model, tok.encode(q + '\n'), { cache: cache.clone(), maxNewTokens, temperature: 0 }).text);
}

test('generate --context-file --json prints one object with the answers and the stats', async () => {
  const r = await runCli(['generate', '--context-file', storyPath, '--question', Q1, '--question', Q2, '--press', 'knorm', '--ratio', '0.5', '--max-new-tokens', '24', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n').length, 1);
  const out = JSON.parse(r.stdout);
  assert.deepEqual(Object.keys(out).sort(), ['answers', 'stats']);
  assert.deepEqual(out.answers, reference('knorm', 0.5, [Q1, Q2], 24));
  const n = tok.encode(story, { bos: true }).length;
  const c = model.config;
  assert.equal(out.stats.press, 'knorm');
  assert.equal(out.stats.compressionRatio, 0.5);
  assert.equal(out.stats.contextTokens, n);
  assert.deepEqual(out.stats.keptPerLayer, Array(c.numLayers).fill(Math.floor(n * 0.5)));
  assert.equal(out.stats.cacheBytesBefore, n * c.numLayers * c.numKvHeads * c.headDim * 8);
  assert.equal(out.stats.cacheBytesAfter, Math.floor(n * 0.5) * c.numLayers * c.numKvHeads * c.headDim * 8);
  assert.equal(out.stats.questions.length, 2);
  assert.equal(r.stderr, '');
});

test('generate --context-file prints each question, its answer and the stats table', async () => {
  const r = await runCli(['generate', '--context-file', storyPath, '--question', Q1, '--question', Q2, '--press', 'snapkv', '--ratio', '0.3', '--press-option', 'windowSize=16', '--max-new-tokens', '16']);
  assert.equal(r.code, 0, r.stderr);
  const cache = model.newCache();
  model.forward(tok.encode(story, { bos: true }), cache, { logits: 'none', press: presses.create('snapkv', 0.3, { windowSize: 16 }) });
  const [b1, b2] = [Q1, Q2].map((q) => generate(model, tok.encode(q + '\n'), { cache: cache.clone(), maxNewTokens: 16, temperature: 0 }).text);
  assert.ok(r.stdout.startsWith(`Q: ${Q1}\nA: ${b1}\n\nQ: ${Q2}\nA: ${b2}\n\n`), r.stdout);
  assert.match(r.stdout, /\npress +snapkv \(compression ratio 0\.30\)\n/);
  assert.match(r.stdout, /\ncontext tokens +\d+\n/);
  assert.match(r.stdout, /\nKV cache +[\d.]+ KiB → [\d.]+ KiB \(\d+\.\d% removed\), f32\nallocated +[\d.]+ KiB \(pages of 64 entries, positions included\)\n/);
  assert.match(r.stdout, /\nprefill +[\d.]+ m?s \(press [\d.]+ m?s\)\n/);
  assert.match(r.stdout, /\ndecode +\d+ tokens, [\d.]+ tokens\/s\n/);
  assert.match(r.stdout, /\nlayer  kept\n +0 +\d+\n/);
});

test('without --question the context is continued', async () => {
  const r = await runCli(['generate', '--context-file', storyPath, '--max-new-tokens', '8', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const ref = generate(model, [...tok.encode(story, { bos: true }), ...tok.encode('\n')], { maxNewTokens: 8, temperature: 0 });
  assert.deepEqual(JSON.parse(r.stdout).answers, [ref.text]);
});

test('a context truncated to the window is reported on stderr', async () => {
  const dir = tempDir('cli-pipeline');
  const long = join(dir, 'long.txt');
  writeFileSync(long, story.repeat(2));
  const r = await runCli(['generate', '--context-file', long, '--question', Q2, '--max-new-tokens', '4', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^kvpress generate: warning: the context was truncated from \d+ to \d+ tokens\n$/);
});

test('bad requests: one-line errors and exit code 2', async () => {
  const dir = tempDir('cli-pipeline');
  const empty = join(dir, 'empty.txt');
  writeFileSync(empty, ' \n\n ');
  const long = join(dir, 'long.txt');
  writeFileSync(long, story.repeat(2));
  const cases: [string[], RegExp][] = [
    [['--context-file', empty, '--question', Q1], /empty\.txt: the context is empty/],
    [['--context-file', join(dir, 'nope.txt'), '--question', Q1], /nope\.txt: no such file/],
    [['--context-file', long, '--question', Q1, '--max-context-length', '505'], /the question takes \d+ tokens but only 7 positions remain after the 505-position context \(model window 512\)/],
    [['--context-file', storyPath, '--question', Q1, '--press', 'knrom', '--ratio', '0.5'], /unknown press "knrom" \(did you mean knorm/],
    [['--context-file', storyPath, '--question', Q1, '--press', 'knorm', '--ratio', '1.5'], /--ratio must be a number in \[0, 1\), got "1\.5"/],
    [['--context-file', storyPath, '--question', Q1, '--press', 'knorm', '--ratio', '1'], /--ratio must be a number in \[0, 1\), got "1"/],
    [['--context-file', storyPath, '--question', Q1, '--press', 'knorm', '--ratio=-0.1'], /--ratio must be a number in \[0, 1\), got "-0\.1"/],
    [['--context-file', storyPath, '--question', Q1, '--press', 'snapkv', '--press-option', 'nope=1'], /press "snapkv" has no option "nope"/],
    [['--context-file', storyPath, '--question', Q1, '--question', Q2, '--press', 'decoding_expected_attention'], /a decoding press \(decoding_expected_attention\) compresses while it answers, so it cannot answer several questions from one context \(got 2\)/],
    [['--question', Q1], /--question needs --context-file FILE/],
    [['--context-file', storyPath, '--prompt', 'x'], /--prompt and --context-file are exclusive/],
    [['--context-file', storyPath, '--ratio', '0.5'], /--ratio and --press-option need --press NAME/],
  ];
  for (const [argv, re] of cases) {
    const r = await runCli(['generate', ...argv]);
    assert.equal(r.code, 2, argv.join(' '));
    assert.match(r.stderr, re, argv.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.equal(r.stdout, '', argv.join(' '));
  }
});

test('--help describes the context mode and chat, with examples', async () => {
  const gen = await runCli(['generate', '--help']);
  assert.equal(gen.code, 0);
  assert.match(gen.stdout, /--context-file FILE/);
  assert.match(gen.stdout, /kvpress generate --context-file examples\/story\.txt --question/);
  const chat = await runCli(['chat', '--help']);
  assert.equal(chat.code, 0);
  assert.match(chat.stdout, /kvpress chat --context-file examples\/story\.txt --press knorm --ratio 0\.5/);
  assert.match(chat.stdout, /\/stats/);
  const top = await runCli(['--help']);
  assert.match(top.stdout, /\n  chat +compress a context once/);
});

test('the progress bar draws on a TTY only, after its delay, and clears itself', () => {
  const draw = (isTTY: boolean, delayMs: number) => {
    let err = '';
    const io: CommandIO = { out: () => {}, err: (t) => { err += t; }, backend: () => new JsBackend(), isTTY };
    const bar = new ProgressBar(io, 'compressing the context', 'layers', delayMs);
    bar.update(0, 4);
    bar.update(1, 4);
    bar.update(2, 4); // within the redraw interval: skipped
    bar.update(4, 4);
    return err;
  };
  assert.match(draw(true, 0), /^\rcompressing the context \[######\.{18}\] 1\/4 layers, 0\.0 s\x1b\[K\r\x1b\[K$/);
  assert.equal(draw(false, 0), '');
  assert.equal(draw(true, 1000), '');
});
