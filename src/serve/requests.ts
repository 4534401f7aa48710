import { ApiError, badField } from './api-error.js';
import { describe, includeUsage, onlyNeutral, optionalBoolean, optionalInteger, optionalNumber, optionalString, stopStrings, type Body } from './fields.js';

/** What request parsing needs to know about the model being served. */
export interface ServedModel {
  /** The name clients pass as `model` and /v1/models lists. */
  id: string;
  maxSeqLen: number;
  vocabSize: number;
  /** max_tokens when a request gives none (still capped by what the context leaves). */
  maxTokensDefault: number;
  /** The most prompts one request may carry (they run as one batch). */
  maxPromptsPerRequest: number;
  encode(text: string): number[];
}

/** A validated request, in the terms of `generate`. */
export interface GenerationRequest {
  prompts: number[][];
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  repetitionPenalty: number;
  seed?: number;
  stop: string[];
  stream: boolean;
  /** stream_options.include_usage: a last chunk with the usage counts. */
  includeUsage: boolean;
  /** Extension (as in vLLM): each choice also carries its generated `token_ids`. */
  returnTokenIds: boolean;
  /** Log-probabilities asked for, with this many alternatives per token (undefined: none). */
  logprobs?: number;
  /** Completions' `echo`: the returned text (and logprobs) start with the prompt's. */
  echo: boolean;
}

/** Fields both endpoints share: sampling, limits, streaming, and the neutral-only OpenAI knobs. */
export const COMMON_FIELDS = [
  'model', 'max_tokens', 'temperature', 'top_p', 'top_k', 'repetition_penalty', 'seed', 'stop', 'n', 'stream',
  'stream_options', 'presence_penalty', 'frequency_penalty', 'logit_bias', 'user', 'return_token_ids',
] as const;

export function checkModel(body: Body, served: ServedModel): void {
  const name = optionalString(body, 'model');
  if (name !== undefined && name !== served.id) {
    throw new ApiError(404, `the model \`${name}\` does not exist: this server serves \`${served.id}\``, 'not_found_error', 'model', 'model_not_found');
  }
}

/** The shared fields of a completion or chat request, for the given prompts. */
export function commonRequest(body: Body, served: ServedModel, prompts: number[][], maxTokensField = 'max_tokens', zeroTokensAllowed = false): GenerationRequest {
  onlyNeutral(body, 'n', (v) => v === 1, 'n other than 1 (several choices per prompt)');
  onlyNeutral(body, 'presence_penalty', (v) => v === 0, 'presence_penalty (use repetition_penalty)');
  onlyNeutral(body, 'frequency_penalty', (v) => v === 0, 'frequency_penalty (use repetition_penalty)');
  onlyNeutral(body, 'logit_bias', (v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0, 'logit_bias');
  optionalString(body, 'user'); // an end-user id for the caller's own tracking: type-checked, otherwise unused
  const stream = optionalBoolean(body, 'stream') ?? false;
  const usage = includeUsage(body);
  if (usage && !stream) throw badField('stream_options', 'stream_options is only allowed when stream is true');
  const topK = optionalInteger(body, 'top_k', { min: -1 }) ?? 0;
  const request: GenerationRequest = {
    prompts,
    maxTokens: 0,
    temperature: optionalNumber(body, 'temperature', { min: 0 }) ?? 1,
    topP: optionalNumber(body, 'top_p', { above: 0, max: 1 }) ?? 1,
    topK: topK === -1 ? 0 : topK, // vLLM spells "off" as -1; generate as 0
    repetitionPenalty: optionalNumber(body, 'repetition_penalty', { above: 0 }) ?? 1,
    seed: optionalInteger(body, 'seed'),
    stop: stopStrings(body),
    stream,
    includeUsage: usage,
    returnTokenIds: optionalBoolean(body, 'return_token_ids') ?? false,
    echo: false,
  };
  const asked = optionalInteger(body, maxTokensField, { min: 0 });
  if (asked === 0 && !zeroTokensAllowed) throw badField(maxTokensField, `${maxTokensField} must be ≥ 1, got 0 (0 is allowed only with echo on /v1/completions, to score the prompt alone)`);
  request.maxTokens = maxTokensFor(prompts, asked, served, maxTokensField);
  return request;
}

/**
 * Prompt and completion must fit the context together (as vLLM checks): an explicit max_tokens that
 * does not fit is an error; the default is shortened to what is left.
 */
function maxTokensFor(prompts: number[][], asked: number | undefined, served: ServedModel, field: string): number {
  const longest = Math.max(...prompts.map((p) => p.length));
  const limit = served.maxSeqLen;
  const which = prompts.length > 1 ? `the longest prompt has ${longest} tokens` : `the prompt has ${longest} tokens`;
  if (asked === 0 && longest <= limit) return 0; // echo only: the prompt is scored, nothing generated
  if (longest >= limit) {
    throw new ApiError(400, `this model's maximum context length is ${limit} tokens, but ${which}, which leaves no room for a completion`, 'invalid_request_error', 'prompt', 'context_length_exceeded');
  }
  if (asked === undefined) return Math.min(served.maxTokensDefault, limit - longest);
  if (longest + asked > limit) {
    throw new ApiError(400, `this model's maximum context length is ${limit} tokens, but you requested ${longest + asked} (${longest} in the prompt, ${asked} for the completion): lower ${field} or shorten the prompt`, 'invalid_request_error', field, 'context_length_exceeded');
  }
  return asked;
}

/** `prompt` of /v1/completions: a string, a list of strings, a list of token ids, or a list of such lists. */
export function completionPrompts(body: Body, served: ServedModel): number[][] {
  const value = body.prompt;
  if (value === undefined || value === null) throw badField('prompt', 'prompt is required', 'missing_required_parameter');
  let prompts: number[][];
  if (typeof value === 'string') prompts = [served.encode(value)];
  else if (Array.isArray(value) && value.length > 0 && value.every((p) => typeof p === 'string')) prompts = value.map((p) => served.encode(p as string));
  else if (Array.isArray(value) && value.length > 0 && value.every((p) => typeof p === 'number')) prompts = [tokenIds(value, 'prompt', served)];
  else if (Array.isArray(value) && value.length > 0 && value.every((p) => Array.isArray(p))) prompts = value.map((p, i) => tokenIds(p as unknown[], `prompt[${i}]`, served));
  else throw badField('prompt', `prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids, got ${describe(value)}`, 'invalid_type');
  if (prompts.length > served.maxPromptsPerRequest) {
    throw badField('prompt', `at most ${served.maxPromptsPerRequest} prompt${served.maxPromptsPerRequest === 1 ? '' : 's'} per request (the server's --max-batch), got ${prompts.length}`);
  }
  prompts.forEach((p, i) => {
    if (p.length === 0) throw badField('prompt', prompts.length > 1 ? `prompt ${i} is empty (no tokens)` : 'the prompt is empty (no tokens)');
  });
  return prompts;
}

function tokenIds(list: unknown[], param: string, served: ServedModel): number[] {
  for (const id of list) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= served.vocabSize) {
      throw badField(param, `${param}: ${describe(id)} is not a token id of this model (integers 0…${served.vocabSize - 1})`);
    }
  }
  return list as number[];
}
