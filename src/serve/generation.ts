import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { GenerateResult } from '../generate/generate.js';
import { ApiError } from './api-error.js';
import { decodeWithOffsets, type EchoedPrompt, type TokenTexts } from './logprobs.js';
import type { GenerationQueue, Job, JobResult } from './queue.js';
import type { GenerationRequest } from './requests.js';
import type { Shape, Usage } from './shapes.js';
import { toJson } from './ordered-json.js';
import { EventStream } from './sse.js';

export interface GenerationContext {
  queue: GenerationQueue;
  modelId: string;
  eosId: number | null;
  /** For echo and logprobs: the prompt's text and each token's text. */
  tokenizer: TokenTexts;
}

/**
 * Run one validated request through the queue and answer it, as one JSON document or as a stream of
 * events. `trimLeadingSpace` drops the reply's leading whitespace (chat: the model writes " Hello"
 * after "Assistant:"), the same way in both modes. Returns the usage for the request log.
 */
export async function answerGeneration(
  request: GenerationRequest, shape: Shape, context: GenerationContext, res: ServerResponse, signal: AbortSignal, trimLeadingSpace = false,
): Promise<Usage> {
  const id = shape.idPrefix + randomUUID().replaceAll('-', '');
  const created = Math.floor(Date.now() / 1000);
  const head = { id, created, model: context.modelId };
  const job: Job = {
    prompts: request.prompts,
    options: {
      maxNewTokens: request.maxTokens, temperature: request.temperature, topK: request.topK, topP: request.topP,
      repetitionPenalty: request.repetitionPenalty, seed: request.seed, stop: request.stop, eosId: context.eosId,
      ...(request.logprobs !== undefined ? { logprobs: request.logprobs } : {}),
    },
    signal,
    ...(request.echo && request.logprobs !== undefined ? { promptLogprobs: request.logprobs } : {}),
  };
  const trimmers = request.prompts.map(() => (trimLeadingSpace ? leadingSpaceTrimmer() : (text: string) => text));

  if (!request.stream) {
    const results = await context.queue.submit(job);
    const usage = usageOf(request, results);
    const choices = results.map((r, i) => finishedChoice(shape, request, context.tokenizer, i, trimmers[i](r.text), r));
    sendJson(res, 200, { ...head, object: shape.object, choices, usage });
    return usage;
  }

  const events = new EventStream(res);
  const chunk = (choice: object) => ({ ...head, object: shape.chunkObject, choices: [choice], ...(request.includeUsage ? { usage: null } : {}) });
  request.prompts.forEach((_, i) => {
    const opening = shape.opening(i);
    if (opening) events.send(chunk(opening));
  });
  job.onText = (row, text) => {
    const shown = trimmers[row](text);
    if (shown) events.send(chunk(shape.piece(row, shown)));
  };
  let results: GenerateResult[];
  try {
    results = await context.queue.submit(job);
  } catch (error) {
    if (signal.aborted) throw error;
    // The status line is gone already: the error travels as an event, as OpenAI's streams do.
    const apiError = error instanceof ApiError ? error : new ApiError(500, `generation failed: ${(error as Error).message}`, 'server_error');
    events.send(apiError.toJSON());
    events.end();
    throw error;
  }
  results.forEach((r, i) => events.send(chunk(shape.closing(i, r, request.returnTokenIds))));
  const usage = usageOf(request, results);
  if (request.includeUsage) events.send({ ...head, object: shape.chunkObject, choices: [], usage });
  events.end();
  return usage;
}

/**
 * A non-streamed choice: with echo, the text starts with the prompt's (decoded from its tokens); with
 * logprobs, the endpoint's logprobs object replaces the null.
 */
function finishedChoice(shape: Shape, request: GenerationRequest, tokenizer: TokenTexts, index: number, text: string, result: JobResult): object {
  const prompt: EchoedPrompt | undefined = request.echo ? { ids: request.prompts[index]!, text: decodeWithOffsets(tokenizer, request.prompts[index]!).text, scores: result.promptLogprobs ?? [] } : undefined;
  const choice = shape.choice(index, prompt ? prompt.text + text : text, result, request.returnTokenIds);
  if (request.logprobs === undefined) return choice;
  return { ...choice, logprobs: shape.logprobs(tokenizer, result, text, prompt) };
}

function usageOf(request: GenerationRequest, results: GenerateResult[]): Usage {
  const prompt = request.prompts.reduce((n, p) => n + p.length, 0);
  const completion = results.reduce((n, r) => n + r.ids.length, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/** Drops whitespace until the first visible text, across streamed pieces. */
function leadingSpaceTrimmer(): (text: string) => string {
  let started = false;
  return (text) => {
    if (started) return text;
    const trimmed = text.trimStart();
    if (trimmed) started = true;
    return trimmed;
  };
}

export function sendJson(res: ServerResponse, status: number, body: object, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const text = toJson(body); // JSON.stringify's text, but logprobs maps keep their best-first order
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}
