import type { LayerContext, ModelParts } from '../model/layer-context.js';
import { checkRatio, PressError, requirePress, type KeepIndices, type Press, type ScoreObserver } from './press.js';

/**
 * PerLayerCompression (kvpress's PerLayerCompressionPress): runs `inner` with compressionRatios[ℓ]
 * at layer ℓ. Its compressionRatio is the mean of the list and cannot be set.
 */
export class PerLayerCompressionPress implements Press {
  readonly name: string;
  readonly compressionRatios: readonly number[];

  constructor(readonly inner: Press, compressionRatios: readonly number[]) {
    requirePress(inner, 'PerLayerCompressionPress');
    if (!Array.isArray(compressionRatios) || compressionRatios.length === 0) throw new RangeError('compressionRatios must be a non-empty list, one ratio per layer');
    compressionRatios.forEach((r, l) => checkRatio(r, `compressionRatios[${l}]`));
    this.name = `per_layer_${inner.name}`;
    this.compressionRatios = [...compressionRatios];
  }

  get compressionRatio(): number {
    return this.compressionRatios.reduce((a, b) => a + b, 0) / this.compressionRatios.length;
  }

  set compressionRatio(_r: number) {
    throw new Error('PerLayerCompressionPress: the ratio is the mean of compressionRatios and cannot be set');
  }

  get observer(): ScoreObserver | null {
    return this.inner.observer ?? null;
  }

  set observer(o: ScoreObserver | null) {
    this.inner.observer = o;
  }

  validate(model: ModelParts): void {
    if (this.compressionRatios.length !== model.config.numLayers) {
      throw new PressError(`PerLayerCompressionPress: ${this.compressionRatios.length} ratios for a model with ${model.config.numLayers} layers`);
    }
    this.inner.validate?.(model);
  }

  reset(): void {
    this.inner.reset?.();
  }

  compress(ctx: LayerContext): KeepIndices | null {
    const r = this.compressionRatios[ctx.layer];
    if (r === undefined) throw new Error(`PerLayerCompressionPress: no ratio for layer ${ctx.layer} (${this.compressionRatios.length} given)`);
    const saved = this.inner.compressionRatio;
    this.inner.compressionRatio = r;
    try {
      return this.inner.compress(ctx);
    } finally {
      this.inner.compressionRatio = saved;
    }
  }
}
