import type { CommandIO } from './command.js';

const WIDTH = 24;
/** Redraws at most this often: a terminal write per layer would slow small models down. */
const REDRAW_MS = 100;

/**
 * A progress bar on stderr for work that reports `done` of `total` steps. It is drawn only on a
 * TTY and only once the work has run longer than `delayMs`, so quick runs and pipes stay clean.
 */
export class ProgressBar {
  private start = performance.now();
  private drawnAt = -Infinity;
  private drawn = false;

  constructor(private readonly io: CommandIO, private readonly label: string, private readonly unit: string, private readonly delayMs = 1000) {}

  /** Step 0 (re)starts the clock; the last step clears the bar. */
  update(done: number, total: number): void {
    const t = performance.now();
    if (done === 0) {
      this.start = t;
      return;
    }
    if (done >= total) return this.clear();
    if (!this.io.isTTY || t - this.start < this.delayMs || t - this.drawnAt < REDRAW_MS) return;
    const filled = Math.round((WIDTH * done) / total);
    const secs = ((t - this.start) / 1000).toFixed(1);
    this.io.err(`\r${this.label} [${'#'.repeat(filled)}${'.'.repeat(WIDTH - filled)}] ${done}/${total} ${this.unit}, ${secs} s\x1b[K`);
    this.drawn = true;
    this.drawnAt = t;
  }

  clear(): void {
    if (this.drawn) this.io.err('\r\x1b[K');
    this.drawn = false;
    this.drawnAt = -Infinity;
  }
}
