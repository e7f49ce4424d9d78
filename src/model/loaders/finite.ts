/**
 * Rejects a tensor holding NaN or ±Inf, naming it: such a checkpoint would load and then emit
 * the same token forever. `rows` splits a stacked tensor (one slice per layer) so the message
 * names the layer. One pass, no allocation.
 */
export function checkFinite(path: string, name: string, data: Float32Array, rows = 1): void {
  for (let i = 0; i < data.length; i++) {
    const x = data[i];
    if (x - x !== 0) {
      const per = data.length / rows;
      const where = rows > 1 ? ` (layer ${Math.floor(i / per)}, element ${i % per})` : ` (element ${i})`;
      throw new Error(`${path}: tensor ${name} holds ${x}${where}; the checkpoint is corrupt or overflowed when it was exported`);
    }
  }
}

/** Rejects an all-zero tensor that would make every logit equal (embedding, final norm, output). */
export function checkNotAllZero(path: string, name: string, data: Float32Array): void {
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) return;
  throw new Error(`${path}: tensor ${name} is all zeros, so every logit would be equal; the checkpoint is empty or was not saved`);
}
