/**
 * What a caller asks of `runEval`, what it gets back, and the command-line forms of its options
 * (ratios, target sizes, shards, press options) parsed into them. A mistake in what was asked is
 * an EvalError: one line, exit 2.
 */
import type { Backend } from '../backend/backend.js';
import type { KvDtype } from '../cache/format.js';
import type { RunSpec } from './plan.js';

export const DEFAULT_RATIOS: readonly number[] = [0.25, 0.5, 0.75, 0.875];
export const DEFAULT_SEED = 42;

/** A mistake in what was asked (unknown dataset or press, bad ratio or shard): one line, exit 2. */
export class EvalError extends Error {}

/** A press option from the command line: `key=value` for every press that has `key`, or `press.key=value`. */
export interface PressOptionArg {
  press?: string;
  key: string;
  value: string;
}

export interface EvalOptions {
  /** continuation, name_recall, sampled_recall, ruler, niah or jsonl:PATH. */
  dataset: string;
  presses: readonly string[];
  ratios?: readonly number[];
  /**
   * KV cache types of the compressed runs (default ['f32']): the grid is repeated per type, each
   * with its own no-press run; the uncompressed references stay f32, so KL and ΔNLL measure
   * type and press together.
   */
  kvDtypes?: readonly KvDtype[];
  /**
   * Target sizes (entries per KV head after each compression) of the presses that compress to a
   * target while generating (those with a targetSize option, e.g. decoding_expected_attention):
   * such a press runs once per target size instead of per ratio (per ratio × target size when it
   * also compresses the prompt). Required when one of them is among `presses`.
   */
  targetSizes?: readonly number[];
  /** Model path (llama2.c .bin or Hugging Face directory); default the embedded stories260K. */
  model?: string;
  /** Items per run (RULER: samples per task). */
  limit?: number;
  /** Default "results". */
  output?: string;
  /** 1-based: shard `index` of `count` runs plan entries index, index+count, … (0-based: index−1, …). */
  shard?: { index: number; count: number };
  pressOptions?: readonly PressOptionArg[];
  /** continuation / name_recall / sampled_recall: share of the tokens compressed (default 0.6). */
  contextFraction?: number;
  /** ruler / niah: target context length in tokens (default min(4096, the model's window)). */
  contextLength?: number;
  /** ruler / niah / jsonl: append the question to the context before compression. */
  queryAware?: boolean;
  seed?: number;
  backend?: Backend;
  onProgress?: (p: EvalProgress) => void;
  /** Notices worth a line on stderr (skipped presses, finished runs). */
  onNotice?: (line: string) => void;
}

export interface EvalProgress {
  run: RunSpec;
  /** Runs finished by this invocation, and runs it will execute in all. */
  runsDone: number;
  runsTotal: number;
  item: number;
  items: number;
  elapsedMs: number;
  /** Estimated time left, null until the first item is done. */
  etaMs: number | null;
}

export interface EvalSummary {
  output: string;
  /** The whole grid, this shard's part of it, what was already complete and what ran now. */
  planned: RunSpec[];
  mine: RunSpec[];
  skipped: RunSpec[];
  ran: RunSpec[];
  /**
   * Presses left out of a continuation or recall set, each with a note saying why: decoding presses
   * (these tasks generate nothing) and presses that read the question (their items have none).
   */
  excluded: string[];
}

/** Parses "i/n" with 1 ≤ i ≤ n. */
export function parseShard(s: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(s.trim());
  const index = m ? Number(m[1]) : NaN, count = m ? Number(m[2]) : NaN;
  if (!m || !(count >= 1) || !(index >= 1 && index <= count)) throw new EvalError(`--shard must be i/n with 1 ≤ i ≤ n (e.g. 1/4), got "${s}"`);
  return { index, count };
}

/** Parses "256,1024": distinct integers ≥ 1. */
export function parseTargetSizes(s: string): number[] {
  const parts = s.split(',').map((p) => p.trim());
  const sizes = parts.map((p) => (/^\d+$/.test(p) ? Number(p) : NaN));
  const bad = parts.find((_, i) => !(sizes[i] >= 1));
  if (bad !== undefined) throw new EvalError(`--target-sizes must be comma-separated integers ≥ 1, got "${bad}" in "${s}"`);
  if (new Set(sizes).size !== sizes.length) throw new EvalError(`--target-sizes has a repeated value: "${s}"`);
  return sizes;
}

/** Parses "0.25,0.5": distinct numbers in [0, 1). */
export function parseRatios(s: string): number[] {
  const parts = s.split(',').map((p) => p.trim());
  const ratios = parts.map((p) => (p === '' ? NaN : Number(p)));
  const bad = parts.find((_, i) => !(ratios[i] >= 0 && ratios[i] < 1));
  if (bad !== undefined) throw new EvalError(`--ratios must be comma-separated numbers in [0, 1), got "${bad}" in "${s}"`);
  if (new Set(ratios).size !== ratios.length) throw new EvalError(`--ratios has a repeated value: "${s}"`);
  return ratios;
}

/** Parses "key=value" or "press.key=value". */
export function parsePressOption(s: string): PressOptionArg {
  const m = /^(?:([A-Za-z0-9_]+)\.)?([A-Za-z][A-Za-z0-9_]*)=(.*)$/.exec(s);
  if (!m) throw new EvalError(`--press-option must be key=value or press.key=value, got "${s}"`);
  return { press: m[1], key: m[2], value: m[3] };
}
