import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { test } from 'node:test';
import { JsBackend } from '../src/backend/js/kernels.js';
import type { CommandIO } from '../src/cli/command.js';
import { chatSession } from '../src/cli/commands/chat.js';
import { loadModel, packageRoot } from '../src/model/load.js';
import { generate } from '../src/pipeline/generate.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { presses } from '../src/presses/index.js';
import { runCli } from './helpers/cli.js';

const root = packageRoot();
const storyPath = join(root, 'examples/story.txt');
const story = readFileSync(storyPath, 'utf8');
const model = await loadModel();
const tok = model.tokenizer!;
const Q1 = 'What did Lily find under the tree?';
const Q2 = 'Who lost his ball?';

/** Answers by hand: the story prefilled with knorm at 0.5, then each question on a copy of the cache. */
function reference(questions: string[], maxNewTokens: number): string[] {
  const cache = model.newCache();
  model.forward(tok.encode(story, { bos: true }), cache, { logits: 'none', press: presses.create('knorm', 0.5) });
  return questions.map((q) => generate(model, tok.encode(q + '\n'), { cache: cache.clone(), maxNewTokens, temperature: 0 }).text);
}

test('a chat session answers each line from the compressed context and handles its commands', async () => {
  let out = '', err = '';
  const io: CommandIO = { out: (t) => { out += t; }, err: (t) => { err += t; }, backend: () => new JsBackend(), isTTY: false };
  const sink = new Writable({ write(chunk, _enc, done) { out += String(chunk); done(); } });
  const press = presses.create('knorm', 0.5);
  const compressed = new Pipeline(model).compress(story, { press });
  const input = new PassThrough();
  const tooLong = 'Why '.repeat(120).trim() + '?';
  input.end([Q1, '/stats', '/help', '/bogus', '', tooLong, Q2, '/quit', 'not read'].join('\n') + '\n');
  const code = await chatSession(compressed, press, { maxNewTokens: 20 }, input, sink, io);
  assert.equal(code, 0);

  const [a1, a2] = reference([Q1, Q2], 20);
  assert.match(out, /^Context: 430 tokens, KV cache 538 KiB → 269 KiB with knorm \(50\.0% removed; f32, 340 KiB allocated\) in [\d.]+ s\.\n/);
  assert.ok(out.includes(`> ${a1}\n> `), out);
  assert.ok(out.includes(`> ${a2}\n> `), out);
  assert.match(out, /press +knorm \(compression ratio 0\.50\)\ncontext tokens +430\n/);
  assert.match(out, /questions +1 \(\d+ tokens/);
  assert.match(out, /unknown command \/bogus \(commands: \/stats, \/quit, \/help\)/);
  assert.ok(!out.includes('not read'));
  assert.match(err, /^kvpress chat: the question takes \d+ tokens but only 82 positions remain after the 430-position context \(model window 512\)/);
  assert.equal(err.trim().split('\n').length, 1);
});

test('chat refuses decoding presses and a missing context file (exit code 2, one line)', async () => {
  const cases: [string[], RegExp][] = [
    [['chat', '--context-file', storyPath, '--press', 'decoding_expected_attention'], /decoding_expected_attention is a decoding press/],
    [['chat', '--press', 'knorm'], /--context-file is required/],
    [['chat', '--context-file', storyPath, '--press', 'knorm', '--ratio', '2'], /--ratio must be a number in \[0, 1\), got "2"/],
  ];
  for (const [argv, re] of cases) {
    const r = await runCli(argv);
    assert.equal(r.code, 2);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
});

const hasTmux = spawnSync('tmux', ['-V']).status === 0;

test('kvpress chat in a terminal (tmux): two turns, then /quit', { skip: hasTmux ? false : 'tmux is not installed (apt-get install tmux)' }, async () => {
  const socket = `kvpress-test-${process.pid}`;
  const tmux = (...args: string[]) => execFileSync('tmux', ['-L', socket, '-f', '/dev/null', ...args], { encoding: 'utf8' });
  // Terminal lines lose their trailing blanks, so answers are compared without them.
  const screen = () => tmux('capture-pane', '-p', '-J', '-t', 'chat').replace(/[ \t]+$/gm, '').trimEnd();
  const waitFor = async (pred: (s: string) => boolean, what: string) => {
    const end = Date.now() + 30_000;
    for (;;) {
      const s = screen();
      if (pred(s)) return s;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; screen:\n${s}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const bin = join(root, 'bin/kvpress.js');
  const cmd = `env KVPRESS_BACKEND=js ${JSON.stringify(process.execPath)} ${JSON.stringify(bin)} chat --context-file ${JSON.stringify(storyPath)} --press knorm --ratio 0.5 --max-new-tokens 20; echo "[exit $?]"; sleep 60`;
  tmux('new-session', '-d', '-s', 'chat', '-x', '250', '-y', '50', cmd);
  try {
    const [a1, a2] = reference([Q1, Q2], 20);
    await waitFor((s) => s.endsWith('\n>'), 'the first prompt');
    tmux('send-keys', '-t', 'chat', '-l', Q1);
    tmux('send-keys', '-t', 'chat', 'Enter');
    await waitFor((s) => s.endsWith(`> ${Q1}\n${a1.trimEnd()}\n>`), 'the first answer');
    tmux('send-keys', '-t', 'chat', '-l', Q2);
    tmux('send-keys', '-t', 'chat', 'Enter');
    await waitFor((s) => s.endsWith(`> ${Q2}\n${a2.trimEnd()}\n>`), 'the second answer');
    tmux('send-keys', '-t', 'chat', '-l', '/quit');
    tmux('send-keys', '-t', 'chat', 'Enter');
    const s = await waitFor((x) => x.endsWith('[exit 0]'), 'the exit');
    assert.match(s, /^Context: 430 tokens, KV cache 538 KiB → 269 KiB with knorm/);
  } finally {
    tmux('kill-server');
  }
});
