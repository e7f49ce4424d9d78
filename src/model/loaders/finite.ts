/**
 * Rejects a tensor holding NaN or ±Inf, naming it: such a checkpoint would load and then emit
 * the same token forever. `data` is f32 or raw bf16 bits; `rows` splits a stacked tensor (one
 * slice per layer) so the message names the layer; `layer` names the layer of a tensor read one
 * layer at a time. One pass, no allocation.
 */
export function checkFinite(path: string, name: string, data: Float32Array | Uint16Array, rows = 1, layer?: number): void {
  const bf16 = data instanceof Uint16Array;
  for (let i = 0; i < data.length; i++) {
    const x = data[i];
    if (bf16 ? (x & 0x7f80) === 0x7f80 : x - x !== 0) {
      const value = bf16 ? (x & 0x7f ? 'NaN' : x & 0x8000 ? '-Infinity' : 'Infinity') : String(x);
      const per = data.length / rows;
      const where = layer !== undefined ? ` (layer ${layer}, element ${i})` : rows > 1 ? ` (layer ${Math.floor(i / per)}, element ${i % per})` : ` (element ${i})`;
      throw new Error(`${path}: tensor ${name} holds ${value}${where}; the checkpoint is corrupt or overflowed when it was exported`);
    }
  }
}

/** Rejects an all-zero tensor that would make every logit equal (embedding, final norm, output). */
export function checkNotAllZero(path: string, name: string, data: Float32Array | Uint16Array): void {
  const mask = data instanceof Uint16Array ? 0x7fff : -1;
  for (let i = 0; i < data.length; i++) if (data instanceof Uint16Array ? (data[i] & mask) !== 0 : data[i] !== 0) return;
  throw new Error(`${path}: tensor ${name} is all zeros, so every logit would be equal; the checkpoint is empty or was not saved`);
}
