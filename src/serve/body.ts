import type { IncomingMessage } from 'node:http';
import { ApiError } from './api-error.js';

/**
 * Read a request body as JSON, refusing more than `limit` bytes (413) before buffering it all: a
 * prompt is text, and an unbounded body is an easy way to exhaust the server's memory.
 * The Content-Type is not checked: `curl -d` sends form-encoded by default and the body is JSON anyway.
 */
export async function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLarge(limit);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw new ApiError(400, 'the request body is empty: send a JSON object', 'invalid_request_error', null, 'invalid_json');
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ApiError(400, `the request body is not valid JSON: ${(error as Error).message}`, 'invalid_request_error', null, 'invalid_json');
  }
}

const tooLarge = (limit: number) =>
  new ApiError(413, `the request body is larger than the server's limit of ${limit} bytes`, 'invalid_request_error', null, 'request_too_large');
