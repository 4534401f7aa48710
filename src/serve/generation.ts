import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { GenerateResult } from '../generate/generate.js';
import { ApiError } from './api-error.js';
import type { GenerationQueue, Job } from './queue.js';
import type { GenerationRequest } from './requests.js';
import type { Shape, Usage } from './shapes.js';
import { EventStream } from './sse.js';

export interface GenerationContext {
  queue: GenerationQueue;
  modelId: string;
  eosId: number | null;
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
    },
    signal,
  };
  const trimmers = request.prompts.map(() => (trimLeadingSpace ? leadingSpaceTrimmer() : (text: string) => text));

  if (!request.stream) {
    const results = await context.queue.submit(job);
    const usage = usageOf(request, results);
    const choices = results.map((r, i) => shape.choice(i, trimmers[i](r.text), r, request.returnTokenIds));
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
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}
