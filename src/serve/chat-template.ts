/**
 * The chat template. MPT base models (mpt-1b-redpajama-200b, mpt-7b) were trained on plain text and
 * have no chat format, and evaluating a tokenizer_config's Jinja `chat_template` safely would need a
 * template engine, so every model gets this one plain-text layout:
 *
 *     {system message}            ← each system (or developer) message, as is, then a blank line
 *
 *     User: {content}
 *
 *     Assistant: {content}
 *
 *     User: {content}
 *
 *     Assistant:                  ← the model continues here
 *
 * Generation stops at CHAT_STOP (the model starting the user's next turn), and the reply's leading
 * whitespace is dropped (the model writes " Hello" after "Assistant:"). A message's `name` is not shown.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export const CHAT_STOP = '\nUser:';

export function renderChat(messages: readonly ChatMessage[]): string {
  const parts = messages.map((m) => {
    if (m.role === 'system') return `${m.content}\n\n`;
    return `${m.role === 'user' ? 'User' : 'Assistant'}: ${m.content}\n\n`;
  });
  return parts.join('') + 'Assistant:';
}

/**
 * Whether a model folder's tokenizer_config.json carries its own (Jinja) chat_template, which this
 * server does not evaluate: worth telling whoever serves a chat-tuned model such as mpt-7b-chat.
 */
export function hasOwnChatTemplate(modelDir: string): boolean {
  const file = join(modelDir, 'tokenizer_config.json');
  if (!existsSync(file)) return false;
  try {
    return typeof JSON.parse(readFileSync(file, 'utf8')).chat_template === 'string';
  } catch {
    return false; // only a note depends on it; loading the model already read what it needs
  }
}
