/**
 * xorshift64* as in llama2.c's run.c, so seeded runs are reproducible across engines that
 * share it. Returns floats in [0, 1).
 */
export class Rng {
  private state: bigint;

  constructor(seed: number) {
    this.state = BigInt.asUintN(64, BigInt(Math.floor(seed)) || 1n);
  }

  nextU32(): number {
    let s = this.state;
    s ^= s >> 12n;
    s = BigInt.asUintN(64, s ^ (s << 25n));
    s ^= s >> 27n;
    this.state = s;
    return Number(BigInt.asUintN(64, s * 0x2545f4914f6cdd1dn) >> 32n);
  }

  nextFloat(): number {
    return (this.nextU32() >>> 8) / 16777216;
  }
}

export interface SamplingOptions {
  /** 0 = greedy (argmax, lowest id on ties). Default 0. */
  temperature?: number;
  /** Nucleus sampling mass in (0, 1]; 1 disables it. Default 1. */
  topP?: number;
  /** Keep only the k most likely tokens; 0 disables it. Default 0. */
  topK?: number;
  /** Seed of the sampler's RNG. Default: derived from the clock. */
  seed?: number;
}

/** Picks the next token from a logits vector; buffers are sized once per vocabulary. */
export class Sampler {
  readonly temperature: number;
  readonly topP: number;
  readonly topK: number;
  private readonly rng: Rng;
  private readonly probs: Float64Array;
  private readonly order: Int32Array;

  constructor(vocabSize: number, opts: SamplingOptions = {}) {
    this.temperature = opts.temperature ?? 0;
    this.topP = opts.topP ?? 1;
    this.topK = opts.topK ?? 0;
    if (!(this.temperature >= 0) || !Number.isFinite(this.temperature)) throw new Error(`temperature must be a number ≥ 0, got ${opts.temperature}`);
    if (!(this.topP > 0 && this.topP <= 1)) throw new Error(`topP must be in (0, 1], got ${opts.topP}`);
    if (!Number.isInteger(this.topK) || this.topK < 0) throw new Error(`topK must be an integer ≥ 0, got ${opts.topK}`);
    this.rng = new Rng(opts.seed ?? Date.now());
    this.probs = new Float64Array(vocabSize);
    this.order = new Int32Array(vocabSize);
  }

  sample(logits: Float32Array): number {
    const n = this.probs.length;
    for (let i = 0; i < n; i++) {
      if (logits[i] - logits[i] !== 0) throw new Error(`the model produced a non-finite logit (${logits[i]} for token ${i}): its weights or activations overflow float32; check the checkpoint`);
    }
    if (this.temperature === 0) return argmax(logits, n);
    let max = -Infinity;
    for (let i = 0; i < n; i++) max = Math.max(max, logits[i]);
    let sum = 0;
    for (let i = 0; i < n; i++) sum += this.probs[i] = Math.exp((logits[i] - max) / this.temperature);
    for (let i = 0; i < n; i++) this.probs[i] /= sum;
    const coin = this.rng.nextFloat();
    if (this.topK === 0 && this.topP >= 1) {
      let cdf = 0;
      for (let i = 0; i < n; i++) {
        cdf += this.probs[i];
        if (coin < cdf) return i;
      }
      return n - 1;
    }
    // Candidates by descending probability (ties: lower id first), cut by top-k then top-p.
    const p = this.probs;
    for (let i = 0; i < n; i++) this.order[i] = i;
    this.order.sort((a, b) => p[b] - p[a] || a - b);
    let last = this.topK > 0 ? Math.min(this.topK, n) - 1 : n - 1;
    let cum = 0;
    for (let i = 0; i <= last; i++) {
      cum += p[this.order[i]];
      if (cum > this.topP) {
        last = i;
        break;
      }
    }
    let mass = 0;
    for (let i = 0; i <= last; i++) mass += p[this.order[i]];
    const r = coin * mass;
    let cdf = 0;
    for (let i = 0; i <= last; i++) {
      cdf += p[this.order[i]];
      if (r < cdf) return this.order[i];
    }
    return this.order[last];
  }
}

export function argmax(x: ArrayLike<number>, n = x.length): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[i] > x[best]) best = i;
  return best;
}
