import { Template } from '@huggingface/jinja';
import { HfTokenizer } from '../tokenizer/hf.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';

/**
 * The text around a question: `context` goes through the press, `questionSuffix` (and the
 * answer prefix) follows each question. With a chat template the context sits inside the user
 * turn and the suffix closes the turn and opens the assistant's, so the question lands in the
 * same user message without the press ever seeing it.
 */
export interface PromptParts {
  /** Text of the context as it is prefilled (template prefix + context, or the bare context). */
  context: string;
  /** Whether BOS goes in front of the context ids (only without a template, which would hold it). */
  bos: boolean;
  questionSuffix: string;
}

export interface TemplateVariables {
  /** Forwarded to the template (Qwen3 renders an empty think block when false). Default false. */
  enableThinking?: boolean;
  /** Special-token strings templates may print (`{{ bos_token }}`). */
  bosToken?: string;
  eosToken?: string;
}

/**
 * Renders `template` over one user message `context + SEP` with the generation prompt and
 * splits it at SEP (kvpress's pipeline preprocessing): returns the text before and after.
 * SEP is a run of '#' longer than the context, so it cannot occur inside it; when the context
 * itself ends in '#', the rendered run is longer than SEP and its extra '#' belong to the
 * context (kvpress's str.split would hand them to the question side).
 */
export function splitChatTemplate(template: string, context: string, vars: TemplateVariables = {}): { prefix: string; suffix: string } {
  const sep = '#'.repeat(context.length + 10);
  let rendered: string;
  try {
    rendered = new Template(template).render({
      messages: [{ role: 'user', content: context + sep }],
      add_generation_prompt: true,
      enable_thinking: vars.enableThinking ?? false,
      bos_token: vars.bosToken ?? '',
      eos_token: vars.eosToken ?? '',
      tools: null,
      documents: null,
    });
  } catch (e) {
    throw new Error(`cannot render the chat template: ${(e as Error).message.split('\n')[0]}`);
  }
  const at = rendered.indexOf(sep);
  if (at < 0) throw new Error('the chat template does not print the user message, so the context cannot be placed in it');
  let runEnd = at + sep.length;
  while (rendered[runEnd] === '#') runEnd++;
  const suffix = rendered.slice(runEnd);
  if (suffix.includes(sep)) throw new Error('the chat template prints the user message twice, so the context cannot be split from the question');
  return { prefix: rendered.slice(0, runEnd - sep.length), suffix };
}

/**
 * How the pipeline lays out context and questions for `tok`: split around the chat template when
 * the tokenizer has one, otherwise BOS + context and "\n" after the question.
 */
export function promptParts(tok: Tokenizer, context: string, vars: Omit<TemplateVariables, 'bosToken' | 'eosToken'> = {}): PromptParts {
  if (tok.chatTemplate === null) return { context, bos: true, questionSuffix: '\n' };
  const { prefix, suffix } = splitChatTemplate(tok.chatTemplate, context, {
    ...vars,
    bosToken: tokenText(tok, tok.bosId),
    eosToken: tokenText(tok, tok.stopIds[0] ?? null),
  });
  return { context: prefix, bos: false, questionSuffix: suffix };
}

/** The literal text of a special token (tokenizers that carry templates can print them). */
function tokenText(tok: Tokenizer, id: number | null): string {
  if (id === null) return '';
  if (tok.tokenText) return tok.tokenText(id);
  return tok instanceof HfTokenizer ? tok.lib.id_to_token(id) ?? '' : '';
}
