/**
 * ROUGE-1/2/L exactly as the Python `rouge` package computes them — the package both LongBench
 * (rouge_score) and the NIAH scorer call — and the NIAH row score built on it.
 */
import { pySplit } from './python.js';

export interface RougeScore {
  f: number;
  p: number;
  r: number;
}

export interface RougeScores {
  rouge1: RougeScore;
  rouge2: RougeScore;
  rougeL: RougeScore;
}

/** The `rouge` package's preprocessing: split on ".", drop empty pieces, collapse whitespace. */
function rougeSentences(text: string): string[] {
  return text
    .split('.')
    .filter((s) => s.length > 0)
    .map((s) => pySplit(s).join(' '));
}

const rougeWords = (sentences: readonly string[]): string[] => sentences.flatMap((s) => s.split(' '));

function rougeF(p: number, r: number): number {
  return 2 * ((p * r) / (p + r + 1e-8));
}

/** ROUGE-N with n-grams as sets (the package's default "exclusive" mode). */
function rougeN(hyp: readonly string[], ref: readonly string[], n: number): RougeScore {
  const grams = (words: readonly string[]): Set<string> => {
    const set = new Set<string>();
    for (let i = 0; i + n <= words.length; i++) set.add(words.slice(i, i + n).join('\u0000'));
    return set;
  };
  const h = grams(rougeWords(hyp));
  const r = grams(rougeWords(ref));
  let overlap = 0;
  for (const g of h) if (r.has(g)) overlap++;
  const p = h.size === 0 ? 0 : overlap / h.size;
  const rec = r.size === 0 ? 0 : overlap / r.size;
  return { f: rougeF(p, rec), p, r: rec };
}

/** Tokens of one longest common subsequence, with the package's backtracking tie-break. */
function lcsTokens(x: readonly string[], y: readonly string[]): string[] {
  const w = y.length + 1;
  const table = new Int32Array((x.length + 1) * w);
  for (let i = 1; i <= x.length; i++) {
    for (let j = 1; j <= y.length; j++) {
      table[i * w + j] =
        x[i - 1] === y[j - 1] ? table[(i - 1) * w + j - 1]! + 1 : Math.max(table[(i - 1) * w + j]!, table[i * w + j - 1]!);
    }
  }
  const out: string[] = [];
  let i = x.length;
  let j = y.length;
  while (i > 0 && j > 0) {
    if (x[i - 1] === y[j - 1]) {
      out.push(x[i - 1]!);
      i--;
      j--;
    } else if (table[(i - 1) * w + j]! > table[i * w + j - 1]!) {
      i--;
    } else {
      j--;
    }
  }
  return out.reverse();
}

/** Summary-level ROUGE-L: union of per-sentence LCS tokens, counted as distinct words. */
function rougeL(hyp: readonly string[], ref: readonly string[]): RougeScore {
  const m = new Set(rougeWords(ref)).size;
  const n = new Set(rougeWords(hyp)).size;
  const union = new Set<string>();
  for (const r of ref) {
    const refWords = r.split(' ');
    for (const h of hyp) for (const t of lcsTokens(refWords, h.split(' '))) union.add(t);
  }
  const rec = union.size / m;
  const p = union.size / n;
  return { f: rougeF(p, rec), p, r: rec };
}

/**
 * ROUGE-1/2/L of a hypothesis against a reference exactly as the Python `rouge` package
 * computes them (sentences split on "."; n-grams and LCS words counted once). Null when
 * either side has no sentence (where the package raises).
 *
 * @example
 * rouge('the cat sat on the mat', 'the cat is on the mat')?.rougeL.f; // ≈ 0.8
 */
export function rouge(hypothesis: string, reference: string): RougeScores | null {
  const hyp = rougeSentences(hypothesis);
  const ref = rougeSentences(reference);
  if (hyp.length === 0 || ref.length === 0) return null;
  return { rouge1: rougeN(hyp, ref, 1), rouge2: rougeN(hyp, ref, 2), rougeL: rougeL(hyp, ref) };
}

/**
 * NIAH row score: ROUGE with the needle as *hypothesis* and the prediction as reference —
 * the argument order of the Python library's `scorer.get_scores(needle, prediction)` — so
 * precision is measured over the needle's words. All zeros for an empty prediction.
 *
 * @example
 * niahRouge('x y z', 'x y').rouge1; // { p: 2/3, r: 1, f: 0.8 }
 */
export function niahRouge(needle: string, prediction: string): RougeScores {
  const zero = { f: 0, p: 0, r: 0 };
  return rouge(needle, prediction) ?? { rouge1: zero, rouge2: zero, rougeL: zero };
}
