import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { defaultModelPath } from '../src/model/load.js';
import { randomWeights, tempDir, tinyConfig, writeHfDirectory, writeLlama2c, writeTokenizerFiles } from './fixtures/tiny-models.js';
import { runCli } from './helpers/cli.js';

// Every case of the outside probe (issue 14): the input, exit code 2, and one line that names
// the problem and the fix, with no stack trace and no raw control bytes.
const dir = tempDir('probe');
const c = tinyConfig();
const noTok = writeHfDirectory(join(dir, 'hf-no-tokenizer'), c, randomWeights(c, 1));
const nulTok = writeHfDirectory(join(dir, 'hf-nul-tokenizer'), c, randomWeights(c, 1));
writeFileSync(join(nulTok, 'tokenizer.json'), Buffer.concat([Buffer.from([0, 0, 1, 7, 0x1b]), Buffer.from('{"version": "1.0"}')]));
const badTemplate = writeHfDirectory(join(dir, 'hf-bad-template'), c, randomWeights(c, 1));
writeTokenizerFiles(badTemplate, 'qwen');
const tc = JSON.parse(readFileSync(join(badTemplate, 'tokenizer_config.json'), 'utf8'));
writeFileSync(join(badTemplate, 'tokenizer_config.json'), JSON.stringify({ ...tc, chat_template: '{% for m in messages %}{{ m.content }' }));
const trailing = join(dir, 'trailing', 'm.bin');
mkdirSync(join(dir, 'trailing'));
copyFileSync(defaultModelPath(), trailing);
writeFileSync(trailing, Buffer.concat([readFileSync(defaultModelPath()), Buffer.alloc(8)]));
const nanModel = join(dir, 'nan.bin');
const w = randomWeights(c, 2);
(w.layers[0].wUp as Float32Array)[3] = NaN;
writeLlama2c(nanModel, c, w);
const longPrompt = 'Once upon a time there was a girl. '.repeat(2000);

const CASES: [string, string[], RegExp][] = [
  ['negative ratio as a separate value', ['generate', '--prompt', 'a', '--press', 'knorm', '--ratio', '-0.5'], /--ratio must be a number in \[0, 1\), got "-0\.5"/],
  ['negative max-new-tokens', ['generate', '--prompt', 'a', '--max-new-tokens', '-1'], /--max-new-tokens must be an integer ≥ 0, got "-1"/],
  ['negative temperature', ['generate', '--prompt', 'a', '--temperature', '-1'], /--temperature must be a number ≥ 0, got "-1"/],
  ['negative top-k', ['generate', '--prompt', 'a', '--top-k', '-3'], /--top-k must be an integer ≥ 0, got "-3"/],
  ['HF directory without tokenizer.json', ['generate', '--model', noTok, '--prompt', 'a'], /no tokenizer\.json in the directory; copy the model's tokenizer\.json/],
  ['--tokenizer with an HF directory', ['generate', '--model', noTok, '--tokenizer', 'tok.bin', '--prompt', 'a'], /--tokenizer is for llama2\.c checkpoints; a Hugging Face directory's tokenizer is its own tokenizer\.json/],
  ['--press-option __proto__', ['generate', '--prompt', 'a', '--press', 'knorm', '--press-option', '__proto__=1'], /--press-option __proto__ is not an option name; `kvpress presses knorm` lists the options/],
  ['eval --output onto a file', ['eval', '--dataset', 'continuation', '--press', 'knorm', '--output', 'README.md'], /--output README\.md is a file, not a folder/],
  ['calibrate --output where nothing can be written', ['calibrate', '--input', 'examples/story.txt', '--output', '/proc/x.json'], /--output \/proc\/x\.json: cannot write there: .*\(E[A-Z]+\); choose another path/],
  ['tokenizer.json starting with NUL bytes', ['generate', '--model', nulTok, '--prompt', 'a'], /tokenizer\.json: .*\\x00/],
  ['chat template that does not render, reported at load', ['generate', '--model', badTemplate, '--prompt', 'a'], /the model's chat template is unusable: .*fix chat_template in tokenizer_config\.json/],
  ['--threads above the cores (eval)', ['eval', '--dataset', 'continuation', '--press', 'knorm', '--threads', '1000'], /--threads 1000 is more than the \d+ cores? of this machine; use 1 to \d+/],
  ['--threads above the cores (bench)', ['bench', '--shape', 'small', '--threads', '1000'], /--threads 1000 is more than the \d+ cores? of this machine/],
  ['a single-value flag given twice', ['generate', '--prompt', 'a', '--prompt', 'b'], /--prompt is given twice \(--prompt "a" and --prompt "b"\); give it once/],
  ['a seed past 2^53', ['generate', '--prompt', 'a', '--seed', '99999999999999999999'], /--seed must be at most 9007199254740991/],
  ['llama2.c file with trailing bytes', ['generate', '--model', trailing, '--prompt', 'a'], /8 bytes more than the header describes/],
  ['weights holding NaN', ['generate', '--model', nanModel, '--tokenizer', join(dir, 'none.bin'), '--prompt', 'a'], /tensor w3 holds NaN \(layer 0, element 3\)/],
  ['a prompt longer than the context, refused before tokenizing', ['generate', '--prompt', longPrompt], /the prompt \(70000 characters\) has at least \d+ tokens, more than the model's context of 512/],
];

for (const [name, argv, message] of CASES) {
  test(`probe: ${name} → exit 2, one line`, async () => {
    const r = await runCli(argv);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.split('\n').filter((l) => l !== '').length, 1, r.stderr);
    assert.doesNotMatch(r.stderr, /[\u0000-\u0008\u000b-\u001f]|    at /);
  });
}

test('probe: a context of 50,000 漢 and a binary context file tokenize without a stack overflow', async () => {
  for (const text of ['漢'.repeat(50000), Buffer.from(Array.from({ length: 200000 }, (_, i) => (i * 7919) % 256)).toString('latin1')]) {
    const f = join(dir, 'ctx.txt');
    writeFileSync(f, text);
    const r = await runCli(['generate', '--context-file', f, '--question', 'Who?', '--max-new-tokens', '1']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /the context was truncated from \d+ to \d+ tokens/);
  }
});
