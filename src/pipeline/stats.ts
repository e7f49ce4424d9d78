/** What one compression of a context did. */
export interface CompressionStats {
  /** Tokens prefilled (template prefix and BOS included), after any truncation. */
  contextTokens: number;
  /** Tokens the context had before max-context-length truncation, when it was truncated. */
  truncatedFrom: number | null;
  /** Entries kept per layer, summed over KV heads and divided by the KV head count. */
  keptPerLayer: number[];
  /** Entries kept per layer and KV head, only when some layer's heads differ (head-adaptive presses). */
  keptPerHead: number[][] | null;
  /** Element type of the cache's keys and values (f32, f16, bf16, q8_0, q4_0). */
  kvDtype: string;
  /** Entries per cache page. */
  pageEntries: number;
  /** KV bytes the uncompressed context takes (keys and values in kvDtype). */
  cacheBytesBefore: number;
  /** KV bytes of the entries kept after the prefill with the press. */
  cacheBytesAfter: number;
  /**
   * Bytes the cache really holds after the prefill: its pages (keys, values and 4-byte positions
   * of every slot, partly used last pages included) plus idle pages of its pool.
   */
  cacheAllocatedBytesAfter: number;
  /** 1 − after/before: the fraction of the context's KV entries removed. */
  achievedRatio: number;
  /** Wall time of the prefill forward pass, press included. */
  prefillMs: number;
  /** Wall time spent inside the press's compress calls during the prefill. */
  pressMs: number;
}

/** What answering one question took. */
export interface AnswerStats {
  questionTokens: number;
  answerTokens: number;
  /**
   * Tokens forwarded through the cache after the context: the question's and every answer token
   * but a last one that was not fed back (what an uncompressed cache would hold beyond the context).
   */
  tokensFed: number;
  /** The forward pass over the question tokens. */
  questionMs: number;
  /** The token-by-token loop after it. */
  decodeMs: number;
  /** KV bytes held when the answer ended (context + question + answer, before it is let go). */
  cacheBytesEnd: number;
  /** Bytes allocated then by the answer's cache (its pages, shared context pages included). */
  cacheAllocatedBytesEnd: number;
}

export interface PipelineStats extends CompressionStats {
  /** Press name, null without a press. */
  press: string | null;
  /** The press's compression ratio (requested, or derived by the press), null without one. */
  compressionRatio: number | null;
  /** Compressions performed: 1, or one per question in query-aware mode (the compression figures are then totals). */
  compressions: number;
  /** One entry per question answered, in order. */
  questions: AnswerStats[];
  /** Answer tokens over decode-loop time, all answers together (0 when nothing was decoded). */
  decodeTokensPerSecond: number;
}

/** The raw measurements of one compression, before they are summarised. */
export interface CompressionMeasure {
  contextTokens: number;
  truncatedFrom: number | null;
  /** Entries per layer and KV head after the prefill (KVCache.lengths()). */
  lengths: number[][];
  prefillMs: number;
  pressMs: number;
  kvDtype: string;
  /** KV bytes per entry of one KV head (keys and values). */
  entryBytes: number;
  /** KVCache.allocatedBytes() after the prefill. */
  allocatedBytes: number;
  /** KVCache.bytes() after the prefill, when known (it sees pruned key channels, which entries · entryBytes does not). */
  bytes?: number;
  pageEntries: number;
}

/**
 * Summarises compressions (one, or one per question in query-aware mode, which are summed).
 * Bytes count keys and values in the cache's element type: entries · entryBytes.
 */
export function compressionStats(all: readonly CompressionMeasure[]): CompressionStats {
  const lengths = all[0].lengths.map((l, i) => l.map((_, g) => all.reduce((s, m) => s + m.lengths[i][g], 0)));
  const tokens = all.reduce((s, m) => s + m.contextTokens, 0);
  const heads = lengths[0]?.length ?? 0;
  const entryBytes = all[0].entryBytes;
  const before = tokens * lengths.length * heads * entryBytes;
  const after = all.every((m) => m.bytes !== undefined) ? all.reduce((s, m) => s + m.bytes!, 0) : lengths.reduce((s, l) => s + l.reduce((a, n) => a + n, 0), 0) * entryBytes;
  const truncated = all.some((m) => m.truncatedFrom !== null);
  return {
    contextTokens: tokens,
    truncatedFrom: truncated ? all.reduce((s, m) => s + (m.truncatedFrom ?? m.contextTokens), 0) : null,
    keptPerLayer: lengths.map((l) => l.reduce((s, n) => s + n, 0) / heads),
    keptPerHead: lengths.some((l) => l.some((n) => n !== l[0])) ? lengths : null,
    kvDtype: all[0].kvDtype,
    pageEntries: all[0].pageEntries,
    cacheBytesBefore: before,
    cacheBytesAfter: after,
    cacheAllocatedBytesAfter: all.reduce((s, m) => s + m.allocatedBytes, 0),
    achievedRatio: before > 0 ? 1 - after / before : 0,
    prefillMs: all.reduce((s, m) => s + m.prefillMs, 0),
    pressMs: all.reduce((s, m) => s + m.pressMs, 0),
  };
}

/** Bytes in binary units (1 KiB = 1024 bytes), three significant digits. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0, x = n;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${x.toPrecision(3)} ${units[i]}`;
}

function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}

function formatCount(x: number): string {
  return Number.isInteger(x) ? String(x) : x.toFixed(1);
}

/** The statistics as a two-column text table, then entries kept per layer (and head). */
export function formatStats(s: PipelineStats): string {
  const rows: [string, string][] = [];
  rows.push(['press', s.press === null ? 'none' : `${s.press} (compression ratio ${s.compressionRatio?.toFixed(2)})`]);
  if (s.compressions > 1) rows.push(['compressions', `${s.compressions} (query-aware: one per question; figures below are totals)`]);
  rows.push(['context tokens', s.truncatedFrom === null ? String(s.contextTokens) : `${s.contextTokens} (truncated from ${s.truncatedFrom})`]);
  rows.push(['KV cache', `${formatBytes(s.cacheBytesBefore)} → ${formatBytes(s.cacheBytesAfter)} (${(100 * s.achievedRatio).toFixed(1)}% removed), ${s.kvDtype}`]);
  rows.push(['allocated', `${formatBytes(s.cacheAllocatedBytesAfter)} (pages of ${s.pageEntries} entries, positions included)`]);
  rows.push(['prefill', `${formatMs(s.prefillMs)} (press ${formatMs(s.pressMs)})`]);
  const q = s.questions.reduce((a, x) => a + x.questionTokens, 0);
  const qMs = s.questions.reduce((a, x) => a + x.questionMs, 0);
  const n = s.questions.reduce((a, x) => a + x.answerTokens, 0);
  rows.push(['questions', `${s.questions.length} (${q} tokens, ${formatMs(qMs)})`]);
  rows.push(['decode', `${n} tokens, ${s.decodeTokensPerSecond > 0 ? `${s.decodeTokensPerSecond.toFixed(1)} tokens/s` : '-'}`]);
  const w = Math.max(...rows.map(([k]) => k.length));
  const lines = rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`);

  lines.push('', 'layer  kept' + (s.keptPerHead ? '  per KV head' : ''));
  s.keptPerLayer.forEach((k, l) => {
    const head = s.keptPerHead ? `  ${s.keptPerHead[l].join(' ')}` : '';
    lines.push(`${String(l).padStart(5)}  ${formatCount(k).padStart(4)}${head}`);
  });
  return lines.join('\n') + '\n';
}
