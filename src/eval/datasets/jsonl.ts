/**
 * Local JSONL in the Python library's dataset format, one row per line, so that exports of
 * LongBench, InfiniteBench, LooGLE, AIME25, MATH-500… can be evaluated without downloads.
 */
import { readFileSync } from 'node:fs';
import { basename, extname } from 'node:path';
import type { Sample } from './types.js';

/** Columns that map onto Sample fields; every other column is kept in `extra`. */
const KNOWN = new Set(['id', 'context', 'question', 'answer_prefix', 'answers', 'answer', 'max_new_tokens', 'task']);

export interface JsonlOptions {
  /** Used for rows without `max_new_tokens`; without it such rows are an error. */
  defaultMaxNewTokens?: number;
  /** Used for rows without `task`; default: the file name without extension. */
  defaultTask?: string;
}

/** Answers as strings: AIME-style integer answers are compared as their decimal text. */
function answerList(value: unknown): string[] | null {
  const one = (v: unknown): string | null => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : null);
  if (Array.isArray(value)) {
    const list = value.map(one);
    return list.every((a) => a !== null) && list.length > 0 ? (list as string[]) : null;
  }
  const single = one(value);
  return single === null ? null : [single];
}

/**
 * Parses JSONL text. Required per row: `context` (string) and `answers` or `answer` (string,
 * number, or a non-empty list of them); optional: `question` and `answer_prefix` (default ""),
 * `max_new_tokens` (positive integer), `task`, `id` (default "<task>-<line>"). Blank lines are skipped. Every problem
 * is reported as "<file>:<line>: <what is wrong>".
 *
 * @example
 * parseJsonl('{"context": "Paris is in France.", "question": "Where is Paris?", "answer": "France", "max_new_tokens": 8}', 'x.jsonl');
 * // → [{ id: "x-1", context: "Paris is in France.", question: "Where is Paris?", answerPrefix: "", answers: ["France"], maxNewTokens: 8, task: "x" }]
 */
export function parseJsonl(text: string, file: string, opts: JsonlOptions = {}): Sample[] {
  const defaultTask = opts.defaultTask ?? basename(file, extname(file));
  const samples: Sample[] = [];
  // Editors on Windows may prefix a byte-order mark, which JSON.parse rejects.
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${file}:${i + 1}`;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (e) {
      throw new Error(`${where}: invalid JSON (${(e as Error).message})`);
    }
    if (typeof row !== 'object' || row === null || Array.isArray(row)) throw new Error(`${where}: a row must be a JSON object`);
    const r = row as Record<string, unknown>;

    if (typeof r['context'] !== 'string') throw new Error(`${where}: "context" must be a string`);
    for (const key of ['question', 'answer_prefix', 'task'] as const) {
      if (r[key] !== undefined && typeof r[key] !== 'string') throw new Error(`${where}: "${key}" must be a string`);
    }
    const answerKey = r['answers'] !== undefined ? 'answers' : 'answer';
    if (r[answerKey] === undefined) throw new Error(`${where}: missing "answers" (or "answer")`);
    const answers = answerList(r[answerKey]);
    if (answers === null) throw new Error(`${where}: "${answerKey}" must be a string, a number, or a non-empty list of them`);

    let maxNewTokens = r['max_new_tokens'] ?? opts.defaultMaxNewTokens;
    if (maxNewTokens === undefined) throw new Error(`${where}: missing "max_new_tokens" (and no default given)`);
    if (typeof maxNewTokens !== 'number' || !Number.isInteger(maxNewTokens) || maxNewTokens <= 0) {
      throw new Error(`${where}: "max_new_tokens" must be a positive integer, got ${JSON.stringify(maxNewTokens)}`);
    }

    const extra: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(r)) if (!KNOWN.has(k)) extra[k] = v;
    const task = (r['task'] as string | undefined) ?? defaultTask;
    samples.push({
      id: typeof r['id'] === 'string' || typeof r['id'] === 'number' ? String(r['id']) : `${task}-${i + 1}`,
      context: r['context'],
      question: (r['question'] as string | undefined) ?? '',
      answerPrefix: (r['answer_prefix'] as string | undefined) ?? '',
      answers,
      maxNewTokens,
      task,
      ...(Object.keys(extra).length > 0 ? { extra } : {}),
    });
  });
  if (samples.length === 0) throw new Error(`${file}: no rows`);
  return samples;
}

/**
 * Reads and parses a JSONL dataset file (see parseJsonl for the row format).
 *
 * @example
 * const rows = loadJsonl('longbench/hotpotqa.jsonl'); // rows[0].task === "hotpotqa"
 */
export function loadJsonl(file: string, opts: JsonlOptions = {}): Sample[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read dataset (${(e as Error).message})`);
  }
  return parseJsonl(text, file, opts);
}
