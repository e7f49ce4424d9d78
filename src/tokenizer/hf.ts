import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfLibTokenizer } from '@huggingface/tokenizers';
import { checkIds, checkText, printable, type Tokenizer } from './tokenizer.js';

export interface HfTokenizerOptions {
  bosId: number | null;
  /** The tokenizer.json path, for error messages. */
  source?: string;
  stopIds: readonly number[];
  chatTemplate: string | null;
}

/** Trailing U+FFFD: bytes of a character that the next token completes. */
const INCOMPLETE_TAIL = /\uFFFD+$/;

/**
 * A Hugging Face `tokenizer.json` tokenizer (through `@huggingface/tokenizers`, pure JS,
 * offline). BOS is added by us, not by the library's post-processor, so `encode` is the same
 * whatever template the file carries.
 */
export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly stopIds: readonly number[];
  readonly chatTemplate: string | null;

  private readonly source: string;

  constructor(readonly lib: HfLibTokenizer, opts: HfTokenizerOptions) {
    this.source = opts.source ?? 'tokenizer.json';
    this.bosId = opts.bosId;
    this.stopIds = opts.stopIds;
    this.chatTemplate = opts.chatTemplate;
    let maxId = -1;
    for (const id of lib.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
  }

  encode(text: string, opts: { bos?: boolean } = {}): number[] {
    checkText(text);
    const ids = text.length > 0 ? this.lib.encode(text, { add_special_tokens: false }).ids : [];
    // An inconsistent file (a merge whose result is missing from the vocabulary) yields ids
    // that are not numbers; they must not reach the model.
    for (const id of ids) {
      if (!Number.isSafeInteger(id) || id < 0) throw new Error(`${this.source}: the tokenizer produced the id ${JSON.stringify(id) ?? 'undefined'} for this text; its tokenizer.json is inconsistent (a merge or token missing from the vocabulary)`);
    }
    if (opts.bos && this.bosId !== null) ids.unshift(this.bosId);
    return ids;
  }

  decode(ids: readonly number[]): string {
    checkIds(ids);
    // Ids past the tokenizer's vocabulary (models pad their embedding) have no text.
    const known = ids.filter((id) => Number.isInteger(id) && id >= 0 && id < this.vocabSize);
    return known.length === 0 ? '' : this.lib.decode(known, { skip_special_tokens: true });
  }

  /**
   * What decode([prev, id]) adds to decode([prev]). A character split over two tokens decodes
   * to U+FFFD at the end of the first, so the piece starts where the two decodings differ (the
   * completed character replaces that U+FFFD) and holds back a trailing U+FFFD for the next
   * token to complete. Exact (streamed text = full decode) unless one character spans three or
   * more tokens, which a one-token context cannot reassemble.
   */
  decodePiece(prev: number, id: number): string {
    checkIds([id]);
    const before = this.decode([prev]);
    const both = this.decode([prev, id]);
    let i = 0;
    while (i < before.length && i < both.length && before[i] === both[i]) i++;
    return both.slice(i).replace(INCOMPLETE_TAIL, '');
  }
}

function readOptionalJson(path: string): Record<string, unknown> | null {
  if (!existsSync(path)) return null;
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: invalid JSON (${printable((e as Error).message)}); replace it with the model's original file`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${path}: not a JSON object`);
  return v as Record<string, unknown>;
}

/** `bos_token` / `eos_token` in tokenizer_config.json: a string or a serialized AddedToken. */
function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

/** `eos_token_id` as a number or a list of numbers. */
function idList(v: unknown): number[] {
  const list = Array.isArray(v) ? v : [v];
  return list.filter((x): x is number => Number.isInteger(x) && x >= 0);
}

/** `chat_template` is a string, or a list of {name, template} with a "default" entry. */
function chatTemplateOf(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const named = v.find((t) => t?.name === 'default') ?? v[0];
    return typeof named?.template === 'string' ? named.template : null;
  }
  return null;
}

/**
 * Loads `dir/tokenizer.json` with its side files: tokenizer_config.json (BOS policy, chat
 * template), config.json and generation_config.json (BOS/EOS ids). Null when the directory has
 * no tokenizer.json.
 */
export function loadHfTokenizer(dir: string): HfTokenizer | null {
  const tokPath = join(dir, 'tokenizer.json');
  if (!existsSync(tokPath)) return null;
  const tokJson = readOptionalJson(tokPath)!;
  const tc = readOptionalJson(join(dir, 'tokenizer_config.json')) ?? {};
  const cfg = readOptionalJson(join(dir, 'config.json')) ?? {};
  const gen = readOptionalJson(join(dir, 'generation_config.json')) ?? {};

  let lib: HfLibTokenizer;
  let templateBos: number | null;
  try {
    // transformers (≥ 4.45) defaults clean_up_tokenization_spaces to false; the library to true.
    lib = new HfLibTokenizer(tokJson, { clean_up_tokenization_spaces: false, ...tc });
    // Does the file's post-processor put a token in front (Llama's "<s> $A")? Qwen's does not.
    const withSpecial = lib.encode('a', { add_special_tokens: true }).ids;
    const plain = lib.encode('a', { add_special_tokens: false }).ids;
    templateBos = withSpecial.length > plain.length && withSpecial[0] !== plain[0] ? withSpecial[0] : null;
    // The library takes whatever the file maps a token to; an id must be a token index.
    for (const [token, id] of lib.get_vocab(true)) {
      if (!Number.isSafeInteger(id) || id < 0) throw new Error(`token ${JSON.stringify(token).slice(0, 40)} has id ${JSON.stringify(id)?.slice(0, 40)}, not an integer ≥ 0`);
    }
  } catch (e) {
    throw new Error(`${tokPath}: unsupported tokenizer (${printable((e as Error).message.replace(/\s+/g, ' '))})`);
  }
  const idOf = (v: unknown): number | null => {
    const s = tokenContent(v);
    return s === null ? null : lib.token_to_id(s) ?? null;
  };
  const addsBos = typeof tc.add_bos_token === 'boolean' ? tc.add_bos_token : templateBos !== null;
  const bosId = addsBos ? templateBos ?? idOf(tc.bos_token) ?? idList(cfg.bos_token_id)[0] ?? null : null;

  const stopIds = [...new Set([...idList(gen.eos_token_id), ...idList(cfg.eos_token_id), ...[idOf(tc.eos_token)].filter((x): x is number => x !== null)])];
  for (const id of [bosId, ...stopIds]) {
    if (id !== null && (!Number.isSafeInteger(id) || id < 0)) throw new Error(`${tokPath}: the BOS/EOS token id ${typeof id === 'number' ? String(id) : JSON.stringify(id) ?? 'undefined'} is not an integer ≥ 0; check bos_token/eos_token in the tokenizer files and config.json`);
  }

  let chatTemplate = chatTemplateOf(tc.chat_template);
  const jinjaPath = join(dir, 'chat_template.jinja');
  if (chatTemplate === null && existsSync(jinjaPath)) chatTemplate = readFileSync(jinjaPath, 'utf8');

  return new HfTokenizer(lib, { bosId, stopIds, chatTemplate, source: tokPath });
}
