/**
 * The record of one finished run: what metrics.json holds. The runner writes it, the tasks fill
 * its scores, and `kvpress report` reads it back from any folder the runs were written to.
 */
import type { KvDtype } from '../cache/format.js';

/** How the report shows one score. */
export interface ScoreInfo {
  label: string;
  /** Absent for descriptive numbers (token counts, achieved ratios). */
  better?: 'higher' | 'lower';
  /** Drawn as a plot (the headline scores); every score gets a table. */
  plot: boolean;
  /** Short y-axis label for the plot (default: the label). */
  axis?: string;
  /** Fixed plot range, e.g. [0, 100] for percentages. */
  range?: [number, number];
}

/** The content of metrics.json. */
export interface RunMetrics {
  dataset: string;
  model: string;
  press: string;
  compressionRatio: number;
  queryAware: boolean;
  /** KV cache type of the run; absent in runs written before the axis existed (f32). */
  kvDtype?: KvDtype;
  /** A decoding press's target size (entries per KV head after each compression); absent for the others. */
  targetSize?: number;
  /**
   * True when the press sets its own budget (a threshold: sim_layer_kv, dms_…) and took no ratio:
   * compressionRatio is 0 and the achieved_ratio score says what it removed.
   */
  ownBudget?: boolean;
  items: number;
  scores: Record<string, number>;
  scoreInfo: Record<string, ScoreInfo>;
  seconds: number;
}
