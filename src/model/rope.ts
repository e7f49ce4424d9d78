import type { ModelConfig } from './config.js';

/**
 * Rotary position embedding frequencies, with the scaling variants of Hugging Face's
 * `ROPE_INIT_FUNCTIONS` that we support (default, linear, llama3), and GGUF's per-frequency
 * factors. Float64, so that the
 * angles pos·θ stay exact at long positions.
 */
export class Rope {
  /** θ_j for j < headDim/2 (already scaled). */
  readonly invFreq: Float64Array;
  readonly half: number;

  constructor(config: ModelConfig) {
    const d = config.headDim;
    this.half = d / 2;
    this.invFreq = new Float64Array(this.half);
    for (let j = 0; j < this.half; j++) this.invFreq[j] = 1 / Math.pow(config.ropeTheta, (2 * j) / d);
    const s = config.ropeScaling;
    const factors = config.ropeFreqFactors;
    if (factors) {
      if (factors.length !== this.half) throw new Error(`RoPE: ${factors.length} frequency factors for ${this.half} frequencies`);
      for (let j = 0; j < this.half; j++) this.invFreq[j] /= factors[j];
    }
    if (s?.type === 'linear') {
      for (let j = 0; j < this.half; j++) this.invFreq[j] /= s.factor;
    } else if (s?.type === 'llama3') {
      const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
      const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
      for (let j = 0; j < this.half; j++) {
        const f = this.invFreq[j];
        const wavelen = (2 * Math.PI) / f;
        if (wavelen > lowWavelen) this.invFreq[j] = f / s.factor;
        else if (wavelen >= highWavelen) {
          const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
          this.invFreq[j] = (1 - smooth) * (f / s.factor) + smooth * f;
        }
      }
    }
  }

  /** Fills cos/sin tables [n][headDim/2] for `n` positions. */
  tables(positions: ArrayLike<number>, n: number, cos: Float32Array, sin: Float32Array): void {
    const half = this.half;
    for (let r = 0; r < n; r++) {
      const p = positions[r];
      for (let j = 0; j < half; j++) {
        const a = p * this.invFreq[j];
        cos[r * half + j] = Math.cos(a);
        sin[r * half + j] = Math.sin(a);
      }
    }
  }
}
