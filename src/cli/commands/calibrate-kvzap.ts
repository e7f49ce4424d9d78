import { extname } from 'node:path';
import { loadModel } from '../../model/load.js';
import { gateLoss, trainGates, writeGates } from '../../presses/fast-kvzip.js';
import { collectSurrogateData, surrogateLoss, trainSurrogate, writeSurrogate } from '../../presses/kvzip-surrogate.js';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { checkOutputFile, noTokenizer, num, str, UsageError } from '../args.js';
import type { CommandIO } from '../command.js';
import { ProgressBar } from '../progress.js';

/** The flags only `kvpress calibrate kvzap` takes. */
export const KVZAP_OPTIONS = {
  type: { type: 'string' },
  width: { type: 'string' },
  epochs: { type: 'string' },
  ridge: { type: 'string' },
} as const;

export const KVZAP_USAGE = `
kvpress calibrate kvzap --input F [--input F2 ...] --output SURROGATE.safetensors [options]

Trains KVzap's surrogate (the kvzap press) on the model's own KVzip+ scores: every sample is
prefilled, the model repeats it (the kvzip press's reconstruction pass, about 2× the prefill) and,
per layer, each token's attention-input hidden state is paired with the log of its KVzip+ score in
every KV head; a linear map (ridge least squares, closed form) or a one-hidden-layer GELU MLP
(full-batch Adam on the squared error) is fitted per layer. Uses --input, --output, --model,
--tokenizer, --seq-len (default: the model's context, at most 1024; the repeat pass runs to about
twice that), --n-sink (KVzip's nSink, default 4) and --max-samples as above, and:
  --type linear|mlp      the surrogate (default mlp, as the library)
  --width N              hidden units of the MLP (default 32)
  --epochs N             MLP training epochs (default 300)
  --ridge X              ridge penalty of the linear fit, relative to the mean diagonal of XᵀX (default 0.001)

Output: safetensors, F32, the tensor names of the library's KVzapModel: linear
layers.{i}.weight [kv_heads, hidden], layers.{i}.bias [kv_heads]; mlp layers.{i}.0.weight
[width, hidden], layers.{i}.0.bias, layers.{i}.2.weight [kv_heads, width], layers.{i}.2.bias;
metadata format = "kvpress-kvzap", version, type, model, tokens.

Example:
  kvpress calibrate kvzap --input examples/story.txt --output /tmp/kvzap.safetensors --type linear
  kvpress scores --prompt "Once upon a time" --press dms_kvzap \\
      --press-option surrogate=/tmp/kvzap.safetensors --press-option modelType=linear --press-option threshold=-6 --json

kvpress calibrate fast-kvzip --input F [--input F2 ...] --output GATES.safetensors [--epochs N] [options]

Trains Fast KVzip's gates (the fast_kvzip press) on the model's own KVzip scores (plain, not
KVzip+), collected as for kvzap: per layer, gates of width 16 with 16 base keys per KV head are
fitted by full-batch Adam (--epochs, default 200) to the squared error of the log of the
group-mean gate score against the log KVzip score. Output: safetensors, F32, per layer i
layers.{i}.q_proj.weight [heads·16, hidden], layers.{i}.q_proj.bias, layers.{i}.q_norm [16],
layers.{i}.k_proj.weight [kv_heads·16, hidden], layers.{i}.k_norm, layers.{i}.base_keys
[kv_heads, 16, 16], layers.{i}.bias [heads]; metadata format = "kvpress-fast-kvzip".

Example:
  kvpress calibrate fast-kvzip --input examples/story.txt --output /tmp/gates.safetensors --epochs 50
  kvpress scores --prompt "Once upon a time" --press fast_kvzip --press-option gates=/tmp/gates.safetensors --ratio 0.5 --json`;

interface Helpers {
  listTextFiles(path: string): string[];
  textSamples(files: readonly string[], tok: Tokenizer, seqLen: number, maxSamples: number): number[][];
}

/** `kvpress calibrate kvzap`: parsed flags in, a surrogate file out. */
export async function calibrateKvzap(what: 'kvzap' | 'fast-kvzip', values: Record<string, unknown>, io: CommandIO, h: Helpers): Promise<number> {
  const inputs = (values.input as string[] | undefined) ?? [];
  if (inputs.length === 0) throw new UsageError('--input is required (a text file or a directory)');
  const output = str(values.output);
  if (output === undefined || extname(output).toLowerCase() !== '.safetensors') throw new UsageError('--output is required and must end in .safetensors');
  checkOutputFile('output', output);
  const type = str(values.type) ?? 'mlp';
  if (type !== 'linear' && type !== 'mlp') throw new UsageError(`--type must be linear or mlp, got "${type}"`);
  const nSink = num(values['n-sink'], 'n-sink', { min: 0, integer: true }) ?? 4;
  const maxSamples = num(values['max-samples'], 'max-samples', { min: 1, integer: true }) ?? Infinity;
  const width = num(values.width, 'width', { min: 1, integer: true }) ?? 32;
  const epochs = num(values.epochs, 'epochs', { min: 1, integer: true }) ?? (what === 'kvzap' ? 300 : 200);
  if (what === 'fast-kvzip') for (const k of ['type', 'width', 'ridge']) if (values[k] !== undefined) throw new UsageError(`--${k} belongs to \`kvpress calibrate kvzap\``);
  const ridge = num(values.ridge, 'ridge', { min: 0 }) ?? 1e-3;
  const files = inputs.flatMap(h.listTextFiles);

  const model = await loadModel(str(values.model), { tokenizer: str(values.tokenizer), backend: io.backend() });
  const tok = model.tokenizer;
  if (!tok) throw noTokenizer(str(values.model));
  const context = model.config.maxPositionEmbeddings;
  const seqLen = num(values['seq-len'], 'seq-len', { min: 2, max: context, integer: true }) ?? Math.min(context, 1024);
  const samples = h.textSamples(files, tok, seqLen, maxSamples);
  if (samples.length === 0) throw new UsageError(`no text in ${inputs.join(', ')}`);

  const bar = new ProgressBar(io, what === 'kvzap' ? 'kvzip+ scores' : 'kvzip scores', 'samples');
  const data = collectSurrogateData(model, samples, { nSink, kvzipPlusNormalization: what === 'kvzap', onSample: (done, total) => bar.update(done, total) });
  if (what === 'fast-kvzip') {
    const c = model.config, gates = trainGates(data, c.numHeads, c.numKvHeads, c.hiddenSize, model.source, { epochs });
    writeGates(output, gates);
    const loss = data.map((d, l) => gateLoss(gates, Object.fromEntries(Object.entries(gates.layers[l]).map(([k, v]) => [k, Float64Array.from(v as Float32Array)])) as never, d).toFixed(3)).join(', ');
    io.err(`[gates from ${samples.length} samples, ${data[0].n} tokens per layer; training MSE of log-scores per layer: ${loss} → ${output}]\n`);
    return 0;
  }
  const surrogate = trainSurrogate(data, model.config.hiddenSize, model.config.numKvHeads, model.source, { type, width, epochs, ridge });
  writeSurrogate(output, surrogate);
  const loss = data.map((d, l) => surrogateLoss(surrogate, l, d).toFixed(3)).join(', ');
  io.err(`[${type} surrogate from ${samples.length} samples, ${data[0].n} tokens per layer; training MSE of log-scores per layer: ${loss} → ${output}]\n`);
  return 0;
}
