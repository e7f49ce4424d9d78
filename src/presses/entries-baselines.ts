import { AdaKVPress } from './adakv.js';
import { BlockPress } from './block.js';
import { CriticalAdaKVPress, CriticalKVPress } from './critical.js';
import { KeyDiffPress } from './keydiff.js';
import { KnormPress } from './knorm.js';
import { LagKVPress } from './lagkv.js';
import { ObservedAttentionPress } from './observed-attention.js';
import { PyramidKVPress } from './pyramidkv.js';
import { QFilterPress } from './qfilter.js';
import { RandomPress } from './random.js';
import type { OptionSpec, OptionValues, PressEntry } from './registry.js';
import { SnapKVPress, type ProtectedOrder } from './snapkv.js';
import { StreamingLLMPress } from './streaming-llm.js';
import { TOVAPress } from './tova.js';

/**
 * Registry entries of the baseline presses and of the wrapper combinations over them that the
 * Python evaluation registry lists (adakv_snapkv, critical_snapkv, critical_adakv_snapkv,
 * block_keydiff). Names are the Python registry's; options the spec's defaults, camelCase.
 */

const integer = (def: number, description: string, min = 1): OptionSpec => ({ type: 'integer', default: def, description, min });
const number = (def: number, description: string, min: number, max?: number): OptionSpec => ({ type: 'number', default: def, description, min, max });

const protectedOrder: OptionSpec = {
  type: 'string', default: 'recent', values: ['recent', 'position'],
  description: 'which protected entries survive a budget below what the press protects: recent = the most recent first (sinks first for lagkv), position = lower positions first',
};
const snapOptions = {
  windowSize: integer(64, 'recent tokens whose attention scores the rest (always kept)'),
  kernelSize: integer(5, 'width of the average pooling along the sequence (odd)'),
  protectedOrder,
};
const snap = (o: OptionValues) => ({ windowSize: o.windowSize as number, kernelSize: o.kernelSize as number, protectedOrder: o.protectedOrder as ProtectedOrder });
const alphaOption = { alphaSafeguard: number(0.2, 'share of its fair budget every head is guaranteed', 0, 1) };
const criticalOptions = {
  epsilon: number(1e-4, 'added to the inner score before weighting by ‖W_O v‖₁', 0),
  firstStageRatio: number(0.5, 'share of the budget chosen by the inner score alone', 0, 1),
};
const critical = (o: OptionValues) => ({ epsilon: o.epsilon as number, firstStageRatio: o.firstStageRatio as number });

export const baselineEntries: PressEntry[] = [
  {
    name: 'random',
    description: 'Random eviction, the floor to beat (seeded, reproducible)',
    options: { seed: integer(42, 'PRNG seed (the Python evaluation seeds everything with 42)', 0) },
    create: (r, o) => new RandomPress(r, { seed: o.seed as number }),
  },
  {
    name: 'knorm',
    description: 'Knorm: keep the keys with the smallest L2 norm (arXiv 2406.11430)',
    options: {},
    create: (r) => new KnormPress(r),
  },
  {
    name: 'streaming_llm',
    description: 'StreamingLLM: keep the first nSink tokens and the most recent ones (arXiv 2309.17453)',
    options: { nSink: integer(4, 'attention-sink tokens kept at the start', 0) },
    create: (r, o) => new StreamingLLMPress(r, { nSink: o.nSink as number }),
  },
  {
    name: 'snapkv',
    description: 'SnapKV: attention of the last windowSize queries, average-pooled (arXiv 2404.14469)',
    options: snapOptions,
    create: (r, o) => new SnapKVPress(r, snap(o)),
  },
  {
    name: 'tova',
    description: "TOVA: the last token's attention averaged over all heads, same tokens for every head (arXiv 2401.06104)",
    options: {},
    create: (r) => new TOVAPress(r),
  },
  {
    name: 'observed_attention',
    description: 'Observed attention (H2O-like): mean attention each key received during the prefill; O(T²) memory (arXiv 2306.14048)',
    options: {},
    create: (r) => new ObservedAttentionPress(r),
  },
  {
    name: 'keydiff',
    description: 'KeyDiff: keep the keys least similar to the mean key direction (arXiv 2504.15364)',
    options: {},
    create: (r) => new KeyDiffPress(r),
  },
  {
    name: 'lagkv',
    description: 'LagKV: keys and values scored against the next partition of lagSize tokens (arXiv 2504.04704)',
    options: {
      nSink: integer(4, 'attention-sink tokens always kept', 0),
      lagSize: integer(128, 'partition length; prompts shorter than nSink + 2·lagSize keep the most recent tokens'),
      crossScoring: { type: 'boolean', default: false, description: 'compare softmax scores across partitions instead of within-partition ranks' },
      protectedOrder,
    },
    create: (r, o) => new LagKVPress(r, { nSink: o.nSink as number, lagSize: o.lagSize as number, crossScoring: o.crossScoring as boolean, protectedOrder: o.protectedOrder as ProtectedOrder }),
  },
  {
    name: 'pyramidkv',
    description: 'PyramidKV: SnapKV scores with budgets falling linearly from the lowest layer to the top (arXiv 2406.02069)',
    options: { ...snapOptions, beta: integer(20, 'pyramid steepness: the top layer keeps about 1/beta of the average') },
    create: (r, o) => new PyramidKVPress(r, { ...snap(o), beta: o.beta as number }),
  },
  {
    name: 'qfilter',
    description: 'Q-Filters: project keys on a calibrated query direction per head (arXiv 2503.02812); needs `kvpress calibrate` statistics',
    options: { stats: { type: 'string', default: '', description: 'query-statistics file (.json or .safetensors) written by `kvpress calibrate`' } },
    create: (r, o) => {
      if (!o.stats) throw new Error('needs Q-filters: pass --press-option stats=PATH, a file written by `kvpress calibrate`');
      return new QFilterPress(r, o.stats as string);
    },
  },
  {
    name: 'adakv_snapkv',
    description: 'AdaKV over SnapKV: head-adaptive budgets with real eviction (arXiv 2407.11550)',
    options: { ...alphaOption, ...snapOptions },
    create: (r, o) => new AdaKVPress(new SnapKVPress(r, snap(o)), r, o.alphaSafeguard as number),
  },
  {
    name: 'critical_snapkv',
    description: 'CriticalKV over SnapKV: scores weighted by ‖W_O v‖₁ after a first stage (arXiv 2502.03805)',
    options: { ...criticalOptions, ...snapOptions },
    create: (r, o) => new CriticalKVPress(new SnapKVPress(r, snap(o)), r, critical(o)),
  },
  {
    name: 'critical_adakv_snapkv',
    description: 'CriticalAdaKV over SnapKV: AdaKV budgets with CriticalKV selection inside each head (arXiv 2502.03805)',
    options: { ...alphaOption, ...criticalOptions, ...snapOptions },
    create: (r, o) => new CriticalAdaKVPress(new SnapKVPress(r, snap(o)), r, { ...critical(o), alphaSafeguard: o.alphaSafeguard as number }),
  },
  {
    name: 'block_keydiff',
    description: 'KeyDiff applied block by block under a fixed budget, as its paper (arXiv 2504.15364)',
    options: { blockSize: integer(128, 'tokens per simulated prefill block') },
    create: (r, o) => new BlockPress(new KeyDiffPress(r), r, o.blockSize as number),
  },
];
