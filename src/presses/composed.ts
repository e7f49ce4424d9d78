import type { LayerContext, ModelParts } from '../model/layer-context.js';
import { PressError, requirePress, type KeepIndices, type Press } from './press.js';

/**
 * ComposedPress (kvpress): applies its presses one after the other, each to the cache the previous
 * one left. As in kvpress, every press sees the pass's original hidden states and queries, so a
 * press that scores from them after a pruning press scores the survivors with the full pass's
 * queries (the window attention is masked by position, so it stays causal). The overall ratio is
 * 1 − Π(1 − r_i). kvpress forbids AdaKV inside (it only masks); with real eviction it composes like
 * any other press. A press that declares `needsWholePass` (ObservedAttention: the full pass's
 * attention over an unpruned cache) stays forbidden.
 */
export class ComposedPress implements Press {
  readonly name: string;
  readonly presses: readonly Press[];

  constructor(presses: readonly Press[]) {
    if (!Array.isArray(presses) || presses.length === 0) throw new PressError('ComposedPress needs a non-empty array of presses');
    presses.forEach((p, i) => requirePress(p, `ComposedPress (entry ${i})`));
    const whole = presses.find((p) => p.needsWholePass);
    if (whole) throw new Error(`ComposedPress cannot contain ${whole.constructor.name} (${whole.name}): it needs the whole pass over an unpruned cache`);
    this.presses = [...presses];
    this.name = `composed(${presses.map((p) => p.name).join(',')})`;
  }

  get compressionRatio(): number {
    return 1 - this.presses.reduce((kept, p) => kept * (1 - p.compressionRatio), 1);
  }

  set compressionRatio(_r: number) {
    throw new Error('ComposedPress: the ratio follows from the composed presses and cannot be set');
  }

  validate(model: ModelParts): void {
    for (const p of this.presses) p.validate?.(model);
  }

  reset(): void {
    for (const p of this.presses) p.reset?.();
  }

  compress(ctx: LayerContext): KeepIndices | null {
    let last: KeepIndices | null = null;
    for (const p of this.presses) {
      // Each press must see the cache its predecessor left, so earlier keeps are applied here.
      if (last) ctx.cache.keep(last);
      last = p.compress(ctx);
    }
    return last;
  }
}
