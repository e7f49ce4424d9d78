import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { packageRoot } from '../src/model/load.js';
import { runCli } from './helpers/cli.js';

const root = packageRoot();
const reference = JSON.parse(readFileSync(join(root, 'models/stories260K/reference.json'), 'utf8'));

test('generate --json prints exactly one JSON object with the contract fields', async () => {
  const r = await runCli(['generate', '--prompt', 'Once upon a time', '--max-new-tokens', '60', '--temperature', '0', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.deepEqual(Object.keys(out).sort(), ['cache', 'promptTokens', 'text', 'tokens']);
  assert.deepEqual(out.promptTokens, reference.cases[0].promptTokens);
  assert.deepEqual(out.tokens, reference.cases[0].greedyTokens);
  assert.equal(out.text, reference.cases[0].greedyText);
  // 5 prompt + 59 decoded tokens in every layer and KV head, keys and values in f32.
  assert.equal(out.cache.bytes, 5 * 4 * 64 * 2 * 8 * 4);
});

test('the kvpress binary runs the demo on the embedded model', () => {
  const out = execFileSync(process.execPath, [join(root, 'bin/kvpress.js'), 'generate', '--prompt', 'Once upon a time', '--max-new-tokens', '12'], { encoding: 'utf8' });
  assert.match(out, /^Once upon a time, there was a little girl named Lily/);
});

test('bad input: one-line errors and exit code 2', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvpress-cli-'));
  const cases: [string[], RegExp][] = [
    [['generate'], /--prompt is required/],
    [['generate', '--prompt', 'x', '--temperature', 'hot'], /--temperature must be a number ≥ 0, got "hot"/],
    [['generate', '--prompt', 'x', '--top-p', '0'], /--top-p must be in \(0, 1\]/],
    [['generate', '--prompt', 'x', '--max-new-tokens', '1.5'], /--max-new-tokens must be an integer/],
    [['generate', '--prompt', 'x', '--bogus'], /Unknown option '--bogus' \(valid options: --prompt/],
    [['generate', '--prompt', 'x', '--model', join(dir, 'nope.bin')], /nope\.bin: no such file or directory/],
    [['generate', '--prompt', 'Once upon a time '.repeat(200)], /the prompt has \d+ tokens, more than the model's context of 512/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ];
  const truncated = join(dir, 'model.bin');
  writeFileSync(truncated, readFileSync(join(root, 'models/stories260K/stories260K.bin')).subarray(0, 100000));
  cases.push([['generate', '--prompt', 'x', '--model', truncated, '--tokenizer', join(root, 'models/stories260K/tok512.bin')], /model\.bin: truncated checkpoint: 100000 bytes/]);
  for (const [argv, re] of cases) {
    const r = await runCli(argv);
    assert.equal(r.code, 2, argv.join(' '));
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  }
});

test('the binary exits with code 2 and no stack trace on bad input', () => {
  const r = spawnSync(process.execPath, [join(root, 'bin/kvpress.js'), 'generate', '--prompt', 'x', '--model', '/nonexistent/model.bin'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.equal(r.stderr.trim(), 'kvpress generate: /nonexistent/model.bin: no such file or directory');
});
