import type { GenerateResult, TextDecoding } from '../generate/generate.js';
import type { TokenLogProbs } from '../util/log-probs.js';
import { OrderedMap } from './ordered-json.js';

/**
 * The `logprobs` objects of OpenAI's two endpoints, built from per-token scores.
 *
 * Legacy completions: `{tokens, token_logprobs, top_logprobs, text_offset}`, one entry per token of
 * the returned text (the prompt's too with `echo`). The first prompt token has no context, so its
 * token_logprob and top_logprobs are null (as OpenAI and vLLM return). top_logprobs[i] maps token
 * text → logprob for the k most likely tokens, best first, plus the actual one (so up to k + 1 entries,
 * as OpenAI documents; written in that order, see OrderedMap); text_offset[i] is where token i's text starts in the returned text (a token that only
 * completes a character begun by the one before starts where that character does; tokens cut off by
 * a stop string start at the text's end).
 *
 * Chat: `{content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}` for the
 * generated tokens, with exactly the k most likely in top_logprobs.
 */

/** The most alternatives per token a request may ask for (vLLM's default --max-logprobs; OpenAI allows 5 or 20). */
export const MAX_LOGPROBS = 20;

/** What building these objects needs of a tokenizer: each token's bytes and streaming decoding. */
export interface TokenTexts extends TextDecoding {
  tokenBytes(id: number): Uint8Array;
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (OrderedMap<number> | null)[];
  text_offset: number[];
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * A token's text: its bytes as UTF-8, or, when they are not valid UTF-8 alone (part of a character
 * split over tokens), OpenAI's `bytes:\xNN…` spelling. Ids past the tokenizer's vocabulary (the
 * model's padding rows) have no bytes: `<|id N|>`.
 */
export function tokenText(tokenizer: TokenTexts, id: number): { text: string; bytes: number[]; whole: boolean } {
  let bytes: Uint8Array;
  try {
    bytes = tokenizer.tokenBytes(id);
  } catch {
    return { text: `<|id ${id}|>`, bytes: [], whole: false };
  }
  try {
    return { text: strictUtf8.decode(bytes), bytes: [...bytes], whole: true };
  } catch {
    return { text: 'bytes:' + [...bytes].map((b) => '\\x' + b.toString(16).padStart(2, '0')).join(''), bytes: [...bytes], whole: false };
  }
}

/**
 * The text of `ids` as streaming decoding writes it, and where each token's text starts in it (from
 * `start`). A token that is whole characters starts where its own text does, after any U+FFFD that
 * its arrival made of bytes left pending before it; a token that is part of a character starts where
 * that character's text goes.
 */
export function decodeWithOffsets(tokenizer: TokenTexts, ids: readonly number[], start = 0): { text: string; offsets: number[] } {
  const decoder = tokenizer.streamDecoder();
  const offsets: number[] = [];
  let text = '';
  for (const id of ids) {
    const emitted = decoder.push(id);
    const own = tokenText(tokenizer, id);
    const whole = own.whole && emitted.endsWith(own.text);
    offsets.push(start + text.length + (whole ? emitted.length - own.text.length : 0));
    text += emitted;
  }
  return { text: text + decoder.flush(), offsets };
}

/** One token's entries: its text, its logprob, and the top map (k best, then the token itself if not among them). */
function entry(tokenizer: TokenTexts, scored: TokenLogProbs) {
  const top = new Map<string, number>();
  for (const alt of scored.top) {
    const key = tokenText(tokenizer, alt.id).text;
    if (!top.has(key)) top.set(key, alt.logProb); // two ids may share a text: the likelier one speaks for it
  }
  const own = tokenText(tokenizer, scored.id).text;
  if (!top.has(own)) top.set(own, scored.logProb);
  return { token: own, logprob: scored.logProb, top: new OrderedMap([...top]) };
}

/** With echo: the prompt's ids, the scores of its tokens after the first, and its decoded text. */
export interface EchoedPrompt {
  ids: readonly number[];
  scores: TokenLogProbs[];
  text: string;
}

/**
 * A completion choice's logprobs. `prompt` (with echo): the prompt's ids, the scores of its tokens
 * after the first, and its decoded text, which the returned text starts with. `text` is the
 * completion's returned text (after any stop string was cut off).
 */
export function completionLogprobs(
  tokenizer: TokenTexts, result: GenerateResult, text: string, prompt?: EchoedPrompt,
): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let start = 0;
  if (prompt) {
    const { offsets } = decodeWithOffsets(tokenizer, prompt.ids);
    prompt.ids.forEach((id, i) => {
      if (i === 0) {
        out.tokens.push(tokenText(tokenizer, id).text);
        out.token_logprobs.push(null);
        out.top_logprobs.push(null);
      } else {
        const e = entry(tokenizer, prompt.scores[i - 1]!);
        out.tokens.push(e.token);
        out.token_logprobs.push(e.logprob);
        out.top_logprobs.push(e.top);
      }
      out.text_offset.push(offsets[i]!);
    });
    start = prompt.text.length;
  }
  const { offsets } = decodeWithOffsets(tokenizer, result.ids, start);
  const end = start + text.length;
  (result.logprobs ?? []).forEach((scored, i) => {
    const e = entry(tokenizer, scored);
    out.tokens.push(e.token);
    out.token_logprobs.push(e.logprob);
    out.top_logprobs.push(e.top);
    out.text_offset.push(Math.min(offsets[i]!, end));
  });
  return out;
}

/** A chat choice's logprobs: the generated tokens, each with exactly its k most likely alternatives. */
export function chatLogprobs(tokenizer: TokenTexts, result: GenerateResult) {
  const described = (id: number, logprob: number) => {
    const { text, bytes } = tokenText(tokenizer, id);
    return { token: text, logprob, bytes };
  };
  return {
    content: (result.logprobs ?? []).map((scored) => ({
      ...described(scored.id, scored.logProb),
      top_logprobs: scored.top.map((alt) => described(alt.id, alt.logProb)),
    })),
  };
}
