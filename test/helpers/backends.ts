import { createBackend } from '../../src/backend/index.js';

/** The native and wasm backends where this machine has them. */
export const fastBackends = (['native', 'wasm'] as const).flatMap((prefer) => {
  try {
    const be = createBackend({ prefer });
    return be.name === prefer ? [be] : [];
  } catch {
    return [];
  }
});
