import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadModel } from '../src/model/load.js';
import { presses } from '../src/presses/index.js';
import { readQueryStats, writeQueryStats } from '../src/presses/stats-format.js';
import { tempDir } from './fixtures/tiny-models.js';
import { runCli } from './helpers/cli.js';

const STORY = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. One day, she saw a big red ball.';

/** Common words of simple English stories, written by hand (not taken from any model output). */
const WORDS = new Set(`a about after again all also always am an and any are around as asked at ate away back ball be
beautiful because bed been before best big bird birds blue boat book box boy bread but by cake came can can't car cat
caught day did didn't do dog don't door down each eat every everyone everything excited eyes fall family far fast felt
few find fine fish flew flower flowers fly for found friend friends from fun game gave get girl give go going good got
great green grew had happy has have he head help her here hill him his home house how i i'm if in inside into is it
it's its jump just kind knew know laugh learned let let's like liked little lily look looked lot loud love loved made
make man many max me mom mommy more morning much must my name named new next nice night no not now of off oh on once
one or other our out outside over park play played playing please pretty put ran red remember ride room run sad said
sam sara saw say see shared she shiny should show sky smiled so some something soon sorry special started stay still
story sue sun sure surprised take talk tall than thank that the their them then there they thing things think this
time timmy to together told tom too took toy toys tree tried try two under up upon us very wanted was water way we went
were what when where which while who why will with wise wish would yes you your ball's mom's`.split(/\s+/));

test('kvpress presses lists every press with its description and its options with defaults', async () => {
  const r = await runCli(['presses']);
  assert.equal(r.code, 0, r.stderr);
  for (const e of presses.list()) {
    assert.match(r.stdout, new RegExp(`^${e.name} +${e.description.slice(0, 20).replace(/[()+.*?[\]\\]/g, '\\$&')}`, 'm'));
  }
  assert.match(r.stdout, /^ {4}nFuturePositions=512 {2}\[integer\]/m);
  assert.match(r.stdout, /^ {4}epsilon=0\.01 {2}\[number\]/m);
  assert.match(r.stdout, /^ {4}positions=compat {2}\[string \(compat \| absolute\)\]/m);
  const names = ['expected_attention', 'adakv_expected_attention', 'adakv_expected_attention_e2', 'expected_attention_stats',
    'critical_expected_attention', 'critical_adakv_expected_attention', 'decoding_expected_attention', 'prefill_decoding_expected_attention'];
  for (const n of names) assert.ok(presses.names().includes(n), n);

  const j = await runCli(['presses', '--json', 'adakv_expected_attention_e2']);
  const [entry] = JSON.parse(j.stdout);
  assert.equal(entry.name, 'adakv_expected_attention_e2');
  assert.equal(entry.options.epsilon.default, 0.01);
  assert.equal(entry.options.alphaSafeguard.default, 0.2);
});

test('kvpress scores --json follows the contract', async () => {
  const model = await loadModel();
  const ids = model.tokenizer!.encode(STORY, { bos: true });
  const T = ids.length;
  const r = await runCli(['scores', '--prompt', STORY, '--press', 'expected_attention', '--ratio', '0.5', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n').length, 1);
  const out = JSON.parse(r.stdout);
  assert.deepEqual(Object.keys(out).sort(), ['layers', 'logScores', 'tokens']);
  assert.deepEqual(out.tokens, ids);
  assert.equal(out.logScores, true);
  assert.equal(out.layers.length, model.config.numLayers);
  for (const layer of out.layers) {
    assert.equal(layer.scores.length, model.config.numKvHeads);
    assert.equal(layer.kept.length, model.config.numKvHeads);
    layer.scores.forEach((s: number[], g: number) => {
      assert.equal(s.length, T);
      // Kept = the floor(T/2) highest scores (ties to the lower position), listed ascending.
      const want = s.map((v, t) => [v, t]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, Math.floor(T / 2)).map((x) => x[1]).sort((a, b) => a - b);
      assert.deepEqual(layer.kept[g], want);
      assert.deepEqual(layer.kept[g].slice(0, 4), [0, 1, 2, 3]);
    });
  }

  // --tokens-file: the ids as given (no BOS added); a press that scores linearly has no logScores.
  const dir = tempDir('scores');
  const file = join(dir, 'ids.json');
  writeFileSync(file, JSON.stringify(ids.slice(1)));
  const k = JSON.parse((await runCli(['scores', '--tokens-file', file, '--press', 'knorm', '--ratio', '0.25', '--json'])).stdout);
  assert.deepEqual(k.tokens, ids.slice(1));
  assert.equal('logScores' in k, false);
  assert.equal(k.layers[0].kept[0].length, Math.floor((T - 1) * 0.75));
  // Ratio 0 still reports the scores and keeps everything.
  const z = JSON.parse((await runCli(['scores', '--prompt', STORY, '--press', 'expected_attention', '--json'])).stdout);
  assert.equal(z.layers[2].scores[1].length, T);
  assert.deepEqual(z.layers[2].kept[1], Array.from({ length: T }, (_, i) => i));
  // A press that reports no scores: null.
  const b = JSON.parse((await runCli(['scores', '--prompt', STORY, '--press', 'block_keydiff', '--ratio', '0.5', '--press-option', 'blockSize=8', '--json'])).stdout);
  assert.equal(b.layers[0].scores, null);
  assert.equal(b.layers[0].kept[0].length, Math.floor(T / 2));
});

test('kvpress generate --press expected_attention --ratio 0.5: real words, half the cache', async () => {
  const r = await runCli(['generate', '--prompt', STORY, '--press', 'expected_attention', '--ratio', '0.5', '--max-new-tokens', '80', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const text: string = JSON.parse(r.stdout).text;
  const words = text.toLowerCase().match(/[a-z']+/g) ?? [];
  assert.ok(words.length >= 40, text);
  const known = words.filter((w) => WORDS.has(w)).length;
  assert.ok(known >= 0.85 * words.length, `${known}/${words.length} known words: ${text}`);

  // The prompt's cache alone (one token generated, none fed back): floor(T/2) entries per head.
  const model = await loadModel();
  const c = model.config, T = model.tokenizer!.encode(STORY, { bos: true }).length;
  const entry = c.headDim * 2 * 4, heads = c.numLayers * c.numKvHeads;
  const full = JSON.parse((await runCli(['generate', '--prompt', STORY, '--max-new-tokens', '1', '--json'])).stdout).cache.bytes;
  const half = JSON.parse((await runCli(['generate', '--prompt', STORY, '--press', 'expected_attention', '--ratio', '0.5', '--max-new-tokens', '1', '--json'])).stdout).cache.bytes;
  assert.equal(full, heads * T * entry);
  assert.ok(Math.abs(half - full / 2) <= heads * entry, `${half} vs ${full / 2}`);
  // AdaKV over EA: the same total, spread unequally over the heads.
  const ada = JSON.parse((await runCli(['generate', '--prompt', STORY, '--press', 'adakv_expected_attention', '--ratio', '0.5', '--max-new-tokens', '1', '--json'])).stdout).cache.bytes;
  assert.equal(ada, half);
  const kept = JSON.parse((await runCli(['scores', '--prompt', STORY, '--press', 'adakv_expected_attention', '--ratio', '0.5', '--json'])).stdout).layers
    .map((l: { kept: number[][] }) => l.kept.map((k) => k.length));
  assert.ok(kept.some((ls: number[]) => new Set(ls).size > 1), `per-head lengths ${JSON.stringify(kept)}`);
  for (const ls of kept) assert.equal(ls.reduce((a: number, b: number) => a + b, 0), c.numKvHeads * Math.floor(T / 2));
  // The human-readable summary names the press.
  const h = await runCli(['generate', '--prompt', STORY, '--press', 'adakv_expected_attention_e2', '--ratio', '0.5', '--max-new-tokens', '5']);
  assert.match(h.stderr, /^\[press adakv_expected_attention_e2 at ratio 0\.5, \d+ prompt tokens/);
});

test('kvpress calibrate writes statistics the stats and qfilter presses read', async () => {
  const corpus = tempDir('corpus'), dir = tempDir('calibrate');
  writeFileSync(join(corpus, 'a.txt'), `${STORY} `.repeat(6));
  writeFileSync(join(corpus, 'b.txt'), 'Tom had a little dog. The dog liked to run in the garden. '.repeat(6));
  for (const [ext, input] of [['safetensors', corpus], ['json', join(corpus, 'a.txt')]]) {
    const out = join(dir, `stats.${ext}`);
    const r = await runCli(['calibrate', '--input', input, '--output', out, '--seq-len', '64']);
    assert.equal(r.code, 0, r.stderr);
    if (ext === 'json') {
      // Samples of 63 text tokens after BOS; the first 4 rows of each are sinks.
      const n = (await loadModel()).tokenizer!.encode(`${STORY} `.repeat(6), { bos: false }).length, samples = Math.ceil(n / 63);
      assert.match(r.stderr, new RegExp(`^\\[${samples} samples from 1 file, ${n + samples - 4 * samples} query vectors per head`));
    } else assert.match(r.stderr, /samples from 2 files/);
    const s = readQueryStats(out);
    assert.equal(s.layers.length, 5);
    assert.equal(s.numHeads, 8);
    assert.equal(s.headDim, 8);
    for (const press of ['expected_attention_stats', 'qfilter']) {
      const sc = await runCli(['scores', '--prompt', STORY, '--press', press, '--ratio', '0.5', '--press-option', `stats=${out}`, '--json']);
      assert.equal(sc.code, 0, sc.stderr);
      assert.equal(JSON.parse(sc.stdout).layers[4].kept[3].length, Math.floor(JSON.parse(sc.stdout).tokens.length / 2));
    }
  }
});

test('bad input: one-line errors, exit code 2', async () => {
  const dir = tempDir('cli-presses');
  const model = await loadModel();
  const wrong = join(dir, 'wrong.json');
  const H = 2, d = model.config.headDim;
  writeQueryStats(wrong, { model: 'other', numHeads: H, headDim: d, nSink: 4, tokens: 10, layers: [{ mean: new Float32Array(H * d), cov: new Float32Array(H * d * d), qfilter: new Float32Array(H * d) }] });
  const ids = join(dir, 'ids.json');
  writeFileSync(ids, '[1, 2, 9999]');
  const cases: [string[], RegExp][] = [
    [['generate', '--prompt', 'x', '--press', 'expected_atention'], /unknown press "expected_atention" \(did you mean expected_attention/],
    [['generate', '--prompt', 'x', '--press', 'expected_attention', '--press-option', 'eps=1'], /press "expected_attention" has no option "eps" \(options: nFuturePositions, nSink, useCovariance, useVnorm, epsilon, positions, precision\)/],
    [['generate', '--prompt', 'x', '--press', 'expected_attention', '--press-option', 'nSink=two'], /option nSink must be an integer ≥ 0, got "two"/],
    [['generate', '--prompt', 'x', '--press', 'expected_attention', '--press-option', 'positions=future'], /option positions must be one of compat, absolute, got "future"/],
    [['generate', '--prompt', 'x', '--press', 'expected_attention', '--press-option', 'epsilon'], /--press-option must be key=value, got "epsilon"/],
    [['generate', '--prompt', 'x', '--press', 'expected_attention', '--ratio', '1'], /--ratio must be a number in \[0, 1\), got "1"/],
    [['generate', '--prompt', 'x', '--press', 'expected_attention', '--ratio=-0.1'], /--ratio must be a number in \[0, 1\), got "-0\.1"/],
    [['generate', '--prompt', 'x', '--ratio', '0.5'], /--ratio and --press-option need --press NAME/],
    [['generate', '--prompt', 'x', '--press', 'decoding_expected_attention', '--ratio', '0.5'], /takes no compression ratio \(got 0\.5\); set --press-option targetSize=N/],
    [['scores', '--prompt', STORY, '--press', 'expected_attention_stats', '--ratio', '0.5'], /needs query statistics: run `kvpress calibrate/],
    [['scores', '--prompt', STORY, '--press', 'expected_attention_stats', '--press-option', `stats=${wrong}`], /are for 1 layers × 2 query heads × head_dim 8, the model has 5 × 8 × 8; run `kvpress calibrate` on this model/],
    [['scores', '--prompt', STORY, '--press', 'qfilter', '--press-option', `stats=${join(dir, 'none.json')}`], /none\.json: no such file/],
    [['scores', '--prompt', STORY], /--press NAME is required/],
    [['scores', '--prompt', STORY, '--tokens-file', ids, '--press', 'knorm'], /give exactly one of --prompt, --prompt-file, --tokens-file \(got --prompt, --tokens-file\)/],
    [['scores', '--tokens-file', ids, '--press', 'knorm'], /ids\.json: entry 2 \(9999\) is not a token id in \[0, 512\)/],
    [['scores', '--prompt', 'Once', '--press', 'expected_attention', '--ratio', '0.5'], /needs more than nSink = 4 tokens/],
    [['presses', 'snap'], /unknown press "snap" \(did you mean snapkv/],
    [['calibrate', '--input', dir], /--output is required/],
    [['calibrate', '--input', dir, '--output', join(dir, 'stats.txt')], /--output must end in \.json or \.safetensors/],
    [['calibrate', '--input', join(dir, 'missing'), '--output', join(dir, 's.json')], /missing: no such file or directory/],
  ];
  for (const [argv, re] of cases) {
    const r = await runCli(argv);
    assert.equal(r.code, 2, `${argv.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, argv.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  }
});

test("the README's table of presses is `kvpress presses --markdown`", async () => {
  const r = await runCli(['presses', '--markdown']);
  assert.equal(r.code, 0, r.stderr);
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  assert.ok(readme.includes(r.stdout), 'README.md: replace the table of presses with the output of `kvpress presses --markdown`');
  assert.equal(r.stdout.split('\n').filter((l) => l.startsWith('| `')).length, presses.list().length + presses.wrappers().length);
});
