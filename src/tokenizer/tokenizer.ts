/** What the engine, pipeline and evaluation need from a tokenizer, whatever its format. */
export interface Tokenizer {
  readonly vocabSize: number;
  /** Beginning-of-sequence id, or null when the model has none (Qwen). */
  readonly bosId: number | null;
  /** Ids that end generation (EOS, end-of-turn; for llama2.c models also BOS). */
  readonly stopIds: readonly number[];
  /** Jinja chat template, when the model ships one (tokenizer_config.json). */
  readonly chatTemplate: string | null;
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
