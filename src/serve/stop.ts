/**
 * Cuts streamed text at the first of the request's stop strings. Text that might be the start of
 * a stop string is held back until the next piece decides it, so no client ever sees part of one.
 */
export class StopMatcher {
  private text = '';
  private emitted = 0;
  stopped = false;

  constructor(private readonly stops: readonly string[]) {}

  /** Adds a piece; returns the text that is now safe to send. */
  push(piece: string): string {
    if (this.stopped) return '';
    this.text += piece;
    // No stop strings: nothing to hold back or search for, every piece goes out as it is.
    if (this.stops.length === 0) {
      this.emitted = this.text.length;
      return piece;
    }
    let cut = -1;
    for (const s of this.stops) {
      const at = this.text.indexOf(s, this.emitted);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      return this.take(cut);
    }
    return this.take(this.text.length - this.heldBack());
  }

  /** At the end of the answer: whatever was held back. */
  flush(): string {
    return this.stopped ? '' : this.take(this.text.length);
  }

  /** Everything pushed so far. */
  get pushed(): string {
    return this.text;
  }

  /** The answer so far, stop string excluded. */
  get output(): string {
    return this.text.slice(0, this.emitted);
  }

  /** Length of the longest tail of the unsent text that begins some stop string. */
  private heldBack(): number {
    let hold = 0;
    const tailMax = this.text.length - this.emitted;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, tailMax); n > hold; n--) {
        if (this.text.endsWith(s.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    return hold;
  }

  private take(end: number): string {
    const out = this.text.slice(this.emitted, end);
    this.emitted = end;
    return out;
  }
}
