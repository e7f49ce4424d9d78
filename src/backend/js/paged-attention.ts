import { BF16_TO_F32, F16_TO_F32, type KvFormat } from '../../cache/format.js';
import type { KvPage } from '../../cache/kv-cache.js';
import type { PagedAttentionArgs } from '../backend.js';

/**
 * Causal grouped-query attention read straight from the cache's pages, in every element type:
 * each key is dotted with the query and each value accumulated in its stored form (f16/bf16
 * through a 65536-entry table, q8_0/q4_0 with the block scale applied once per block), so nothing
 * is gathered or converted per step. With `window`, a query at position p sees only the entries
 * at positions > p − window. A head whose key channels were pruned (cache.keyChannels) stores
 * only the kept ones: the query's kept channels are gathered once per row and dotted with them.
 * With `columnSums`, every row's probabilities are also added there (float64).
 */
export function pagedAttention(a: PagedAttentionArgs): void {
  const { out, q, rows, numHeads, numKvHeads, headDim: hd, cache, scale, scratch, window, queryPositions } = a;
  const f = cache.pool.fmt, E = cache.pool.pageEntries, group = numHeads / numKvHeads, stride = numHeads * hd;
  const dot = DOT[f.dtype], axpy = AXPY[f.dtype];
  const qc = cache.keyChannels?.some((c) => c) ? new Float32Array(hd) : null;
  const cols = a.columnSums ?? null;
  for (let h = 0; h < numHeads; h++) {
    const g = Math.floor(h / group), pages = cache.pages[g], len = cache.lengths[g];
    const ch = qc && cache.keyChannels![g], kf = ch && pages.length ? pages[0].keyFmt : f;
    let lo = 0;
    for (let i = 0; i < rows; i++) {
      const qo = i * stride + h * hd, visible = len - rows + i + 1;
      let kq = q, ko = qo;
      if (ch) {
        for (let j = 0; j < kf.headDim; j++) qc![j] = j < ch.length ? q[qo + ch[j]] : 0;
        kq = qc!;
        ko = 0;
      }
      if (window !== undefined) {
        const from = queryPositions[i] - window;
        while (lo < visible && pages[Math.floor(lo / E)].pos[lo % E] <= from) lo++;
      }
      let max = -Infinity;
      for (let t = lo; t < visible; t++) {
        const p = pages[Math.floor(t / E)];
        const s = dot(kf, kq, ko, p, (t % E) * kf.rowBytes) * scale;
        scratch[t] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let t = lo; t < visible; t++) sum += scratch[t] = Math.exp(scratch[t] - max);
      const inv = 1 / sum;
      if (cols) for (let t = lo, o = g * a.columnStride!; t < visible; t++) cols[o + t] += scratch[t] * inv;
      out.fill(0, qo, qo + hd);
      for (let t = lo; t < visible; t++) {
        const p = pages[Math.floor(t / E)];
        axpy(f, scratch[t] * inv, p, p.vOff + (t % E) * f.rowBytes, out, qo);
      }
    }
  }
}

type Dot = (f: KvFormat, q: Float32Array, qo: number, p: KvPage, at: number) => number;
type Axpy = (f: KvFormat, w: number, p: KvPage, at: number, out: Float32Array, o: number) => void;

const DOT: Record<KvFormat['dtype'], Dot> = {
  f32(f, q, qo, p, at) {
    const K = p.f32, k0 = at >>> 2;
    let s = 0;
    for (let d = 0; d < f.headDim; d++) s += q[qo + d] * K[k0 + d];
    return s;
  },
  f16(f, q, qo, p, at) {
    const K = p.u16, k0 = at >>> 1;
    let s = 0;
    for (let d = 0; d < f.headDim; d++) s += q[qo + d] * F16_TO_F32[K[k0 + d]];
    return s;
  },
  bf16(f, q, qo, p, at) {
    const K = p.u16, k0 = at >>> 1;
    let s = 0;
    for (let d = 0; d < f.headDim; d++) s += q[qo + d] * BF16_TO_F32[K[k0 + d]];
    return s;
  },
  q8_0(f, q, qo, p, at) {
    let s = 0;
    for (let b0 = 0, bo = at; b0 < f.headDim; b0 += f.block, bo += f.blockBytes) {
      let t = 0;
      for (let d = 0; d < f.block; d++) t += q[qo + b0 + d] * p.i8[bo + 2 + d];
      s += t * F16_TO_F32[p.u16[bo >>> 1]];
    }
    return s;
  },
  q4_0(f, q, qo, p, at) {
    let s = 0;
    const half = f.block / 2;
    for (let b0 = 0, bo = at; b0 < f.headDim; b0 += f.block, bo += f.blockBytes) {
      let t = 0;
      for (let d = 0; d < half; d++) {
        const c = p.u8[bo + 2 + d];
        t += q[qo + b0 + d] * ((c & 15) - 8) + q[qo + b0 + half + d] * ((c >>> 4) - 8);
      }
      s += t * F16_TO_F32[p.u16[bo >>> 1]];
    }
    return s;
  },
};

const AXPY: Record<KvFormat['dtype'], Axpy> = {
  f32(f, w, p, at, out, o) {
    const V = p.f32, v0 = at >>> 2;
    for (let d = 0; d < f.headDim; d++) out[o + d] += w * V[v0 + d];
  },
  f16(f, w, p, at, out, o) {
    const V = p.u16, v0 = at >>> 1;
    for (let d = 0; d < f.headDim; d++) out[o + d] += w * F16_TO_F32[V[v0 + d]];
  },
  bf16(f, w, p, at, out, o) {
    const V = p.u16, v0 = at >>> 1;
    for (let d = 0; d < f.headDim; d++) out[o + d] += w * BF16_TO_F32[V[v0 + d]];
  },
  q8_0(f, w, p, at, out, o) {
    for (let b0 = 0, bo = at; b0 < f.headDim; b0 += f.block, bo += f.blockBytes) {
      const ws = w * F16_TO_F32[p.u16[bo >>> 1]];
      for (let d = 0; d < f.block; d++) out[o + b0 + d] += ws * p.i8[bo + 2 + d];
    }
  },
  q4_0(f, w, p, at, out, o) {
    const half = f.block / 2;
    for (let b0 = 0, bo = at; b0 < f.headDim; b0 += f.block, bo += f.blockBytes) {
      const ws = w * F16_TO_F32[p.u16[bo >>> 1]];
      for (let d = 0; d < half; d++) {
        const c = p.u8[bo + 2 + d];
        out[o + b0 + d] += ws * ((c & 15) - 8);
        out[o + b0 + half + d] += ws * ((c >>> 4) - 8);
      }
    }
  },
};
