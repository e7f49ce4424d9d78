import type { Model } from '../../model/model.js';
import { generate } from '../../pipeline/generate.js';
import { seedFrom, SeededRandom } from './random.js';
import type { NameRecallItem } from './stories.js';

/**
 * How a sampled story introduces a character: "a girl named Lily", "a dog called Max". Only
 * introductions count, so that the answer is a name the text itself declared, not any
 * capitalised word (sentence starts, "Mom", "Once").
 */
const INTRODUCTION = /\b(?:named|called)\s+([A-Z][a-z]+)\b/g;

/** Openings the stories start from: the model writes everything after them. */
const OPENINGS = ['Once upon a time', 'One day', 'There was once', 'Once upon a time, in a small town'];

/** Where the introduction must end and the cut may start, as shares of the story's characters. */
const EARLY = 0.4;
/** A story is sampled up to this many tokens (BOS and opening included), or the model's window. */
const STORY_TOKENS = 420;
/**
 * Fewest prefix tokens (BOS included) an item may have: 60 % of 128 is 77 compressed tokens, more
 * than the 64-token observation window of SnapKV, PyramidKV and their wrappers, which refuse a
 * shorter context; without it a few short sampled stories would leave those presses out.
 */
export const MIN_PREFIX_TOKENS = 128;
/** Attempts per requested item before the model is declared unable to write such stories. */
const ATTEMPTS_PER_ITEM = 40;

/**
 * A name-recall set the templates did not write: stories the model itself samples (temperature
 * 1, seeded), cut right before a later mention of a name the story introduced early ("named X"
 * or "called X" in its first 40 %, mentioned again after that point, with at least
 * MIN_PREFIX_TOKENS tokens before the mention). The item's prefix stops
 * before the space that precedes the mention, as in {@link nameRecallStories}, so the same
 * protocol scores both sets. Deterministic for a seed on a given backend (sampling reads the
 * logits, so a backend that rounds differently can draw a different story).
 *
 * @example
 * const model = await loadModel();
 * const [item] = sampledRecallStories(model, { count: 1, seed: 42 });
 * item.text.startsWith(item.prefix + ' ' + item.answer); // true
 */
export function sampledRecallStories(model: Model, opts: { count: number; seed?: number }): NameRecallItem[] {
  const tok = model.tokenizer;
  if (!tok) throw new Error(`${model.source}: the model has no tokenizer to sample stories with`);
  const seed = seedFrom(opts.seed ?? 42, 'sampled_recall');
  const rng = new SeededRandom(seed);
  const items: NameRecallItem[] = [];
  const budget = Math.min(STORY_TOKENS, model.config.maxPositionEmbeddings);
  for (let attempt = 0; items.length < opts.count; attempt++) {
    if (attempt >= ATTEMPTS_PER_ITEM * Math.max(opts.count, 1)) {
      throw new Error(`sampled_recall: only ${items.length} of ${opts.count} sampled stories introduce a name ("named X" / "called X") and mention it again after ${MIN_PREFIX_TOKENS} tokens; this model rarely writes such stories`);
    }
    const opening = rng.pick(OPENINGS);
    const prompt = tok.encode(opening, { bos: true });
    const story = generate(model, prompt, { temperature: 1, seed: rng.nextUint32(), maxNewTokens: budget - prompt.length });
    story.cache.dispose();
    const text = (opening + story.text).replace(/\s+$/, '');
    const item = cutBeforeLateMention(text, rng, (prefix) => tok.encode(prefix, { bos: true }).length);
    if (item) items.push({ id: `sampled-${items.length}`, ...item });
  }
  return items;
}

/**
 * The story cut before a mention, after the first 40 %, of a name introduced in the first 40 %,
 * among the mentions whose prefix has at least MIN_PREFIX_TOKENS tokens (`tokens` counts them).
 */
export function cutBeforeLateMention(text: string, rng: SeededRandom, tokens: (prefix: string) => number): { text: string; prefix: string; answer: string } | null {
  const early = text.length * EARLY;
  const cuts: { at: number; name: string }[] = [];
  const names = new Set<string>();
  for (const m of text.matchAll(INTRODUCTION)) {
    if (m.index + m[0].length <= early) names.add(m[1]);
  }
  for (const name of names) {
    // A whole word preceded by a space: "Tim" must not match inside "Timmy".
    for (const m of text.matchAll(new RegExp(` ${name}(?![A-Za-z])`, 'g'))) {
      if (m.index >= early && tokens(text.slice(0, m.index)) >= MIN_PREFIX_TOKENS) cuts.push({ at: m.index, name });
    }
  }
  if (cuts.length === 0) return null;
  const cut = rng.pick(cuts);
  return { text, prefix: text.slice(0, cut.at), answer: cut.name };
}
