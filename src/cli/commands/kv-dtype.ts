import { KV_DTYPES, type KvDtypeOption } from '../../cache/format.js';
import { str, UsageError } from '../args.js';

/** The --kv-dtype flag of every command that runs a model. */
export const kvDtypeOption = { 'kv-dtype': { type: 'string' } } as const;

export const kvDtypeUsage = `  --kv-dtype T           KV cache element type: f32, f16, bf16, q8_0, q4_0 or auto (default auto:
                         the checkpoint's precision for 16-bit checkpoints, f16 for quantized, f32 for f32)`;

export function kvDtypeFlag(v: unknown): KvDtypeOption {
  const s = str(v) ?? 'auto';
  if (s !== 'auto' && !(KV_DTYPES as readonly string[]).includes(s)) throw new UsageError(`--kv-dtype must be one of ${KV_DTYPES.join(', ')}, auto; got "${s}"`);
  return s as KvDtypeOption;
}
