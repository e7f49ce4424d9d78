// Writes a benchmark shape's random weights (src/model/random.ts) as an F32 GGUF that llama.cpp
// loads (llama architecture, a SentencePiece-style vocabulary of placeholder pieces), so that
// llama-quantize and llama-bench can time the same shape as `kvpress bench --shape`.
//   node scripts/shape-gguf.mjs small /tmp/small-f32.gguf   (after npm run build)
import { writeFileSync } from 'node:fs';
import { ggufBytes, f32Bytes } from '../dist/src/model/loaders/gguf-writer.js';
import { randomWeights, shapeConfig } from '../dist/src/model/random.js';

const [shape, out] = process.argv.slice(2);
if (!shape || !out) {
  console.error('usage: node scripts/shape-gguf.mjs SHAPE OUT.gguf');
  process.exit(2);
}
const c = shapeConfig(shape, 4096), w = randomWeights(c);
const D = c.hiddenSize, F = c.intermediateSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
const tokens = ['<unk>', '<s>', '</s>', ...Array.from({ length: 256 }, (_, i) => `<0x${i.toString(16).toUpperCase().padStart(2, '0')}>`)];
while (tokens.length < c.vocabSize) tokens.push(`▁t${tokens.length}`);
const types = tokens.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1));
const t = (name, dims, data) => ({ name, dims, type: 0, data: f32Bytes(data) });
const tensors = [t('token_embd.weight', [D, c.vocabSize], w.embedding), t('output_norm.weight', [D], w.finalNorm)];
w.layers.forEach((l, i) => {
  const p = `blk.${i}.`;
  tensors.push(
    t(p + 'attn_norm.weight', [D], l.attnNorm), t(p + 'attn_q.weight', [D, q], l.wq), t(p + 'attn_k.weight', [D, kv], l.wk),
    t(p + 'attn_v.weight', [D, kv], l.wv), t(p + 'attn_output.weight', [q, D], l.wo), t(p + 'ffn_norm.weight', [D], l.ffnNorm),
    t(p + 'ffn_gate.weight', [D, F], l.wGate), t(p + 'ffn_up.weight', [D, F], l.wUp), t(p + 'ffn_down.weight', [F, D], l.wDown),
  );
});
const u32 = (value) => ({ type: 'u32', value });
writeFileSync(out, ggufBytes({
  metadata: [
    ['general.architecture', { type: 'string', value: 'llama' }],
    ['general.name', { type: 'string', value: `kvpress random ${shape}` }],
    ['llama.context_length', u32(c.maxPositionEmbeddings)],
    ['llama.embedding_length', u32(D)],
    ['llama.feed_forward_length', u32(F)],
    ['llama.block_count', u32(c.numLayers)],
    ['llama.attention.head_count', u32(c.numHeads)],
    ['llama.attention.head_count_kv', u32(c.numKvHeads)],
    ['llama.rope.dimension_count', u32(c.headDim)],
    ['llama.attention.layer_norm_rms_epsilon', { type: 'f32', value: c.rmsNormEps }],
    ['llama.rope.freq_base', { type: 'f32', value: c.ropeTheta }],
    ['general.file_type', u32(0)],
    ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: 'strings', value: tokens }],
    ['tokenizer.ggml.scores', { type: 'f32s', value: tokens.map((_, i) => -i) }],
    ['tokenizer.ggml.token_type', { type: 'i32s', value: types }],
    ['tokenizer.ggml.bos_token_id', u32(1)],
    ['tokenizer.ggml.eos_token_id', u32(2)],
    ['tokenizer.ggml.unknown_token_id', u32(0)],
  ],
  tensors,
}));
console.log(`wrote ${out}`);
