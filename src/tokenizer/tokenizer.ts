/** What the engine, pipeline and evaluation need from a tokenizer, whatever its format. */
export interface Tokenizer {
  readonly vocabSize: number;
  /** Beginning-of-sequence id, or null when the model has none (Qwen). */
  readonly bosId: number | null;
  /** Ids that end generation (EOS, end-of-turn; for llama2.c models also BOS). */
  readonly stopIds: readonly number[];
  /** Jinja chat template, when the model ships one (tokenizer_config.json). */
  readonly chatTemplate: string | null;
  /** A lower bound on encode(text).length, from the text's length alone (no encoding). */
  minTokens?(text: string): number;
  /** Token ids for `text`; with `bos`, the BOS id first (when the model has one). */
  encode(text: string, opts?: { bos?: boolean }): number[];
  /** Text of a sequence of generated ids (special tokens skipped). */
  decode(ids: readonly number[]): string;
  /**
   * Text of one token `id` that follows `prev` (streaming): the concatenation of
   * decodePiece over a sequence equals decode of that sequence.
   */
  decodePiece(prev: number, id: number): string;
  /** The literal text of a (special) token, for chat templates that print `bos_token`; optional. */
  tokenText?(id: number): string;
}

/** How a wrong argument reads in an error message. */
export function describe(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'number' ? String(v) : typeof v;
}

/**
 * Rejects what is not a list of token ids, in the library's words. Ids past the vocabulary are
 * allowed (they decode to nothing: models may pad their embedding).
 */
export function checkIds(ids: unknown): void {
  if (!Array.isArray(ids) && !(ArrayBuffer.isView(ids) && !(ids instanceof DataView))) {
    throw new TypeError(`tokenizer.decode: ids must be an array of token ids, got ${describe(ids)}`);
  }
  const list = ids as ArrayLike<unknown>;
  for (let i = 0; i < list.length; i++) {
    const id = list[i];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw new RangeError(`tokenizer.decode: ids[${i}] is ${describe(id)}, not a token id (an integer ≥ 0)`);
    }
  }
}

/** Rejects a text that is not a string, in the library's words. */
export function checkText(text: unknown): void {
  if (typeof text !== 'string') throw new TypeError(`tokenizer.encode: text must be a string, got ${describe(text)}`);
}

/** `s` with control characters escaped (\\x00), so a binary file quoted in an error stays one readable line. */
export function printable(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * decode() of the byte-piece tokenizers (llama2.c, GGUF SentencePiece): each piece's bytes, which
 * may depend on the previous id (the dummy-prefix space after BOS), joined and read as UTF-8.
 */
export function decodePieces(ids: readonly number[], pieceBytes: (prev: number, id: number) => Uint8Array): string {
  checkIds(ids);
  const parts: Uint8Array[] = [];
  let prev = -1;
  for (const id of ids) {
    parts.push(pieceBytes(prev, id));
    prev = id;
  }
  return new TextDecoder().decode(Buffer.concat(parts));
}
