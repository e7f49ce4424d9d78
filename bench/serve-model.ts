import { createBackend } from '../src/backend/index.js';
import { benchModelOfShape } from '../src/bench/shapes.js';
import { loadModel } from '../src/model/load.js';
import { Model } from '../src/model/model.js';
import type { ShapeName } from '../src/model/random.js';
import type { Tokenizer } from '../src/tokenizer/tokenizer.js';

/** stories260K's first plain text piece (0–2 are unk/bos/eos, 3–258 the byte tokens) and their count. */
const FIRST_PIECE = 259;
const PIECES = 512 - FIRST_PIECE;

/**
 * Text for a random-weights shape, which has no tokenizer: stories260K's encodes, and every id of
 * the shape's vocabulary decodes as one of stories260K's plain pieces, so that each sampled id
 * streams as one non-empty chunk. No stop ids: the answers of random weights would end at
 * arbitrary points, so every request decodes exactly max_tokens.
 */
class ShapeText implements Tokenizer {
  readonly bosId: number | null;
  readonly stopIds: readonly number[] = [];
  readonly chatTemplate = null;

  constructor(private readonly inner: Tokenizer, readonly vocabSize: number) {
    this.bosId = inner.bosId;
  }

  encode(text: string, opts?: { bos?: boolean }): number[] {
    return this.inner.encode(text, opts);
  }

  decode(ids: readonly number[]): string {
    return this.inner.decode(ids.map(piece));
  }

  decodePiece(prev: number, id: number): string {
    return this.inner.decodePiece(piece(prev), piece(id));
  }
}

const piece = (id: number) => FIRST_PIECE + (id % PIECES);

/**
 * The serve benchmark's model of a shape, 1 kernel thread: stories260K as the model bench has it
 * (context widened to 32768), or a random-weights shape with ShapeText as its tokenizer.
 */
export async function serveBenchModel(shape: ShapeName): Promise<Model> {
  const backend = createBackend({ threads: 1 });
  const m = await benchModelOfShape(shape, backend);
  // A random shape comes with stories260K's tokenizer (for presses that encode a prompt), whose
  // 512 pieces leave most of the shape's ids without text: ShapeText gives every id one.
  if (shape === 'stories260K') return m;
  const text = new ShapeText((await loadModel(undefined)).tokenizer!, m.config.vocabSize);
  return new Model(m.config, m.weights, { backend, tokenizer: text, source: m.source });
}
