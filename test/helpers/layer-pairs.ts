import type { Backend } from '../../src/backend/backend.js';
import { LayerContext } from '../../src/model/layer-context.js';
import type { Model } from '../../src/model/model.js';

/**
 * Runs a prefill of `ids` on `model` and, at every layer, calls `check` with the layer's context
 * and the same context on `other` (a second backend), so a press can be scored on both; returns
 * the number of layers seen.
 */
export function eachLayerOnTwoBackends(model: Model, ids: number[], other: Backend, check: (ctx: LayerContext, onOther: LayerContext) => void): number {
  let layers = 0;
  model.forward(ids, model.newCache(), {
    logits: 'none',
    press: {
      compress: (ctx) => {
        const m = ctx.model;
        check(ctx, new LayerContext({ config: m.config, layerWeights: m.layerWeights, backend: other, rope: m.rope }, ctx.layer, ctx.kvCache, ctx.isPrefill, ctx.rows, ctx.hidden, ctx.positions, ctx.queries));
        layers++;
        return null;
      },
    },
  });
  return layers;
}
