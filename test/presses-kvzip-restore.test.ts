import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadModel } from '../src/model/load.js';
import { writeSafetensors } from '../src/model/loaders/safetensors.js';
import { Model } from '../src/model/model.js';
import type { LayerWeights } from '../src/model/weights.js';
import { createPress, prefill } from '../src/presses/index.js';
import { RestoreKVPress } from '../src/presses/restore-kv.js';

const PROMPT = 'Tom and his dog went to the park. The dog saw a big red ball and ran after it.';

function lcg(seed: number): () => number {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5) * 0.2;
}

test('RestoreKV appends the restore tokens of the LoRA-merged model and keeps KVzip\'s budget', async () => {
  const m = await loadModel(), c = m.config, D = c.hiddenSize, V = c.vocabSize, F = c.intermediateSize, n = 3, rank = 2, alpha = 4;
  const r = lcg(9), rand = (k: number) => Float32Array.from({ length: k }, r);
  const emb = rand(n * D), qA = rand(rank * D), qB = rand(c.numHeads * c.headDim * rank), dA = rand(rank * F), dB = rand(D * rank);
  const dir = mkdtempSync(join(tmpdir(), 'restorekv-'));
  try {
    const file = join(dir, 'restore.safetensors');
    writeSafetensors(file, {
      restore_embeddings: { dtype: 'F32', shape: [n, D], data: emb },
      'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': { dtype: 'F32', shape: [rank, D], data: qA },
      'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight': { dtype: 'F32', shape: [c.numHeads * c.headDim, rank], data: qB },
      'layers.2.down_proj.lora_A': { dtype: 'F32', shape: [rank, F], data: dA },
      'layers.2.down_proj.lora_B': { dtype: 'F32', shape: [D, rank], data: dB },
    }, { lora_alpha: String(alpha) });

    // The same model with W + (α/r)·B·A written out here, and the restore embeddings as 3 extra token ids.
    const merge = (W: Float32Array, A: Float32Array, B: Float32Array, out: number, inp: number) => Float32Array.from(W, (w, i) => {
      const o = Math.floor(i / inp), k = i % inp;
      let s = 0;
      for (let j = 0; j < rank; j++) s += B[o * rank + j] * A[j * inp + k];
      return w + (alpha / rank) * s;
    });
    const base = m.weights, f32 = (w: unknown) => w as Float32Array;
    const layers: LayerWeights[] = base.layers.map((l, i) => ({
      ...l,
      ...(i === 0 ? { wq: merge(f32(l.wq), qA, qB, c.numHeads * c.headDim, D) } : {}),
      ...(i === 2 ? { wDown: merge(f32(l.wDown), dA, dB, D, F) } : {}),
    }));
    const table = new Float32Array((V + n) * D);
    table.set(f32(base.embedding));
    table.set(emb, V * D);
    const adapted = new Model({ ...c, vocabSize: V + n, maxPositionEmbeddings: 4096 }, { ...base, embedding: table, lmHead: table, layers });
    const tokens = m.tokenizer!.encode(PROMPT, { bos: true }), T = tokens.length;
    const plain = prefill(m, tokens, { logits: 'none' }).cache;
    adapted.forward([V, V + 1, V + 2], plain, { logits: 'none' });

    const ratio = 0.5, press = new RestoreKVPress(ratio, { adapter: file });
    const scores: Float64Array[][] = [];
    press.observer = { onScores: (l, s) => { scores[l] = s.map((x) => Float64Array.from(x)); } };
    const { cache } = prefill(m, tokens, { press, logits: 'none' });
    assert.equal(cache.nextPosition, T + n);
    const all: { x: number; kept: boolean }[] = [];
    cache.layers.forEach((lc, l) => {
      for (let g = 0; g < c.numKvHeads; g++) {
        const pos = Array.from(lc.headPositions(g)), len = pos.length, hd = c.headDim;
        assert.deepEqual(pos.slice(len - n), [T, T + 1, T + 2], `L${l} h${g}`);
        const K = lc.headKeys(g).slice((len - n) * hd), Vv = lc.headValues(g).slice((len - n) * hd);
        const wantK = plain.layers[l].headKeys(g).slice(T * hd), wantV = plain.layers[l].headValues(g).slice(T * hd);
        K.forEach((x, i) => assert.ok(Math.abs(x - wantK[i]) <= 1e-5 * (1 + Math.abs(wantK[i])), `L${l} h${g} restore key ${i}: ${x} vs ${wantK[i]}`));
        Vv.forEach((x, i) => assert.ok(Math.abs(x - wantV[i]) <= 1e-5 * (1 + Math.abs(wantV[i])), `L${l} h${g} restore value ${i}: ${x} vs ${wantV[i]}`));
        const kept = new Set(pos.slice(0, len - n));
        scores[l][g].forEach((x, t) => all.push({ x, kept: kept.has(t) }));
      }
    });
    const total = c.numLayers * c.numKvHeads * T;
    assert.equal(all.filter((e) => e.kept).length, total - Math.floor(total * Math.min(1, ratio + n / T)));
    assert.ok(Math.min(...all.filter((e) => e.kept).map((e) => e.x)) >= Math.max(...all.filter((e) => !e.kept).map((e) => e.x)));
    assert.throws(() => createPress('restore_kv', 0.5), /needs its adapter/);
    assert.throws(() => new RestoreKVPress(0.5, { adapter: join(dir, 'missing.safetensors') }).validate(m), /RestoreKVPress: /);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
