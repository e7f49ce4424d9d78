import { kvDtypeFlag, kvDtypeOption, kvDtypeUsage } from './kv-dtype.js';
import { readFileSync } from 'node:fs';
import { loadModel } from '../../model/load.js';
import type { Model } from '../../model/model.js';
import { prefill, type Press, type ScoreObserver } from '../../presses/index.js';
import { parse, str, UsageError, noTokenizer } from '../args.js';
import type { Command } from '../command.js';
import { pressFlags, pressFlagsUsage, pressFromFlags } from './presses.js';

export interface LayerScores {
  scores: number[][] | null;
  kept: number[][];
  /** Per KV head, the key channels the cache keeps, ascending: only for a press that pruned some (ThinK). */
  channels?: number[][];
}

export const scoresCommand: Command = {
  name: 'scores',
  summary: "show a press's per-head scores and the positions it keeps",
  usage: `kvpress scores (--prompt TEXT | --prompt-file F | --tokens-file F) --press NAME [options] --json

Prefills the whole sequence with the press active and reports, for every layer and KV head, the
score of every position (before top-k) and the positions kept.

Options:
  --prompt TEXT          the sequence, tokenized with BOS
  --prompt-file F        the sequence read from a text file, tokenized with BOS
  --tokens-file F        a JSON array of token ids, used as they are (BOS included by the caller)
${pressFlagsUsage}
  --model PATH           llama2.c .bin, .gguf file or Hugging Face directory (default: embedded stories260K)
  --tokenizer PATH       tokenizer .bin for a llama2.c checkpoint (default: found beside it)
${kvDtypeUsage}
  --json                 print one JSON object on stdout:
                         {"tokens": number[], "layers": [{"scores": number[][] | null, "kept": number[][]}]}
                         layers[l].scores[h][t]: score of position t for KV head h (null for presses
                         that do not score); layers[l].kept[h]: the ascending positions head h kept;
                         "logScores": true when the scores are natural logs; a press that prunes
                         key channels (think) adds layers[l].channels[h], the channels head h keeps
                         Without --json: a summary per layer.

Examples:
  kvpress scores --prompt "Once upon a time" --press expected_attention --ratio 0.5 --json
  kvpress scores --tokens-file ids.json --press snapkv --ratio 0.25 --press-option windowSize=8 --json`,
  options: {
    prompt: { type: 'string' },
    'prompt-file': { type: 'string' },
    'tokens-file': { type: 'string' },
    ...pressFlags,
    model: { type: 'string' },
    tokenizer: { type: 'string' },
    ...kvDtypeOption,
    json: { type: 'boolean' },
  },
  async run(argv, io) {
    const { values } = parse(argv, this.options);
    const sources = (['prompt', 'prompt-file', 'tokens-file'] as const).filter((k) => values[k] !== undefined);
    if (sources.length !== 1) throw new UsageError(`give exactly one of --prompt, --prompt-file, --tokens-file${sources.length ? ` (got ${sources.map((s) => `--${s}`).join(', ')})` : ''}`);
    if (values.press === undefined) throw new UsageError('--press NAME is required (`kvpress presses` lists them)');
    // Press mistakes are reported before the model is loaded.
    pressFromFlags(values);
    const kvDtype = kvDtypeFlag(values['kv-dtype']);
    const model = await loadModel(str(values.model), { tokenizer: str(values.tokenizer), backend: io.backend(), kvDtype });
    const press = pressFromFlags(values, model)!;
    const c = model.config;

    let tokens: number[];
    if (sources[0] === 'tokens-file') {
      tokens = readTokens(str(values['tokens-file'])!, c.vocabSize);
    } else {
      const tok = model.tokenizer;
      if (!tok) throw noTokenizer(str(values.model), ', or use --tokens-file');
      const text = sources[0] === 'prompt' ? str(values.prompt)! : readText(str(values['prompt-file'])!);
      tokens = tok.encode(text, { bos: true });
    }
    if (tokens.length === 0) throw new UsageError('the sequence is empty');
    if (tokens.length > c.maxPositionEmbeddings) throw new UsageError(`the sequence has ${tokens.length} tokens, more than the model's context of ${c.maxPositionEmbeddings}`);

    const { layers, logScores } = pressScores(model, press, tokens);

    if (values.json === true) {
      io.out(JSON.stringify({ tokens, layers, ...(logScores ? { logScores: true } : {}) }) + '\n');
      return 0;
    }
    io.out(`${press.name}, ratio ${press.compressionRatio}, ${tokens.length} tokens${logScores ? ', log-scores' : ''}\n`);
    layers.forEach((l, i) => {
      const range = l.scores ? scoreRange(l.scores) : 'no scores';
      io.out(`layer ${i}: kept per head ${l.kept.map((k) => k.length).join(' ')}; ${range}\n`);
    });
    return 0;
  },
};

/** What `kvpress scores --json` prints (and `POST /v1/kvpress/scores` returns), plus the bytes kept. */
export interface PressScores {
  layers: LayerScores[];
  logScores: boolean;
  /** KV bytes held after the prefill with the press. */
  keptBytes: number;
}

/** Prefills `tokens` with `press` active, recording every layer's scores and kept positions. */
export function pressScores(model: Model, press: Press, tokens: readonly number[]): PressScores {
  const c = model.config;
  const observed: (Float64Array[] | null)[] = Array.from({ length: c.numLayers }, () => null);
  let logScores = false;
  const observer: ScoreObserver = {
    onScores(layer, scores, log) {
      observed[layer] = scores.map((s) => Float64Array.from(s));
      logScores ||= log;
    },
  };
  press.observer = observer;
  try {
    const { cache } = prefill(model, tokens, { press, logits: 'none' });
    const layers: LayerScores[] = cache.layers.map((l, i) => ({
      scores: observed[i] ? observed[i]!.map((s) => Array.from(s)) : null,
      kept: Array.from({ length: c.numKvHeads }, (_, g) => Array.from(l.headPositions(g))),
      ...(l.keyChannels.some((ch) => ch) ? { channels: l.keyChannels.map((ch) => (ch ? Array.from(ch) : Array.from({ length: c.headDim }, (_, d) => d))) } : {}),
    }));
    return { layers, logScores, keptBytes: cache.bytes() };
  } finally {
    press.observer = null;
  }
}

function scoreRange(scores: number[][]): string {
  let lo = Infinity, hi = -Infinity;
  for (const s of scores) for (const v of s) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  return lo <= hi ? `scores in [${lo.toPrecision(4)}, ${hi.toPrecision(4)}]` : 'no finite score';
}

export function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new UsageError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
}

/** A JSON array of token ids, each checked against the vocabulary. */
export function readTokens(path: string, vocab: number): number[] {
  let ids: unknown;
  try {
    ids = JSON.parse(readText(path));
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(ids)) throw new UsageError(`${path}: expected a JSON array of token ids`);
  ids.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= vocab) throw new UsageError(`${path}: entry ${i} (${JSON.stringify(t)}) is not a token id in [0, ${vocab})`);
  });
  return ids as number[];
}
