import type { Tokenizer } from './tokenizer.js';

const CONTEXT = 4;

/**
 * Turns generated ids into text deltas as they arrive, whatever the tokenizer: a character
 * split over several byte tokens is held back until it is complete, and the left context lets
 * tokenizers that strip or merge spaces decode each piece as it reads in the whole text.
 * The concatenation of the deltas equals `decode(ids)` except for an incomplete trailing character.
 */
export class TokenStream {
  private readonly ids: number[] = [];
  /** Ids already emitted that serve as left context. */
  private emitted = 0;

  constructor(private readonly tok: Tokenizer) {}

  push(id: number): string {
    this.ids.push(id);
    return this.delta();
  }

  /**
   * Several ids at once, for a consumer that needs the text only now and then (a server writing
   * every few tens of milliseconds): two decodes for all of them instead of two per id.
   */
  pushMany(ids: readonly number[]): string {
    for (const id of ids) this.ids.push(id);
    return this.delta();
  }

  /** The text of the ids since the last emission, or '' while it ends in an incomplete character. */
  private delta(): string {
    const from = Math.max(0, this.emitted - CONTEXT);
    const before = this.tok.decode(this.ids.slice(from, this.emitted));
    const now = this.tok.decode(this.ids.slice(from));
    if (now.endsWith('\uFFFD') || !now.startsWith(before)) return '';
    this.emitted = this.ids.length;
    return now.slice(before.length);
  }
}
