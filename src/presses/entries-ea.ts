import { AdaKVPress } from './adakv.js';
import { CriticalAdaKVPress, CriticalKVPress } from './critical.js';
import { CompressionRatioDecodingPress, DecodingPress, PrefillDecodingPress, type DecodingOptions } from './decoding.js';
import { ExpectedAttentionStatsPress } from './expected-attention-stats.js';
import { eaOptions, ExpectedAttentionPress, type ExpectedAttentionOptions } from './expected-attention.js';
import { withDefaults } from './options.js';
import type { Press } from './press.js';
import type { OptionSpec, OptionValues, PressEntry } from './registry.js';

/** Expected Attention's options with other defaults for a registered configuration. */
function eaOptionsWith(defaults: { epsilon?: number; useVnorm?: boolean } = {}): Record<string, OptionSpec> {
  return withDefaults(eaOptions, defaults);
}

const alphaOption: Record<string, OptionSpec> = {
  alphaSafeguard: { type: 'number', default: 0.2, min: 0, max: 1, description: 'AdaKV: share of its fair budget every head keeps for sure' },
};

const criticalOptions: Record<string, OptionSpec> = {
  criticalEpsilon: { type: 'number', default: 1e-4, min: 0, description: 'CriticalKV: added to the score before weighting by ‖W_O v‖₁' },
  firstStageRatio: { type: 'number', default: 0.5, min: 0, max: 1, description: 'CriticalKV: share of the budget chosen by the score alone' },
};

function decodingOptions(withTarget: boolean): Record<string, OptionSpec> {
  return {
    compressionInterval: { type: 'integer', default: 512, min: 1, description: 'decoding steps between two compressions' },
    ...(withTarget ? { targetSize: { type: 'integer', default: 2048, min: 1, description: 'entries per KV head left after a compression' } as OptionSpec } : {}),
    hiddenStatesBufferSize: { type: 'integer', default: 256, min: 0, description: 'decoding passes whose hidden states are scored (0 = the current one)' },
  };
}

function ea(ratio: number, o: OptionValues): ExpectedAttentionPress {
  return new ExpectedAttentionPress(ratio, eaOpts(o));
}

/** The EA options among a composed entry's values (the others belong to the wrappers). */
function eaOpts(o: OptionValues): ExpectedAttentionOptions {
  const out: OptionValues = {};
  for (const k of Object.keys(eaOptions)) out[k] = o[k];
  return out as ExpectedAttentionOptions;
}

function decOpts(o: OptionValues): DecodingOptions {
  return { compressionInterval: o.compressionInterval as number, targetSize: o.targetSize as number, hiddenStatesBufferSize: o.hiddenStatesBufferSize as number };
}

/** Decoding presses budget by targetSize, so a compression ratio would silently mean nothing. */
function noRatio(ratio: number): void {
  if (ratio !== 0) throw new Error(`compresses to targetSize entries per head during decoding and takes no compression ratio (got ${ratio}); set --press-option targetSize=N, or use compression_ratio_decoding_expected_attention`);
}

/** The registry entries of Expected Attention and its configurations (snake_case as kvpress's evaluation registry). */
export const eaEntries: PressEntry[] = [
  {
    name: 'expected_attention',
    description: 'Expected Attention (arXiv 2510.00636): expected softmax attention of future queries modelled as a Gaussian, × value norm',
    options: eaOptions,
    create: (r, o) => ea(r, o),
  },
  {
    name: 'adakv_expected_attention',
    description: 'AdaKV over Expected Attention: head-adaptive budgets (real per-head eviction)',
    options: { ...eaOptions, ...alphaOption },
    create: (r, o) => new AdaKVPress(ea(r, o), r, o.alphaSafeguard as number),
  },
  {
    name: 'adakv_expected_attention_e2',
    description: 'AdaKV over Expected Attention with epsilon 1e-2: the leaderboard configuration',
    options: { ...eaOptionsWith({ epsilon: 1e-2 }), ...alphaOption },
    create: (r, o) => new AdaKVPress(ea(r, o), r, o.alphaSafeguard as number),
  },
  {
    name: 'expected_attention_stats',
    description: 'Expected Attention with query statistics from `kvpress calibrate` (option stats)',
    options: {
      stats: { type: 'string', default: '', description: 'query statistics file (.json or .safetensors) written by `kvpress calibrate`' },
      ...eaOptions,
    },
    create: (r, o) => {
      const file = o.stats as string;
      if (!file) throw new Error('needs query statistics: run `kvpress calibrate --input TEXT --output stats.safetensors` and pass --press-option stats=stats.safetensors');
      return new ExpectedAttentionStatsPress(r, file, eaOpts(o));
    },
  },
  {
    name: 'critical_expected_attention',
    description: 'CriticalKV over Expected Attention (useVnorm off): two stages, the second weighted by ‖W_O v‖₁',
    options: { ...eaOptionsWith({ useVnorm: false }), ...criticalOptions },
    create: (r, o) => new CriticalKVPress(ea(r, o), r, { epsilon: o.criticalEpsilon as number, firstStageRatio: o.firstStageRatio as number }),
  },
  {
    name: 'critical_adakv_expected_attention',
    description: 'CriticalAdaKV over Expected Attention (useVnorm off): head-adaptive budgets and ‖W_O v‖₁ weighting',
    options: { ...eaOptionsWith({ useVnorm: false }), ...criticalOptions, ...alphaOption },
    create: (r, o) => new CriticalAdaKVPress(ea(r, o), r, {
      epsilon: o.criticalEpsilon as number, firstStageRatio: o.firstStageRatio as number, alphaSafeguard: o.alphaSafeguard as number,
    }),
  },
  {
    name: 'decoding_expected_attention',
    phase: 'decoding',
    description: 'Expected Attention during generation: every compressionInterval steps, back to targetSize entries per head',
    options: { ...decodingOptions(true), ...eaOptions },
    create: (r, o) => {
      noRatio(r);
      return new DecodingPress(ea(0, o), decOpts(o));
    },
  },
  {
    name: 'decoding_adakv_expected_attention_e2',
    phase: 'decoding',
    description: 'AdaKV over Expected Attention (epsilon 1e-2) during generation',
    options: { ...decodingOptions(true), ...eaOptionsWith({ epsilon: 1e-2 }), ...alphaOption },
    create: (r, o) => {
      noRatio(r);
      return new DecodingPress(new AdaKVPress(ea(0, o), 0, o.alphaSafeguard as number), decOpts(o));
    },
  },
  {
    name: 'prefill_decoding_expected_attention',
    phase: 'both',
    description: 'Expected Attention at the ratio on the prompt, then during generation as decoding_expected_attention',
    options: { ...decodingOptions(true), ...eaOptions },
    create: (r, o) => new PrefillDecodingPress(ea(r, o), new DecodingPress(ea(0, o), decOpts(o))),
  },
  {
    name: 'compression_ratio_decoding_expected_attention',
    phase: 'decoding',
    description: 'Expected Attention during generation keeping (1 − ratio) of every token seen so far',
    options: { ...decodingOptions(false), ...eaOptions },
    create: (r, o) => new CompressionRatioDecodingPress(ea(0, o), r, decOpts(o)),
  },
];
