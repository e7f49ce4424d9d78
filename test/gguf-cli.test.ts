import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { loadModel, packageRoot } from '../src/model/load.js';
import { writeSafetensors } from '../src/model/loaders/safetensors.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { createPress, prefill, presses } from '../src/presses/index.js';
import { runCli } from './helpers/cli.js';
import { tempDir } from './fixtures/tiny-models.js';

const dir = join(packageRoot(), 'test', 'fixtures', 'gguf');
const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
const tmp = tempDir('gguf-cli');
after(() => rmSync(tmp, { recursive: true, force: true }));

test('kvpress logits: the contract {"tokens", "logits"} against llama.cpp', async () => {
  const r = ref.files['stories260K-f32.gguf'].results[0];
  const last = await runCli(['logits', '--model', join(dir, 'stories260K-f32.gguf'), '--prompt', ref.prompts[0], '--json']);
  assert.equal(last.code, 0, last.stderr);
  const out = JSON.parse(last.stdout);
  assert.deepEqual(Object.keys(out), ['tokens', 'logits']);
  assert.deepEqual(out.tokens, r.prompt_tokens);
  assert.equal(out.logits.length, 1);
  assert.ok(out.logits[0].every((v: number, i: number) => Math.abs(v - r.last_logits[i]) <= 1e-4));

  const ids = join(tmp, 'ids.json');
  writeFileSync(ids, JSON.stringify(r.prompt_tokens));
  const all = JSON.parse((await runCli(['logits', '--model', join(dir, 'stories260K-f32.gguf'), '--tokens-file', ids, '--all', '--json'])).stdout);
  assert.deepEqual(all.tokens, r.prompt_tokens);
  assert.equal(all.logits.length, r.prompt_tokens.length);
  r.all_logits.forEach((row: number[], i: number) => assert.ok(row.every((v, j) => Math.abs(v - all.logits[i][j]) <= 1e-4), `position ${i}`));

  const bad = await runCli(['logits', '--prompt', 'x']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--json is required/);
});

test('kvpress info --model describes a GGUF from its header', async () => {
  const r = await runCli(['info', '--model', join(dir, 'mini-llama-q4_k_m.gguf'), '--json']);
  assert.equal(r.code, 0, r.stderr);
  const d = JSON.parse(r.stdout);
  assert.equal(d.architecture, 'llama');
  assert.deepEqual(d.tensorTypes, ref.files['mini-llama-q4_k_m.gguf'].type_counts);
  // 256·512 embedding + output, 2 layers of 4·256² attention + 3·256·512 FFN + 2·256 norms, final norm.
  assert.equal(d.parameters, 2 * 512 * 256 + 2 * (2 * 256 * 256 + 2 * 128 * 256 + 3 * 256 * 512 + 2 * 256) + 256);
  // Matrices stay quantized once loaded; the norms are F32 in the file too.
  assert.equal(d.loadedBytes, d.storedBytes);
  assert.ok(d.storedBytes < d.parameters, `${d.storedBytes} bytes for ${d.parameters} parameters`);
  const text = await runCli(['info', '--model', join(dir, 'tiny-gemma3-f32.gguf')]);
  assert.match(text.stdout, /architecture: gemma3, 6 layers/);
});

test('generate and scores accept a .gguf model', async () => {
  const g = await runCli(['generate', '--model', join(dir, 'stories260K-q4_0.gguf'), '--prompt', 'Once upon a time', '--max-new-tokens', '8', '--press', 'knorm', '--ratio', '0.5']);
  assert.equal(g.code, 0, g.stderr);
  const s = await runCli(['scores', '--model', join(dir, 'tiny-gemma3-f32.gguf'), '--prompt', ref.prompts[1], '--press', 'expected_attention', '--ratio', '0.5', '--json']);
  assert.equal(s.code, 0, s.stderr);
  assert.equal(JSON.parse(s.stdout).layers.length, 6);
});

for (const file of ['tiny-phi3-f32.gguf', 'tiny-gemma3-f32.gguf']) {
  test(`every press runs on ${file} and the model keeps decoding`, async () => {
    const m = await loadModel(join(dir, file));
    const tokens = ref.files[file].results[1].prompt_tokens as number[];
    // Query statistics (pre-RoPE queries after the q-norm) for the two presses that need them.
    const text = join(tmp, 'corpus.txt'), stats = join(tmp, `${file}.stats.safetensors`);
    writeFileSync(text, ref.prompts.join('\n').repeat(4));
    const cal = await runCli(['calibrate', '--model', join(dir, file), '--input', text, '--output', stats, '--seq-len', '32']);
    assert.equal(cal.code, 0, cal.stderr);
    const duo = join(tmp, `${file}.duo`);
    const duoCal = await runCli(['calibrate', '--model', join(dir, file), '--input', text, '--duo-patterns', duo, '--duo-sink', '2', '--duo-recent', '4', '--seq-len', '32']);
    assert.equal(duoCal.code, 0, duoCal.stderr);
    // KVzap's surrogate and Fast KVzip's gates trained on the model's own KVzip scores; RestoreKV's adapter: 2 restore embeddings.
    const surrogate = join(tmp, `${file}.kvzap.safetensors`), gates = join(tmp, `${file}.gates.safetensors`), adapter = join(tmp, `${file}.restore.safetensors`);
    for (const args of [['kvzap', '--type', 'linear', '--output', surrogate], ['fast-kvzip', '--epochs', '2', '--output', gates]]) {
      const r = await runCli(['calibrate', ...args, '--model', join(dir, file), '--input', text, '--seq-len', '32', '--max-samples', '2']);
      assert.equal(r.code, 0, r.stderr);
    }
    writeSafetensors(adapter, { restore_embeddings: { dtype: 'F32', shape: [2, m.config.hiddenSize], data: Float32Array.from({ length: 2 * m.config.hiddenSize }, (_, i) => Math.sin(i)) } });
    for (const name of presses.names()) {
      const options: Record<string, string> = name.includes('snapkv') || name === 'pyramidkv' ? { windowSize: '8' } : {};
      if (name === 'qfilter' || name === 'expected_attention_stats') options.stats = stats;
      if (name === 'lagkv') options.lagSize = '4';
      if (name === 'duo_attention') options.patterns = duo;
      if (name === 'kvzap') Object.assign(options, { surrogate, modelType: 'linear' });
      if (name === 'fast_kvzip') options.gates = gates;
      if (name === 'restore_kv') options.adapter = adapter;
      if (name === 'finch') options.windowSize = '4';
      if (name.includes('decoding')) Object.assign(options, { compressionInterval: '4', hiddenStatesBufferSize: '8', nSink: '2' });
      const targetSize = name === 'decoding_expected_attention' || name === 'decoding_adakv_expected_attention_e2' || name === 'prefill_decoding_expected_attention';
      if (targetSize) options.targetSize = '12';
      // SimLayerKV decides per layer from its threshold and takes no ratio.
      const noRatio = targetSize || name === 'sim_layer_kv';
      if (name === 'sim_layer_kv') Object.assign(options, { lazyThreshold: '0', nRecent: '8', nInitial: '2' });
      const press = createPress(name, noRatio ? 0 : 0.5, options);
      const { cache } = prefill(m, tokens, { press });
      // Decoding presses compress while tokens are generated.
      for (let i = 0; i < 8; i++) {
        const logits = m.forward([tokens[3 + i]], cache, { press });
        assert.ok(logits.every(Number.isFinite), name);
      }
      const longest = Math.max(...cache.layers.flatMap((l) => Array.from(l.lengths)));
      // ThinK prunes key channels, not entries.
      if (name === 'think') assert.ok(cache.layers.every((l) => l.keyChannels.every((ch) => ch && ch.length < m.config.headDim)), 'think pruned no channel');
      // DuoAttention's retrieval heads keep everything; its streaming heads only sinks and recent entries.
      else if (name === 'duo_attention') assert.ok(Math.min(...cache.layers.flatMap((l) => Array.from(l.lengths))) < tokens.length + 8, 'duo_attention streamed no head');
      else assert.ok(longest < tokens.length + 8, `${name} kept every entry`);
    }
    const answer = new Pipeline(m).run({ context: 'Tom and his dog went to the park.', question: 'The dog', press: createPress('expected_attention', 0.5), maxNewTokens: 4 });
    assert.equal(answer.answers.length, 1);
  });
}
