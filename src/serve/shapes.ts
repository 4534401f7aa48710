import type { FinishReason, GenerateResult } from '../generate/generate.js';
import { chatLogprobs, completionLogprobs, type EchoedPrompt, type TokenTexts } from './logprobs.js';

/**
 * The JSON shapes of OpenAI's two generation endpoints. /v1/completions returns `text` per choice;
 * /v1/chat/completions returns an assistant `message` (streamed as `delta`s, the first carrying the role).
 */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface Shape {
  idPrefix: string;
  object: string;
  chunkObject: string;
  /** A finished choice of a non-streamed response. */
  choice(index: number, text: string, result: GenerateResult, tokenIds: boolean): object;
  /** Streamed chunks' choices: the opening one (if any), a piece of text, and the last with the finish reason. */
  opening(index: number): object | null;
  piece(index: number, text: string): object;
  closing(index: number, result: GenerateResult, tokenIds: boolean): object;
  /** A finished choice's `logprobs` object (`text`: the choice's generated text; `prompt`: with echo). */
  logprobs(tokenizer: TokenTexts, result: GenerateResult, text: string, prompt?: EchoedPrompt): object;
}

/** `eos` and a stop string are both "stop" to OpenAI clients; running out of max_tokens is "length". */
export const finishReason = (reason: FinishReason): 'stop' | 'length' => (reason === 'length' ? 'length' : 'stop');

const ids = (result: GenerateResult, wanted: boolean) => (wanted ? { token_ids: result.ids } : {});

export const completionShape: Shape = {
  idPrefix: 'cmpl-',
  object: 'text_completion',
  chunkObject: 'text_completion',
  choice: (index, text, result, tokenIds) => ({ index, text, logprobs: null, finish_reason: finishReason(result.finishReason), ...ids(result, tokenIds) }),
  opening: () => null,
  piece: (index, text) => ({ index, text, logprobs: null, finish_reason: null }),
  closing: (index, result, tokenIds) => ({ index, text: '', logprobs: null, finish_reason: finishReason(result.finishReason), ...ids(result, tokenIds) }),
  logprobs: completionLogprobs,
};

export const chatShape: Shape = {
  idPrefix: 'chatcmpl-',
  object: 'chat.completion',
  chunkObject: 'chat.completion.chunk',
  choice: (index, text, result, tokenIds) => ({
    index, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: finishReason(result.finishReason), ...ids(result, tokenIds),
  }),
  opening: (index) => ({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }),
  piece: (index, text) => ({ index, delta: { content: text }, logprobs: null, finish_reason: null }),
  closing: (index, result, tokenIds) => ({ index, delta: {}, logprobs: null, finish_reason: finishReason(result.finishReason), ...ids(result, tokenIds) }),
  logprobs: (tokenizer, result) => chatLogprobs(tokenizer, result),
};
