import type { AttentionArgs, Backend, PagedAttentionArgs } from '../backend.js';
import { pagedAttention } from './paged-attention.js';

/**
 * The TypeScript reference backend: always available, and the oracle the fast backends are
 * tested against. Straightforward loops, tiled where it costs no clarity.
 */
export class JsBackend implements Backend {
  readonly name = 'js';
  readonly threads = 1;
  constructor(readonly description = 'TypeScript reference kernels (single thread)') {}

  setThreads(_n: number): void {}

  matmul(out: Float32Array, x: Float32Array, w: Float32Array, m: number, n: number, k: number, bias?: Float32Array | null): void {
    // 4 weight rows at a time: each loaded x element feeds four accumulators.
    for (let i = 0; i < m; i++) {
      const xo = i * k;
      const oo = i * n;
      let j = 0;
      for (; j + 4 <= n; j += 4) {
        const w0 = j * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (let p = 0; p < k; p++) {
          const xv = x[xo + p];
          s0 += xv * w[w0 + p];
          s1 += xv * w[w1 + p];
          s2 += xv * w[w2 + p];
          s3 += xv * w[w3 + p];
        }
        out[oo + j] = s0; out[oo + j + 1] = s1; out[oo + j + 2] = s2; out[oo + j + 3] = s3;
      }
      for (; j < n; j++) {
        const wo = j * k;
        let s = 0;
        for (let p = 0; p < k; p++) s += x[xo + p] * w[wo + p];
        out[oo + j] = s;
      }
      if (bias) for (let c = 0; c < n; c++) out[oo + c] += bias[c];
    }
  }

  matmulBf16(out: Float32Array, x: Float32Array, w: Uint16Array, m: number, n: number, k: number, bias?: Float32Array | null): void {
    // Widening bf16 to f32 is exact: 4 weight rows at a time are widened into scratch and
    // multiplied as matmul does (same sums, same bits as matmul over the widened matrix),
    // never the whole matrix at once.
    if (this.#rows.length < 4 * k) this.#rows = new Float32Array(4 * k);
    const wide = this.#rows, bits = new Uint32Array(wide.buffer);
    for (let j = 0; j < n; j += 4) {
      const nb = Math.min(4, n - j);
      for (let i = 0; i < nb * k; i++) bits[i] = w[j * k + i] << 16;
      for (let i = 0; i < m; i++) {
        const xo = i * k, oo = i * n + j;
        if (nb === 4) {
          let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
          for (let p = 0; p < k; p++) {
            const xv = x[xo + p];
            s0 += xv * wide[p];
            s1 += xv * wide[k + p];
            s2 += xv * wide[2 * k + p];
            s3 += xv * wide[3 * k + p];
          }
          out[oo] = s0; out[oo + 1] = s1; out[oo + 2] = s2; out[oo + 3] = s3;
        } else {
          for (let r = 0; r < nb; r++) {
            let s = 0;
            for (let p = 0; p < k; p++) s += x[xo + p] * wide[r * k + p];
            out[oo + r] = s;
          }
        }
        if (bias) for (let r = 0; r < nb; r++) out[oo + r] += bias[j + r];
      }
    }
  }

  /** Four widened weight rows (matmulBf16's scratch). */
  #rows = new Float32Array(0);

  rmsnorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, dim: number, eps: number): void {
    for (let r = 0; r < rows; r++) {
      const o = r * dim;
      let ss = 0;
      for (let i = 0; i < dim; i++) ss += x[o + i] * x[o + i];
      const inv = 1 / Math.sqrt(ss / dim + eps);
      for (let i = 0; i < dim; i++) out[o + i] = weight[i] * (x[o + i] * inv);
    }
  }

  rope(x: Float32Array, rows: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
    const half = headDim >> 1;
    for (let r = 0; r < rows; r++) {
      const t = r * half;
      for (let h = 0; h < heads; h++) {
        const o = (r * heads + h) * headDim;
        for (let j = 0; j < half; j++) {
          const c = cos[t + j], s = sin[t + j];
          const a = x[o + j], b = x[o + j + half];
          x[o + j] = a * c - b * s;
          x[o + j + half] = b * c + a * s;
        }
      }
    }
  }

  siluMul(gate: Float32Array, up: Float32Array, n: number): void {
    for (let i = 0; i < n; i++) {
      const g = gate[i];
      gate[i] = (g / (1 + Math.exp(-g))) * up[i];
    }
  }

  attentionPaged(a: PagedAttentionArgs): void {
    pagedAttention(a);
  }

  attention(a: AttentionArgs): void {
    const { out, q, rows, numHeads, numKvHeads, headDim, keys, values, lengths, scale, scratch } = a;
    const group = numHeads / numKvHeads;
    const stride = numHeads * headDim;
    for (let h = 0; h < numHeads; h++) {
      const g = Math.floor(h / group);
      const K = keys[g], V = values[g];
      const len = lengths[g];
      for (let i = 0; i < rows; i++) {
        const qo = i * stride + h * headDim;
        const visible = len - rows + i + 1;
        let max = -Infinity;
        for (let t = 0; t < visible; t++) {
          const ko = t * headDim;
          let s = 0;
          for (let d = 0; d < headDim; d++) s += q[qo + d] * K[ko + d];
          s *= scale;
          scratch[t] = s;
          if (s > max) max = s;
        }
        let sum = 0;
        for (let t = 0; t < visible; t++) {
          const e = Math.exp(scratch[t] - max);
          scratch[t] = e;
          sum += e;
        }
        const inv = 1 / sum;
        for (let d = 0; d < headDim; d++) out[qo + d] = 0;
        for (let t = 0; t < visible; t++) {
          const p = scratch[t] * inv;
          const vo = t * headDim;
          for (let d = 0; d < headDim; d++) out[qo + d] += p * V[vo + d];
        }
      }
    }
  }
}

/**
 * The bf16 bits of an f32 given by its bits: the upper 16 bits, rounded to nearest with ties to
 * even on the lower 16. Infinities stay infinite, finite values past bf16's largest round to
 * infinity, and a NaN stays a NaN (made quiet, so that rounding cannot turn it into an infinity).
 */
export function bf16Bits(f32Bits: number): number {
  const u = f32Bits >>> 0;
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x0040;
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

/** `src` rounded to bf16 (see bf16Bits), as a new array of bf16 bits. */
export function toBf16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < out.length; i++) out[i] = bf16Bits(bits[i]);
  return out;
}

/** The f32 values of bf16 bits: each is the upper half of its f32. */
export function fromBf16(src: Uint16Array): Float32Array {
  const bits = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return new Float32Array(bits.buffer);
}

