/**
 * RULER's two QA tasks: a real question whose supporting documents are hidden among
 * distractor documents from the same file. qa_1 reads SQuAD-format JSON, qa_2 HotpotQA-format
 * JSON; nothing is downloaded, the user supplies the file.
 */
import { readFileSync } from 'node:fs';
import { SeededRandom } from './random.js';
import type { PromptBuilder } from './ruler-synthetic.js';

/** Questions and the pool of documents they draw from. */
export interface QaCorpus {
  docs: string[];
  qas: { query: string; answers: string[]; gold: number[]; related: number[] }[];
}

function readJson(file: string, format: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read ${format} file (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Unique documents sorted, so that indices do not depend on file order quirks. */
function indexDocs(all: readonly string[]): { docs: string[]; index: Map<string, number> } {
  const docs = [...new Set(all)].sort();
  return { docs, index: new Map(docs.map((d, i) => [d, i])) };
}

/**
 * SQuAD v1/v2 JSON (`{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}`): one question
 * per answerable qa; its paragraph is the gold document, the other paragraphs of the same
 * article are the first distractors.
 *
 * @example
 * const corpus = readSquad('dev-v2.0.json'); // corpus.qas[0].answers → ["Normandy", …]
 */
export function readSquad(file: string): QaCorpus {
  const bad = (): Error => new Error(`${file}: not a SQuAD-format file (expected {"data": [{"paragraphs": [{"context", "qas"}]}]})`);
  const root = readJson(file, 'SQuAD');
  if (!isRecord(root) || !Array.isArray(root['data'])) throw bad();
  const articles = root['data'].map((article) => {
    if (!isRecord(article) || !Array.isArray(article['paragraphs'])) throw bad();
    return article['paragraphs'].map((p) => {
      if (!isRecord(p) || typeof p['context'] !== 'string' || !Array.isArray(p['qas'])) throw bad();
      return p as { context: string; qas: unknown[] };
    });
  });
  const { docs, index } = indexDocs(articles.flat().map((p) => p.context));
  const qas: QaCorpus['qas'] = [];
  for (const paragraphs of articles) {
    const articleDocs = paragraphs.map((p) => index.get(p.context)!);
    for (const p of paragraphs) {
      const gold = index.get(p.context)!;
      for (const qa of p.qas) {
        if (!isRecord(qa) || typeof qa['question'] !== 'string' || !Array.isArray(qa['answers'])) throw bad();
        if (qa['is_impossible'] === true) continue;
        const answers = qa['answers'].map((a) => (isRecord(a) && typeof a['text'] === 'string' ? a['text'] : ''));
        if (answers.length === 0 || answers.some((a) => a === '')) throw bad();
        qas.push({ query: qa['question'], answers, gold: [gold], related: articleDocs.filter((d) => d !== gold) });
      }
    }
  }
  if (qas.length === 0) throw new Error(`${file}: no answerable questions`);
  return { docs, qas };
}

/**
 * HotpotQA JSON (`[{"question", "answer", "context": [[title, [sentence, …]], …]}]`): every
 * paragraph listed in a question's context (gold and distractors) is one of its documents,
 * written "title\ntext".
 *
 * @example
 * const corpus = readHotpotQa('hotpot_dev_distractor_v1.json');
 */
export function readHotpotQa(file: string): QaCorpus {
  const bad = (): Error =>
    new Error(`${file}: not a HotpotQA-format file (expected [{"question", "answer", "context": [[title, [sentences]]]}])`);
  const root = readJson(file, 'HotpotQA');
  if (!Array.isArray(root)) throw bad();
  const items = root.map((item) => {
    if (!isRecord(item) || typeof item['question'] !== 'string' || typeof item['answer'] !== 'string') throw bad();
    const ctx = item['context'];
    if (!Array.isArray(ctx)) throw bad();
    const docs = ctx.map((entry) => {
      if (!Array.isArray(entry) || typeof entry[0] !== 'string' || !Array.isArray(entry[1])) throw bad();
      return `${entry[0]}\n${(entry[1] as unknown[]).map(String).join('')}`;
    });
    return { query: item['question'], answer: item['answer'], docs };
  });
  const { docs, index } = indexDocs(items.flatMap((i) => i.docs));
  const qas = items.map((i) => ({
    query: i.query,
    answers: [i.answer],
    gold: i.docs.map((d) => index.get(d)!),
    related: [] as number[],
  }));
  if (qas.length === 0) throw new Error(`${file}: no questions`);
  return { docs, qas };
}

const QA_INSTRUCTION = 'Answer the question based on the given documents. Only give me the answer and do not output any other words.';

/**
 * Question `qaIndex` of the corpus with `units` documents: its own documents, then related
 * ones, then random others, shuffled and numbered "Document i:".
 *
 * @example
 * qaBuilder(readSquad('squad.json'), 0, 1).build(20).context; // "Answer the question … Document 1:\n…"
 */
export function qaBuilder(corpus: QaCorpus, qaIndex: number, layoutSeed: number): PromptBuilder {
  const qa = corpus.qas[qaIndex]!;
  const total = corpus.docs.length;
  const own = new Set([...qa.gold, ...qa.related]);
  return {
    minUnits: qa.gold.length,
    maxUnits: total,
    build: (units) => {
      const rng = new SeededRandom(layoutSeed);
      let chosen: number[];
      if (units >= total) {
        chosen = corpus.docs.map((_, i) => i);
      } else if (units - qa.gold.length > qa.related.length) {
        const others = corpus.docs.map((_, i) => i).filter((i) => !own.has(i));
        chosen = [...qa.gold, ...qa.related, ...rng.sample(others, units - qa.gold.length - qa.related.length)];
      } else {
        chosen = [...qa.gold, ...rng.sample(qa.related, units - qa.gold.length)];
      }
      rng.shuffle(chosen);
      const documents = chosen.map((d, i) => `Document ${i + 1}:\n${corpus.docs[d]}`).join('\n\n');
      return {
        context: `${QA_INSTRUCTION}\n\nThe following are given documents.\n\n${documents}\n\n`,
        question: `${QA_INSTRUCTION}\n\nQuestion: ${qa.query} `,
        answerPrefix: 'Answer:',
        answers: qa.answers,
      };
    },
  };
}
