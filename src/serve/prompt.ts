import { Template } from '@huggingface/jinja';
import { HfTokenizer } from '../tokenizer/hf.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { ApiError } from './errors.js';

/** A chat message as OpenAI clients send it: content as a string or as text parts. */
export interface ChatMessage {
  role: string;
  content: string | { type: string; text?: string }[] | null;
  name?: string;
}

/** The text of a message (text parts joined); other part types are a 400 naming the message. */
export function messageText(m: ChatMessage, index: number): string {
  if (m.content === null) return '';
  if (typeof m.content === 'string') return m.content;
  return m.content.map((p, j) => {
    if (p.type !== 'text' || typeof p.text !== 'string') throw new ApiError(400, `messages[${index}].content[${j}] is of type "${p.type}"; only text parts are supported`, `messages.${index}.content.${j}.type`);
    return p.text;
  }).join('');
}

/**
 * The prompt ids of a conversation: the model's chat template with the generation prompt when it
 * has one, otherwise BOS and the messages' texts, one per line (llama2.c models have no template).
 */
export function chatPromptIds(tok: Tokenizer, messages: readonly ChatMessage[]): number[] {
  const texts = messages.map(messageText);
  if (tok.chatTemplate === null) return tok.encode(texts.join('\n'), { bos: true });
  let rendered: string;
  try {
    rendered = new Template(tok.chatTemplate).render({
      messages: messages.map((m, i) => ({ role: m.role, content: texts[i] })),
      add_generation_prompt: true,
      enable_thinking: false,
      bos_token: tokenText(tok, tok.bosId),
      eos_token: tokenText(tok, tok.stopIds[0] ?? null),
      tools: null,
      documents: null,
    });
  } catch (e) {
    throw new ApiError(400, `the model's chat template cannot render these messages: ${(e as Error).message.split('\n')[0]}`, 'messages');
  }
  return tok.encode(rendered, { bos: false });
}

/** The literal text of a special token (only HF tokenizers carry templates that print them). */
function tokenText(tok: Tokenizer, id: number | null): string {
  if (id === null || !(tok instanceof HfTokenizer)) return '';
  return tok.lib.id_to_token(id) ?? '';
}
